"""The stack file: discovery, parsing, and one clear error per kind of mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from envkit.config.find import find_root, load
from envkit.errors import ConfigError

GOOD_DOCKERFILE = "FROM scratch\nCOPY . /\n"


def make(root: Path, toml: str, files: dict[str, str] | None = None) -> Path:
    (root / "envkit.toml").write_text(toml)
    for relative, text in (files or {"images/app/Dockerfile": GOOD_DOCKERFILE}).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_minimal_stack_file_gets_defaults(tmp_path: Path) -> None:
    make(tmp_path, '[stack]\nname = "demo"\n[images.app]\n')
    config = load(tmp_path, environ={})
    app = config.images["app"]
    assert config.name == "demo"
    assert config.pull == "missing"
    assert config.state_dir == (tmp_path / ".envkit").resolve()
    assert app.context == (tmp_path / "images/app").resolve()
    assert app.dockerfile == app.context / "Dockerfile"
    assert app.args == {} and app.target is None and app.platform is None
    assert app.parents == () and app.externals == ()


def test_parents_and_externals_resolved_with_global_args(tmp_path: Path) -> None:
    make(
        tmp_path,
        '[stack]\nname = "demo"\n[images.base]\n[images.app]\nargs = { FLAVOUR = "base", N = 3 }\n',
        {
            "images/base/Dockerfile": "FROM alpine:3.20\n",
            "images/app/Dockerfile": "ARG FLAVOUR=nope\nFROM ${FLAVOUR} AS build\n"
            "FROM build\nCOPY --from=busybox:1 /bin/sh /sh\n",
        },
    )
    config = load(tmp_path, environ={})
    assert config.images["app"].parents == ("base",)
    assert config.images["app"].externals == ("busybox:1",)
    assert config.images["app"].args == {"FLAVOUR": "base", "N": "3"}
    assert config.images["base"].externals == ("alpine:3.20",)
    assert config.order() == ["base", "app"]
    assert config.order(["app"]) == ["base", "app"]


def test_dockerfile_outside_context(tmp_path: Path) -> None:
    make(
        tmp_path,
        '[stack]\nname = "demo"\n[images.app]\ncontext = "src"\ndockerfile = "../docker/app.Dockerfile"\n',
        {"src/main.py": "print(1)\n", "docker/app.Dockerfile": GOOD_DOCKERFILE},
    )
    app = load(tmp_path, environ={}).images["app"]
    assert app.dockerfile == (tmp_path / "docker/app.Dockerfile").resolve()
    assert app.dockerfile_text == GOOD_DOCKERFILE


def test_found_upward_and_in_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.envkit.stack]\nname = "py"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep, environ={}) == tmp_path.resolve()
    assert load(environ={"ENVKIT_ROOT": str(tmp_path)}).name == "py"


def test_envkit_root_must_hold_a_stack_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ENVKIT_ROOT"):
        find_root(environ={"ENVKIT_ROOT": str(tmp_path)})


def test_no_stack_file_anywhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no envkit\.toml"):
        find_root(tmp_path, environ={})


def test_state_dir_override(tmp_path: Path) -> None:
    make(tmp_path, '[stack]\nname = "demo"\n')
    config = load(tmp_path, environ={"ENVKIT_STATE_DIR": str(tmp_path / "state")})
    assert config.state_dir == (tmp_path / "state").resolve()


# (stack file, extra files, the key the error must name, words the message must contain)
BAD = [
    ("[stack\nname = 1", None, "", "not valid TOML"),
    ('[stack]\nname = "d"\n[imagez.app]\n', None, "imagez", "unknown key"),
    ('[stack]\nname = "d"\n[images.app]\ncontxt = "x"\n', None, "images.app.contxt", "unknown key"),
    ("[images.app]\n", None, "stack", "missing"),
    ("[stack]\nname = 5\n", None, "stack.name", "not a string"),
    ('[stack]\nname = "My App"\n', None, "stack.name", "not a valid Docker name"),
    ('[stack]\nname = "d"\n[images.Api]\n', None, "images.Api", "not a valid Docker name"),
    ('[stack]\nname = "d"\npull = "sometimes"\n', None, "stack.pull", "not a pull policy"),
    ('[stack]\nname = "d"\n[images.app]\nargs = ["A=1"]\n', None, "images.app.args", "table of strings"),
    (
        '[stack]\nname = "d"\n[images.app]\nargs = { A = [1] }\n',
        None,
        "images.app.args.A",
        "string or number",
    ),
    (
        '[stack]\nname = "d"\n[images.app]\ncontext = "missing"\n',
        None,
        "images.app.context",
        "not a directory",
    ),
    (
        '[stack]\nname = "d"\n[images.app]\n',
        {"images/app/main.py": ""},
        "images.app.dockerfile",
        "no Dockerfile",
    ),
    ('[stack]\nname = "d"\n[images.app]\ntarget = "nope"\n', None, "images.app.target", "no stage 'nope'"),
    (
        '[stack]\nname = "d"\n[images.app]\nplatform = "amd64"\n',
        None,
        "images.app.platform",
        "not a platform",
    ),
    (
        '[stack]\nname = "d"\n[images.a]\n[images.b]\n',
        {"images/a/Dockerfile": "FROM b\n", "images/b/Dockerfile": "FROM a\n"},
        "images.a",
        "cycle: a -> b -> a",
    ),
    (
        '[stack]\nname = "d"\n[images.a]\n',
        {"images/a/Dockerfile": "FROM Not_An-Image!\n"},
        "images.a.dockerfile",
        "neither an image of this stack",
    ),
    (
        '[stack]\nname = "d"\n[images.a]\n',
        {"images/a/Dockerfile": "RUN true\n"},
        "images.a.dockerfile",
        "no FROM",
    ),
    ('services = 3\n[stack]\nname = "d"\n', None, "services", "must be a table"),
]


@pytest.mark.parametrize(("toml", "files", "key", "words"), BAD, ids=[b[3] + "|" + b[2] for b in BAD])
def test_bad_stack_file_gives_one_clear_error(
    tmp_path: Path, toml: str, files: dict[str, str] | None, key: str, words: str
) -> None:
    make(tmp_path, toml, files)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    err = caught.value
    message = str(err)
    assert err.key == key
    assert words in message
    assert str(tmp_path / "envkit.toml") in message  # names the file
    assert "fix: " in message  # and the fix


def test_bad_stack_file_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    make(tmp_path, '[stack]\nname = "d"\n[images.app]\nargs = ["A=1"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "envkit", "build"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ENVKIT_ROOT": str(tmp_path)},
        timeout=60,
    )
    assert proc.returncode == 1
    assert "images.app.args" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


SERVICE = '[stack]\nname = "d"\n[services.s]\nimage = "busybox"\n'
IMAGE = '[stack]\nname = "d"\n[images.app]\n'

# Values the engine would misread, or refuse only at the build: (toml, key, problem, fix).
MISREAD = [
    (
        SERVICE + 'environment = { "A=B" = "x" }\n',
        'services.s.environment."A=B"',
        "cannot hold '=': the engine would give the container A with the value 'B=x'",
        "write the name without '=' (a value may hold one: A = 'B=x')",
    ),
    (
        SERVICE + 'environment = { "=B" = "x" }\n',
        'services.s.environment."=B"',
        "a variable without a name",
        "a value may hold one",
    ),
    (SERVICE + 'environment = { "" = "x" }\n', "services.s.environment", "an empty name", "give it a name"),
    (
        SERVICE + 'environment = { "A\\u0000B" = "x" }\n',
        'services.s.environment."A\\u0000B"',
        "cannot hold a NUL character",
        "remove it from the name",
    ),
    (
        IMAGE + 'platform = "linux/nosuch"\n',
        "images.app.platform",
        "'nosuch' is not an architecture Docker knows (386, amd64,",
        'write platform = "linux/amd64"',
    ),
    (
        IMAGE + 'platform = "nosuch/amd64"\n',
        "images.app.platform",
        "'nosuch' is not an operating system Docker knows (aix,",
        'write platform = "linux/amd64"',
    ),
    (
        IMAGE + 'platform = "linux/arm/v9"\n',
        "images.app.platform",
        "'v9' is not a variant of arm (its variants: v5, v6, v7, v8)",
        'write platform = "linux/arm"',
    ),
    (
        IMAGE + 'platform = "linux/386/v1"\n',
        "images.app.platform",
        "'v1' is not a variant of 386 (it has none)",
        'write platform = "linux/386"',
    ),
    (
        IMAGE + 'platform = "linux/x86_64"\n',
        "images.app.platform",
        "'linux/x86_64' is Docker's other spelling of 'linux/amd64'",
        'write platform = "linux/amd64"',
    ),
    (
        IMAGE + 'platform = "Linux/aarch64/8"\n',
        "images.app.platform",
        "other spelling of 'linux/arm64/v8'",
        'write platform = "linux/arm64/v8"',
    ),
    (
        IMAGE + 'platform = "linux/armhf"\n',
        "images.app.platform",
        "other spelling of 'linux/arm/v7'",
        'write platform = "linux/arm/v7"',
    ),
    (
        IMAGE + 'platform = "linux/amd64/"\n',
        "images.app.platform",
        "os/arch or os/arch/variant",
        "linux/amd64",
    ),
    (
        IMAGE + 'platform = "linux/a/b/c"\n',
        "images.app.platform",
        "os/arch or os/arch/variant",
        "linux/amd64",
    ),
]


@pytest.mark.parametrize(("toml", "key", "problem", "fix"), MISREAD, ids=[m[1] + "|" + m[2] for m in MISREAD])
def test_a_value_the_engine_would_misread_is_refused_at_load(
    tmp_path: Path, toml: str, key: str, problem: str, fix: str
) -> None:
    make(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    err = caught.value
    assert err.key == key
    assert problem in err.problem
    assert fix in err.fix
    assert str(tmp_path / "envkit.toml") in str(err)


ACCEPTED_PLATFORMS = [
    "linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6", "linux/amd64/v3",
    "linux/386", "linux/ppc64le", "linux/s390x", "linux/riscv64", "linux/loong64", "windows/amd64",
]  # fmt: skip


@pytest.mark.parametrize("platform", ACCEPTED_PLATFORMS)
def test_platforms_docker_knows_are_accepted(tmp_path: Path, platform: str) -> None:
    make(tmp_path, IMAGE + f'platform = "{platform}"\n')
    assert load(tmp_path, environ={}).images["app"].platform == platform


def test_an_environment_value_may_hold_equals_signs(tmp_path: Path) -> None:
    make(tmp_path, SERVICE + 'environment = { A = "x=y", "B.c-d" = "=", URL = "p?a=1&b=2" }\n')
    environment = load(tmp_path, environ={}).services["s"].environment
    assert environment == {"A": "x=y", "B.c-d": "=", "URL": "p?a=1&b=2"}


def test_an_unknown_platform_exits_non_zero_before_any_build(tmp_path: Path) -> None:
    make(tmp_path, IMAGE + 'platform = "linux/nosuch"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "envkit", "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ENVKIT_ROOT": str(tmp_path)},
        timeout=60,
    )
    assert proc.returncode == 1
    assert "images.app.platform: 'nosuch' is not an architecture" in proc.stderr
    assert 'fix: write platform = "linux/amd64"' in proc.stderr
    assert "Traceback" not in proc.stderr
