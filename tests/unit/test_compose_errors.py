"""Malformed compose files: each is one clear error from `envkit config` (exit 1, no traceback)
naming the file, the line where it can, the service and the key, and saying the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from envkit.config.find import load
from envkit.errors import ConfigError

BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "ENVKIT_"))}
DOCKERFILE = "FROM busybox:1.36 AS base\nCOPY . /app\n"

# (id, files, what stderr must say: the file with its line, the key, the problem)
CASES: list[tuple[str, dict[str, str], list[str]]] = [
    (
        "yaml-syntax",
        {"compose.yaml": "services:\n  web:\n    image: [redis\n"},
        ["compose.yaml:4", "not valid YAML"],
    ),
    (
        "duplicate-key",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n  web:\n    image: b:1\n"},
        ["compose.yaml:4", "services.web", "given twice"],
    ),
    (
        "misspelt-key",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    enviroment:\n      A: 1\n"},
        ["compose.yaml:4", "services.web.enviroment", "unknown key", "did you mean 'environment'"],
    ),
    (
        "wrong-type",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    ports: 8080\n"},
        ["compose.yaml:4", "services.web.ports", "is not a list"],
    ),
    (
        "bad-condition",
        {
            "compose.yaml": "services:\n  web:\n    image: a:1\n    depends_on:\n      db:\n"
            "        condition: service_ready\n  db:\n    image: b:1\n"
        },
        ["compose.yaml:6", "services.web.depends_on.db.condition", "is not one of", "service_healthy"],
    ),
    (
        "required-variable",
        {"compose.yaml": "services:\n  web:\n    image: 'redis:${TAG:?set TAG to the release}'\n"},
        ["compose.yaml:3", "services.web.image", "TAG is required but not set: set TAG to the release"],
    ),
    (
        "bad-interpolation",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    command: echo ${not valid}\n"},
        ["compose.yaml:4", "services.web.command", "invalid interpolation format ${not valid}", "$$"],
    ),
    (
        "unclosed-interpolation",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    environment:\n      A: ${B\n"},
        ["compose.yaml:5", "services.web.environment.A", "no closing brace"],
    ),
    (
        "unknown-dependency",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    depends_on: [db]\n"},
        ["compose.yaml:4", "services.web.depends_on.db", "'db' is not a service"],
    ),
    (
        "dependency-cycle",
        {
            "compose.yaml": "services:\n  a:\n    image: a:1\n    depends_on: [b]\n"
            "  b:\n    image: a:1\n    depends_on: [a]\n"
        },
        ["compose.yaml:", "services.a.depends_on", "cycle: a -> b -> a"],
    ),
    (
        "no-image-no-build",
        {"compose.yaml": "services:\n  web:\n    command: [serve]\n"},
        ["compose.yaml:2", "services.web", "has neither image nor build"],
    ),
    (
        "missing-context",
        {"compose.yaml": "services:\n  web:\n    build: ./nowhere\n"},
        ["compose.yaml:3", "services.web.build.context", "is not a directory"],
    ),
    (
        "missing-dockerfile",
        {
            "compose.yaml": "services:\n  web:\n    build:\n      context: .\n"
            "      dockerfile: web.Dockerfile\n"
        },
        ["compose.yaml:5", "services.web.build.dockerfile", "no Dockerfile at"],
    ),
    (
        "unknown-target",
        {
            "compose.yaml": "services:\n  web:\n    build:\n      context: app\n      target: prod\n",
            "app/Dockerfile": DOCKERFILE,
        },
        ["compose.yaml:5", "services.web.build.target", "has no stage 'prod' (its stages: base)"],
    ),
    (
        "undeclared-volume",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    volumes:\n      - data:/data\n"},
        ["compose.yaml:5", "services.web.volumes[0]", "'data' is not declared"],
    ),
    (
        "external-volume",
        {
            "compose.yaml": "services:\n  web:\n    image: a:1\n    volumes: [data:/data]\n"
            "volumes:\n  data:\n    external: true\n"
        },
        ["compose.yaml:7", "volumes.data.external", "removed with it"],
    ),
    (
        "secret-file-missing",
        {
            "compose.yaml": "services:\n  web:\n    image: a:1\n    secrets: [token]\n"
            "secrets:\n  token:\n    file: ./token.txt\n"
        },
        ["compose.yaml:7", "secrets.token.file", "token.txt does not exist"],
    ),
    (
        "secret-undeclared",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    secrets: [token]\n"},
        ["compose.yaml:4", "services.web.secrets[0]", "'token' is not declared"],
    ),
    (
        "secret-from-environment",
        {
            "compose.yaml": "services:\n  web:\n    image: a:1\n    secrets: [token]\n"
            "secrets:\n  token:\n    environment: TOKEN\n"
        },
        ["compose.yaml:6", "secrets.token", "only secrets from files"],
    ),
    (
        "extends",
        {"compose.yaml": "services:\n  base:\n    image: a:1\n  web:\n    extends:\n      service: base\n"},
        ["compose.yaml:5", "services.web.extends", "not supported by envkit"],
    ),
    (
        "replicas",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    deploy:\n      replicas: 3\n"},
        ["compose.yaml:5", "services.web.deploy.replicas", "one container per service, not 3"],
    ),
    (
        "network-mode",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    network_mode: host\n"},
        ["compose.yaml:4", "services.web.network_mode", "the stack's own network"],
    ),
    (
        "port-out-of-range",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    ports: ['8080:80800']\n"},
        ["compose.yaml:4", "services.web.ports[0]", "'80800' is not a container port"],
    ),
    (
        "volume-mode",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    volumes: ['./x:/x:rx']\n"},
        ["compose.yaml:4", "services.web.volumes[0]", "'rx' is not a volume mode"],
    ),
    (
        "relative-target",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    volumes: ['./x:data']\n"},
        ["compose.yaml:4", "services.web.volumes[0]", "not an absolute path"],
    ),
    (
        "healthcheck-test",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    healthcheck:\n      test: [curl, x]\n"},
        ["compose.yaml:5", "services.web.healthcheck.test", "must start with CMD, CMD-SHELL or NONE"],
    ),
    (
        "duration",
        {
            "compose.yaml": "services:\n  web:\n    image: a:1\n    healthcheck:\n"
            "      test: [CMD, 'true']\n      interval: 5 seconds\n"
        },
        ["compose.yaml:6", "services.web.healthcheck.interval", "'5 seconds' is not a duration"],
    ),
    (
        "profiled-dependency",
        {
            "compose.yaml": "services:\n  web:\n    image: a:1\n    depends_on: [debug]\n"
            "  debug:\n    image: a:1\n    profiles: [debug]\n"
        },
        [
            "compose.yaml:4",
            "services.web.depends_on.debug",
            "its profiles are not active",
            "COMPOSE_PROFILES",
        ],
    ),
    (
        "image-reference",
        {"compose.yaml": "services:\n  web:\n    image: Redis:Latest\n"},
        ["compose.yaml:3", "services.web.image", "'Redis:Latest' is not a valid image reference"],
    ),
    (
        "service-name",
        {"compose.yaml": "services:\n  Web:\n    image: a:1\n"},
        ["compose.yaml:2", "services.Web", "is not a valid Docker name"],
    ),
    (
        "top-level-list",
        {"compose.yaml": "- services\n- web\n"},
        ["compose.yaml:1", "the top level is a list, not a mapping"],
    ),
    (
        "env-file-missing",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    env_file: web.env\n"},
        ["compose.yaml:4", "services.web.env_file[0]", "web.env does not exist", "required: false"],
    ),
    (
        "build-ssh",
        {
            "compose.yaml": "services:\n  web:\n    build:\n      context: app\n      ssh: [default]\n",
            "app/Dockerfile": DOCKERFILE,
        },
        ["compose.yaml:5", "services.web.build.ssh", "not supported by envkit's builds"],
    ),
    (
        "include",
        {"compose.yaml": "include:\n  - other.yaml\nservices:\n  web:\n    image: a:1\n"},
        ["compose.yaml:1", "include", "COMPOSE_FILE"],
    ),
    (
        "unknown-tag",
        {"compose.yaml": "services:\n  web:\n    image: !secret a:1\n"},
        ["compose.yaml:3", "services.web.image", "the YAML tag !secret means nothing to compose"],
    ),
    (
        "not-a-boolean",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    tty: ${TTY:-maybe}\n"},
        ["compose.yaml:4", "services.web.tty", "'maybe' is not true or false"],
    ),
    (
        "in-the-override-file",
        {
            "compose.yaml": "services:\n  web:\n    image: a:1\n",
            "compose.override.yaml": "services:\n  web:\n    portz: ['80']\n",
        },
        ["compose.override.yaml:3", "services.web.portz", "did you mean 'ports'"],
    ),
    (
        "bad-dotenv",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n", ".env": "A=1\nnot a variable\n"},
        [".env:2", "'not a variable' is not a variable name"],
    ),
    (
        "unsplittable-command",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    command: echo 'unclosed\n"},
        ["compose.yaml:4", "services.web.command", "cannot be split into words"],
    ),
    (
        "project-name",
        {"compose.yaml": "name: My App\nservices:\n  web:\n    image: a:1\n"},
        ["compose.yaml:1", "name", "is not a compose project name"],
    ),
    (
        "unset-variable-in-image",
        {"compose.yaml": "services:\n  web:\n    image: busybox:${TAG}\n"},
        [
            "compose.yaml:3",
            "services.web.image: 'busybox:' is not a valid image reference "
            "(the variable TAG is not set: an empty string is used, as compose does)",
            "fix: set TAG in the environment or in the .env file beside the compose file, or write",
        ],
    ),
    (
        "unset-variable-is-the-image",
        {"compose.yaml": "services:\n  web:\n    image: ${IMAGE}\n"},
        ["compose.yaml:3", "services.web.image: has neither image nor build (the variable IMAGE is not set"],
    ),
    (
        "unset-variable-in-a-boolean",
        {"compose.yaml": "services:\n  web:\n    image: a:1\n    tty: ${TTY}\n"},
        [
            "compose.yaml:4",
            "services.web.tty: '' is not true or false (the variable TTY is not set",
            "set TTY",
        ],
    ),
    (
        "unset-variables-in-a-duration",
        {
            "compose.yaml": "services:\n  web:\n    image: a:1\n    healthcheck:\n"
            "      test: [CMD, 'true']\n      interval: ${EVERY}s${UNIT}\n"
        },
        [
            "compose.yaml:6",
            "services.web.healthcheck.interval: 's' is not a duration "
            "(the variables EVERY and UNIT are not set",
            "set EVERY and UNIT in the environment",
        ],
    ),
    (
        "unset-variable-in-a-build-tag",
        {
            "compose.yaml": "services:\n  web:\n    build:\n      context: .\n      tags: ['web:${V}']\n",
            "Dockerfile": DOCKERFILE,
        },
        ["compose.yaml:5", "services.web.build.tags[0]: 'web:' is not a valid", "the variable V is not set"],
    ),
    (
        "alias-bomb",
        {
            "compose.yaml": "x-a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"x-{n}: &{n} [{', '.join(['*' + p] * 10)}]\n"
                for p, n in zip("abcdef", "bcdefg", strict=True)
            )
            + "services: {}\n"
        },
        ["compose.yaml:", "expands to more than"],
    ),
]


@pytest.mark.parametrize(("files", "said"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_malformed_compose_file_is_one_clear_error(
    tmp_path: Path, files: dict[str, str], said: list[str]
) -> None:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "envkit", "config", "--json"],
        cwd=tmp_path,
        env=BASE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"envkit: error: {tmp_path}"), proc.stderr  # the file, by its path
    assert "\n  fix: " in proc.stderr, proc.stderr
    missing = [s for s in said if s not in proc.stderr]
    assert missing == [], proc.stderr


def test_there_are_at_least_twenty_of_them() -> None:
    assert len(CASES) >= 20


def load_error(tmp_path: Path, files: dict[str, str], environ: dict[str, str]) -> ConfigError:
    for relative, text in files.items():
        (tmp_path / relative).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ=environ)
    return caught.value


def test_the_unset_note_names_only_the_variables_of_the_value_at_fault(tmp_path: Path) -> None:
    compose = "services:\n  web:\n    image: 'Bad:${TAG:-x}'\n    environment:\n      A: ${NOPE}\n"
    err = load_error(tmp_path, {"compose.yaml": compose}, {})
    assert err.key == "services.web.image"
    assert "not set" not in err.problem and "NOPE" not in err.fix


def test_the_unset_note_follows_the_file_that_set_the_value(tmp_path: Path) -> None:
    base = "services:\n  web:\n    image: busybox:${TAG}\n"
    # the override's value replaces the one with the unset variable: no note
    err = load_error(
        tmp_path, {"compose.yaml": base, "compose.override.yaml": "services:\n  web:\n    image: Bad\n"}, {}
    )
    assert (err.file.name, err.key) == ("compose.override.yaml", "services.web.image")
    assert "not set" not in err.problem
    # the override's own unset variable is named, at the override's line
    (tmp_path / "compose.override.yaml").write_text("services:\n  web:\n    image: 'busybox:${OTHER}'\n")
    err = load_error(tmp_path, {}, {"TAG": "1"})
    assert (err.file.name, err.line, err.key) == ("compose.override.yaml", 3, "services.web.image")
    assert "the variable OTHER is not set" in err.problem and "TAG" not in err.problem
