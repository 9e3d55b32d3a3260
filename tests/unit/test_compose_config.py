"""Compose files as stack definitions: each project of tests/compose_cases.py must resolve to
the stack written down for it, through `envkit config --json` (the CLI, in a subprocess) and
through the loader; and the things around the files (finding them, naming the stack,
envkit.toml naming compose files, the human-readable form)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from compose_cases import CASES, Case

from envkit.config import show
from envkit.config.find import find_root, load
from envkit.errors import ConfigError

BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "ENVKIT_"))}


def envkit(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "envkit", *args],
        cwd=cwd,
        env={**BASE_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def config_json(cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = envkit(cwd, "config", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def compared(data: dict[str, Any], case: Case, root: Path) -> None:
    expected = case.expected(root)
    for name, service in expected["services"].items():
        assert data["services"].get(name) == {"image": service["image"], **service}, name
    assert set(data["services"]) == set(expected["services"])
    for name, image in expected["images"].items():
        assert data["images"].get(name) == image, name
    assert set(data["images"]) == set(expected["images"])
    assert data["stack"] == expected["stack"]
    assert data["volumes"] == expected["volumes"]
    assert data["notes"] == expected["notes"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_envkit_config_json_says_what_compose_means(case: Case, tmp_path: Path) -> None:
    root = tmp_path / case.name
    case.write(root)
    data = config_json(root, case.env)
    compared(data, case, root.resolve())
    assert data["root"] == str(root.resolve())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_loader_gives_the_same_stack(case: Case, tmp_path: Path) -> None:
    root = tmp_path / case.name
    case.write(root)
    config = load(root, environ=case.env)
    compared(show.to_json(config), case, root.resolve())
    assert config.state_dir == (root / ".envkit").resolve()
    assert config.file == config.files[0]


def test_the_subset_is_covered() -> None:
    """Every row of issue 10's compose subset appears in some case's files."""
    text = "\n".join(t for c in CASES for t in c.files.values())
    rows = [
        "image:", "depends_on: [", "build:", "context: ..", "dockerfile:", "args:", "target:",
        "build: ../web", "- data:/data", '"8080:8000"'[:0] + "8080:80", "127.0.0.1:8443", "- 9000",
        "target: 7000", "restart:", "./init:/docker-entrypoint-initdb.d:ro", ":ro,z",
        "environment:\n      - ", "environment:\n      RETRIES", "- PASSED_THROUGH", "RETRIES: 3",
        "condition: service_healthy", "service_completed_successfully", "restart: true",
        "healthcheck:", '["CMD",', '["CMD-SHELL",', "test: redis-cli ping", "interval:", "retries:",
        "timeout:", "start_period:", "command: sh -c", "command: [", "$$", "env_file: other.env",
        "env_file:\n      - app.env", "required: false", "<<: *base", "x-base:", "${DB_HOST}",
        "${UNSET_VAR:-", "${EMPTY_VAR-", "$DB_HOST", "networks:", "secrets:", "user:", "expose:",
        "profiles:", "tmpfs:", "type: bind", "type: tmpfs", "labels:", "links:", "stdin_open:",
        "tty:", "ulimits:", "ipc:", "stop_signal:", "attach:", "develop:", "container_name:",
        "pull_policy:", "!reset", "!override", "configs:", "entrypoint:",
    ]  # fmt: skip
    assert [r for r in rows if r not in text] == []


# --- finding the stack -------------------------------------------------------------------------


def test_a_folder_with_a_compose_file_and_no_envkit_toml_is_a_stack_root(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text("services:\n  a:\n    image: redis:7\n")
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_root(deep, environ={}) == tmp_path.resolve()
    config = load(environ={"ENVKIT_ROOT": str(tmp_path)})
    assert config.file == tmp_path / "docker-compose.yml"
    assert list(config.services) == ["a"]


def test_compose_s_order_of_names_and_the_override_on_top(tmp_path: Path) -> None:
    for name in ("docker-compose.yaml", "docker-compose.yml", "compose.yml", "compose.yaml"):
        (tmp_path / name).write_text(f"services:\n  a:\n    image: redis:7\n    labels: {{from: {name}}}\n")
    (tmp_path / "docker-compose.override.yml").write_text("services:\n  a:\n    labels: {over: docker}\n")
    (tmp_path / "compose.override.yaml").write_text("services:\n  a:\n    labels: {over: yaml}\n")
    config = load(tmp_path, environ={})
    assert [f.name for f in config.files] == ["compose.yaml", "compose.override.yaml"]
    assert config.services["a"].labels == {"from": "compose.yaml", "over": "yaml"}
    (tmp_path / "compose.yaml").unlink()
    (tmp_path / "compose.override.yaml").unlink()
    config = load(tmp_path, environ={})
    assert [f.name for f in config.files] == ["compose.yml", "docker-compose.override.yml"]


def test_compose_file_from_the_environment_or_the_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: redis:7\n")
    (tmp_path / "ci.yaml").write_text("services:\n  b:\n    image: redis:7\n")
    (tmp_path / "more.yaml").write_text("services:\n  c:\n    image: redis:7\n")
    assert list(load(tmp_path, environ={"COMPOSE_FILE": "ci.yaml"}).services) == ["b"]
    both = load(tmp_path, environ={"COMPOSE_FILE": f"ci.yaml{os.pathsep}more.yaml"})
    assert list(both.services) == ["b", "c"]
    separated = {"COMPOSE_FILE": "ci.yaml,more.yaml", "COMPOSE_PATH_SEPARATOR": ","}
    assert list(load(tmp_path, environ=separated).services) == ["b", "c"]
    (tmp_path / ".env").write_text("COMPOSE_FILE=more.yaml\nCOMPOSE_PROFILES=x\n")
    assert list(load(tmp_path, environ={}).services) == ["c"]
    assert list(load(tmp_path, environ={"COMPOSE_FILE": "ci.yaml"}).services) == ["b"]  # the process wins


def test_envkit_toml_wins_over_compose_files_in_one_folder(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: redis:7\n")
    (tmp_path / "envkit.toml").write_text('[stack]\nname = "t"\n[services.b]\nimage = "redis:7"\n')
    assert list(load(tmp_path, environ={}).services) == ["b"]


def test_envkit_toml_can_name_compose_files_and_keep_its_stack_settings(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "name: ignored\nservices:\n  app:\n    build: app\n    depends_on: [db]\n"
        "  db:\n    image: postgres:16\n"
    )
    (tmp_path / "compose.test.yaml").write_text("services:\n  db:\n    environment: {POSTGRES_PASSWORD: t}\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM base\nCOPY . /app\n")
    (tmp_path / "images" / "base").mkdir(parents=True)
    (tmp_path / "images" / "base" / "Dockerfile").write_text("FROM busybox:1.36\n")
    (tmp_path / "envkit.toml").write_text(
        '[stack]\nname = "mine"\npull = "never"\ncompose = ["compose.yaml", "compose.test.yaml"]\n'
        "[images.base]\n"
    )
    config = load(tmp_path, environ={})
    assert config.name == "mine" and config.pull == "never"
    assert config.file == tmp_path / "envkit.toml"
    assert config.files == (
        tmp_path / "envkit.toml",
        tmp_path / "compose.yaml",
        tmp_path / "compose.test.yaml",
    )
    assert config.images["app"].parents == ("base",)  # a compose image builds FROM an envkit.toml image
    assert config.images["base"].externals == ("busybox:1.36",)
    assert config.services["db"].environment == {"POSTGRES_PASSWORD": "t"}
    assert config.order() == ["base", "app"]


@pytest.mark.parametrize(
    ("compose", "problem"),
    [
        ("compose = 3", "must be a compose file's path"),
        ("compose = []", "must be a compose file's path"),
        ('compose = ["missing.yaml"]', "missing.yaml: does not exist"),
    ],
)
def test_envkit_toml_s_compose_key_is_checked(tmp_path: Path, compose: str, problem: str) -> None:
    (tmp_path / "envkit.toml").write_text(f'[stack]\nname = "mine"\n{compose}\n')
    with pytest.raises(ConfigError, match=problem):
        load(tmp_path, environ={})


@pytest.mark.parametrize(
    ("folder", "env", "given", "expected"),
    [
        ("My App", {}, None, "myapp"),
        ("__Shop.Front-End__", {}, None, "shopfront-end"),
        ("x", {"COMPOSE_PROJECT_NAME": "from_env"}, None, "from_env"),
        ("x", {"COMPOSE_PROJECT_NAME": "from_env"}, "from-file", "from-file"),
        ("x", {}, "a__b--c", "a_b-c"),
    ],
)
def test_the_stack_is_named_as_compose_names_a_project(
    tmp_path: Path, folder: str, env: dict[str, str], given: str | None, expected: str
) -> None:
    root = tmp_path / folder
    root.mkdir()
    name = f"name: {given}\n" if given else ""
    (root / "compose.yaml").write_text(f"{name}services:\n  a:\n    image: redis:7\n")
    assert load(root, environ=env).name == expected


def test_an_invalid_project_name_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: redis:7\n")
    with pytest.raises(ConfigError, match="COMPOSE_PROJECT_NAME"):
        load(tmp_path, environ={"COMPOSE_PROJECT_NAME": "Not Valid"})
    nameless = tmp_path / "___"
    nameless.mkdir()
    (nameless / "compose.yaml").write_text("services:\n  a:\n    image: redis:7\n")
    with pytest.raises(ConfigError, match="no stack name"):
        load(nameless, environ={})


def test_the_text_form_is_readable_and_needs_no_daemon(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == "anchors")
    case.write(tmp_path / "anchors")
    proc = envkit(tmp_path / "anchors", "config", env={**case.env, "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert proc.returncode == 0, proc.stderr
    assert "stack: anchors" in proc.stdout
    assert 'PORT: "0123"' in proc.stdout and 'SIXTY: "22:22"' in proc.stdout
    assert "notes:" in proc.stdout


def test_envkit_config_works_for_envkit_toml_stacks(tmp_path: Path) -> None:
    (tmp_path / "envkit.toml").write_text(
        '[stack]\nname = "t"\n[images.app]\n[services.app]\nimage = "app"\nports = [8000]\n'
        'healthcheck = { http = "/health", port = 8000 }\n'
    )
    (tmp_path / "images" / "app").mkdir(parents=True)
    (tmp_path / "images" / "app" / "Dockerfile").write_text("FROM busybox:1.36\n")
    data = config_json(tmp_path)
    assert data["services"]["app"]["healthcheck"] == {"kind": "http", "path": "/health", "port": 8000}
    assert data["services"]["app"]["built"] is True
    assert data["files"] == [str((tmp_path / "envkit.toml").resolve())]
    assert data["notes"] == []


def test_loading_a_toml_stack_imports_no_compose_library(tmp_path: Path) -> None:
    (tmp_path / "envkit.toml").write_text('[stack]\nname = "t"\n')
    code = (
        "import sys; from envkit.config.find import load; load(); "
        "print([m for m in ('ruamel', 'ruamel.yaml', 'jsonschema') if m in sys.modules])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=BASE_ENV, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "[]", proc.stderr


def test_the_demo_s_compose_twin_is_the_demo_stack() -> None:
    """examples/compose (compose.yaml, and an envkit.toml that adds the recipe base) and the
    repository's envkit.toml describe one stack: the same images (so the same keys: the twin
    builds nothing), the same services, ports, environment and start order; only the form of
    the checks differs (compose has command checks only, where envkit.toml probes HTTP from the
    host). tests/e2e reads auth's settings from envkit.toml, so they must be the twin's too."""
    root = Path(__file__).resolve().parents[2]
    folder = root / "examples" / "compose"
    plain = load(root, BASE_ENV)
    twin = load(folder, BASE_ENV)
    assert twin.files == (folder / "envkit.toml", folder / "compose.yaml")
    assert twin.name == plain.name and twin.state_dir == folder / ".envkit"
    assert dict(twin.images) == dict(plain.images)
    assert set(twin.services) == set(plain.services)
    for name, service in plain.services.items():
        other = twin.services[name]
        assert other.image == service.image and other.ports == service.ports, name
        assert dict(other.environment) == dict(service.environment), name
        assert other.depends_on == service.depends_on, name
        assert all(other.condition(d) == service.condition(d) for d in service.depends_on), name
        assert other.start_timeout == service.start_timeout, name
        if service.healthcheck.kind == "http":
            assert other.healthcheck.kind == "cmd"
            assert f"http://127.0.0.1:{service.healthcheck.port}{service.healthcheck.path}" in " ".join(
                other.healthcheck.cmd
            ), name
        else:
            assert other.healthcheck == service.healthcheck, name
    assert twin.notes == ()
