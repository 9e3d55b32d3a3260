"""Images made from a Debian recipe, against the real daemon, with a fake ``mmdebstrap``.

A real Debian rootfs takes half a minute and the network; the fake on PATH
writes the busybox rootfs the other tests import instead, and records each
call (its arguments and SOURCE_DATE_EPOCH), so the tests see exactly what
envkit asked mmdebstrap for and how often. Everything else is real: the
``docker import`` with the recipe's ENV and CMD, the image built FROM it, the
keys, the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Project, busybox_rootfs_tar
from docker.errors import ImageNotFound

from envkit.config.find import load
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.images import recipe
from envkit.images.facts import FactsCache
from envkit.progress import Silent

pytestmark = pytest.mark.docker

RECIPE = """\
[debian]
suite = "bookworm"
snapshot = "20240101T000000Z"
sources = ["deb http://snapshot.debian.org/archive/debian/{snapshot} bookworm main"]
exclude_paths = ["/usr/share/doc/*"]

[packages]
hello = "2.10-3"
ca-certificates = "*"

[image]
env = { PATH = "/bin", GREETING = "hello world" }
cmd = ["/bin/sh", "-c", "echo $GREETING"]
workdir = "/srv"
"""

FAKE = """\
#!{python}
# A stand-in for mmdebstrap: records its call, writes a prepared rootfs tar to TARGET.
import json, os, shutil, sys
with open({calls!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "epoch": os.environ.get("SOURCE_DATE_EPOCH")}}) + "\\n")
suite, target = [a for a in sys.argv[1:] if not a.startswith("--")][:2]
print("I: fake mmdebstrap: writing", suite, "to", target, flush=True)
shutil.copyfile({rootfs!r}, target)
"""


class FakeMmdebstrap:
    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.calls_file = directory / "calls.jsonl"
        rootfs = directory / "rootfs.tar"
        rootfs.write_bytes(busybox_rootfs_tar())
        self.bin = directory / "bin"
        self.bin.mkdir()
        script = self.bin / "mmdebstrap"
        script.write_text(FAKE.format(python=sys.executable, calls=str(self.calls_file), rootfs=str(rootfs)))
        script.chmod(0o755)

    def calls(self) -> list[dict[str, Any]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMmdebstrap:
    """The fake mmdebstrap, first on PATH (for this process and the CLI it runs)."""
    the_fake = FakeMmdebstrap(tmp_path / "fake-mmdebstrap")
    monkeypatch.setenv("PATH", f"{the_fake.bin}{os.pathsep}{os.environ['PATH']}")
    return the_fake


@pytest.fixture
def gone_after_teardown(docker_client: docker.APIClient) -> Iterator[list[str]]:
    """Image IDs the test appends must be gone once the ``project`` fixture has cleaned up.

    Request it before ``project``: fixtures are torn down in reverse order, so this
    check runs after the project's cleanup (which removes only images with its label).
    """
    ids: list[str] = []
    yield ids
    for image_id in ids:
        with pytest.raises(ImageNotFound):
            docker_client.inspect_image(image_id)


def write_project(project: Project, recipe_text: str = RECIPE) -> None:
    project.write(
        "envkit.toml",
        f'[stack]\nname = "{project.stack}"\n\n[images.base]\nrecipe = "recipe.toml"\n\n[images.app]\n',
    )
    project.write("images/base/recipe.toml", recipe_text)
    project.write(
        "images/app/Dockerfile",
        'FROM base\nCOPY . /app/\nRUN ["/bin/busybox", "sh", "-c", "echo \\"$GREETING\\" > /app/greeting"]\n',
    )
    project.write("images/app/hello.txt", "hi\n")


def build_json(project: Project, *args: str) -> dict[str, dict[str, Any]]:
    proc = project.cli("build", "--json", *args, check=True)
    return {r["image"]: r for r in json.loads(proc.stdout)}


def config_of(client: docker.APIClient, tag: str) -> dict[str, Any]:
    found: dict[str, Any] = client.inspect_image(tag)
    return found


def test_recipe_image_is_imported_cached_and_rebuilt_when_the_recipe_changes(
    gone_after_teardown: list[str], project: Project, fake: FakeMmdebstrap, docker_client: docker.APIClient
) -> None:
    write_project(project)

    # cold: base comes from mmdebstrap + docker import, app is built FROM it
    first = build_json(project)
    assert {n: r["status"] for n, r in first.items()} == {"base": "built", "app": "built"}
    [call] = fake.calls()
    argv = call["argv"]
    assert "--include=hello=2.10-3,ca-certificates" in argv
    assert "--variant=minbase" in argv and "--format=tar" in argv
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    positional = [a for a in argv if not a.startswith("--")]
    assert positional[0] == "bookworm"
    assert positional[2:] == ["deb http://snapshot.debian.org/archive/debian/20240101T000000Z bookworm main"]
    assert call["epoch"] == "1704067200"

    base = config_of(docker_client, first["base"]["tag"])
    app = config_of(docker_client, first["app"]["tag"])
    gone_after_teardown += [base["Id"], app["Id"]]
    assert first["base"]["tag"].startswith(f"{project.stack}/base:")
    assert "PATH=/bin" in base["Config"]["Env"]
    assert "GREETING=hello world" in base["Config"]["Env"]
    assert base["Config"]["Cmd"] == ["/bin/sh", "-c", "echo $GREETING"]
    assert base["Config"]["WorkingDir"] == "/srv"
    found = base["Config"]["Labels"]
    assert found[labels.PROJECT] == project.stack
    assert found[labels.IMAGE] == "base"
    assert found[labels.KEY] == first["base"]["key"]
    # app is built on base: its layers start with base's, and it inherits the recipe's config
    assert app["RootFS"]["Layers"][: len(base["RootFS"]["Layers"])] == base["RootFS"]["Layers"]
    assert len(app["RootFS"]["Layers"]) > len(base["RootFS"]["Layers"])
    assert "GREETING=hello world" in app["Config"]["Env"]
    assert app["Config"]["Labels"][labels.PROJECT] == project.stack
    assert app["Config"]["Labels"][labels.KEY] == first["app"]["key"]

    # warm: nothing is built, mmdebstrap is not run again
    second = build_json(project)
    assert {n: r["status"] for n, r in second.items()} == {"base": "cached", "app": "cached"}
    assert {n: r["key"] for n, r in second.items()} == {n: r["key"] for n, r in first.items()}
    assert len(fake.calls()) == 1

    # a new pin: base is made again, and app on top of it
    project.write("images/base/recipe.toml", RECIPE.replace('hello = "2.10-3"', 'hello = "2.10-4"'))
    proc = project.cli("build", "--explain", check=True)
    out = proc.stdout
    assert "the recipe changed" in out
    assert "parent base changed" in out
    assert "2 images: 2 built, 0 cached" in out
    assert len(fake.calls()) == 2
    assert "--include=hello=2.10-4,ca-certificates" in fake.calls()[1]["argv"]
    third = build_json(project)
    assert {n: r["status"] for n, r in third.items()} == {"base": "cached", "app": "cached"}
    for name in ("base", "app"):
        assert third[name]["key"] != first[name]["key"]
        gone_after_teardown.append(config_of(docker_client, third[name]["tag"])["Id"])
    assert len(fake.calls()) == 2

    # everything made carries the stack's label: the project's cleanup finds all of it
    made = {i["Id"] for i in docker_client.images(filters={"label": f"{labels.PROJECT}={project.stack}"})}
    assert set(gone_after_teardown) <= made


def test_recipe_build_failure_leaves_no_image(
    project: Project, fake: FakeMmdebstrap, docker_client: docker.APIClient
) -> None:
    write_project(project, RECIPE.replace('hello = "2.10-3"', 'hello = "0.0-gone"'))
    (fake.bin / "mmdebstrap").write_text(
        "#!/bin/sh\necho \"E: Version '0.0-gone' for 'hello' was not found\"\nexit 100\n"
    )
    proc = project.cli("build")
    assert proc.returncode == 1
    assert "hello 0.0-gone" in proc.stderr and "re-locked" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert docker_client.images(filters={"label": f"{labels.PROJECT}={project.stack}"}) == []


# (env value, id): each must reach the image's environment exactly as written in the recipe
ENV_VALUES = [
    ('say "hi" \\ there', "quotes-backslash-spaces"),
    ("café", "non-ascii"),
    ("costs $HOME", "dollar"),
]


@pytest.mark.parametrize("value", [v for v, _ in ENV_VALUES], ids=[i for _, i in ENV_VALUES])
def test_recipe_env_value_reaches_the_image_as_written(
    project: Project, fake: FakeMmdebstrap, docker_client: docker.APIClient, value: str, tmp_path: Path
) -> None:
    """recipe.build in-process (loaded with the recipe's config), then the image's Env."""
    toml_value = json.dumps(value)  # a TOML basic string is written like a JSON one
    write_project(project, RECIPE.replace('GREETING = "hello world"', f"GREETING = {toml_value}"))
    spec = load(project.root, environ={}).images["base"]
    assert spec.recipe is not None and spec.recipe.env["GREETING"] == value
    image_labels = {labels.PROJECT: project.stack, labels.IMAGE: "base"}
    daemon = Daemon()
    started: list[subprocess.Popen[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = real_popen(*args, **kwargs)
        started.append(proc)
        return proc

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(recipe.subprocess, "Popen", recording_popen)
            image_id = recipe.build(
                daemon, "base", spec.recipe, image_labels, Silent(), facts=FactsCache(tmp_path)
            )
    finally:
        for proc in started:  # recipe.build leaves its pipe open (see tests/unit/test_recipe.py)
            if proc.stdout is not None:
                proc.stdout.close()
        daemon.close()
    found = docker_client.inspect_image(image_id)
    assert found["Config"]["Labels"][labels.PROJECT] == project.stack
    assert f"GREETING={value}" in found["Config"]["Env"]
