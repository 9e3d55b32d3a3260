"""What must hold on every engine of the matrix (tests/engines/run.py runs this module inside
each; here it runs against this machine's engine): envkit knows the engine, an image it writes
loads and is named by what the engine reports, a parent's facts are read from the engine's own
``docker save``, a refused load leaves nothing, and an external base's identity is its content."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Project, import_busybox

import envkit.images.build
from envkit.config.find import load
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import BuildError
from envkit.images import archive

pytestmark = pytest.mark.docker

# What tests/engines/run.py says the engine is (ENVKIT_TEST_ENGINE); unset: this machine's own.
EXPECTED = {
    "classic": ("docker", "classic"),
    "containerd": ("docker", "containerd"),
    "podman": ("podman", "containers-storage"),
}


def stack_images(client: docker.APIClient, stack: str) -> list[str]:
    """Every image of ``stack``, tagged or not (intermediate ones too)."""
    found = client.images(all=True, filters={"label": f"{labels.PROJECT}={stack}"})
    return sorted(str(i["Id"]) for i in found)


def test_envkit_knows_the_engine_and_its_image_store() -> None:
    daemon = Daemon()
    try:
        engine = daemon.engine
    finally:
        daemon.close()
    matrix = os.environ.get("ENVKIT_TEST_ENGINE")
    if matrix is None:
        assert engine.product in ("docker", "podman")
        assert engine.store in ("classic", "containerd", "containers-storage")
    else:
        assert (engine.product, engine.store) == EXPECTED[matrix]
    assert engine.version != "?" and engine.api_version != "?"
    assert engine.store.split("-")[0] in engine.describe() or "image store" in engine.describe()


def test_an_assembled_image_on_an_imported_base_reads_the_base_from_the_engine(
    project: Project, docker_client: docker.APIClient, tmp_path: Path
) -> None:
    """No facts cached: the base's files and config come from this engine's ``docker save``
    (whatever its layout), the image is assembled, loaded under the ID the engine reports, and
    its files are there."""
    base = import_busybox(
        docker_client, f"envkit-test/{project.stack}", "base", project.stack, files={"srv/old.txt": "old"}
    )
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", f"FROM {base}\nCOPY new.txt /srv/\nENV A=1\n")
    project.write("images/app/new.txt", "new")
    env = {**project.env(), "XDG_CACHE_HOME": str(tmp_path / "fresh-cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "envkit", "build", "--json"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    [built] = json.loads(proc.stdout)
    assert (built["builder"], built["status"]) == ("assembler", "built"), built
    found = docker_client.inspect_image(built["tag"])
    assert found["Config"]["Env"][-1] == "A=1"
    container = docker_client.create_container(
        built["tag"], ["cat", "/srv/old.txt", "/srv/new.txt"], labels={labels.PROJECT: project.stack}
    )
    try:
        docker_client.start(container)
        docker_client.wait(container, timeout=60)
        assert docker_client.logs(container) == b"oldnew"
    finally:
        docker_client.remove_container(container, force=True, v=True)


def test_a_refused_load_leaves_no_image(
    project: Project, docker_client: docker.APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine refuses an archive whose new layer is not the one its manifest names: the build
    fails naming the refusal, and no image of the stack is left, tagged or not."""
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", f"FROM {project.base}\nCOPY a.txt /a.txt\n")
    project.write("images/app/a.txt", "a")
    written = archive.write_archive

    def corrupt(out: Any, raw_config: bytes, layers: Any, new_layers: Any) -> bytes:
        bad = {}
        for digest, path in new_layers.items():
            other = path.with_name(path.name + ".bad")
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                info = tarfile.TarInfo("not-what-the-config-says.txt")
                tar.addfile(info, io.BytesIO(b""))
            other.write_bytes(buffer.getvalue())
            bad[digest] = other
        return written(out, raw_config, layers, bad)

    monkeypatch.setattr(archive, "write_archive", corrupt)
    daemon = Daemon()
    try:
        with pytest.raises(BuildError) as caught:
            envkit.images.build.ensure(load(project.root), daemon)
    finally:
        daemon.close()
    assert "docker load of the image envkit wrote was refused" in str(caught.value)
    assert stack_images(docker_client, project.stack) == []


def test_an_image_envkit_writes_is_named_by_its_bytes(
    project: Project, docker_client: docker.APIClient
) -> None:
    """The ID of an assembled image is the digest of the config envkit wrote (Docker's classic
    store, Podman) or of the manifest (the containerd store): both functions of its inputs."""
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.tiny]\n')
    project.write("images/tiny/Dockerfile", "FROM scratch\nCOPY a.txt /\n")
    project.write("images/tiny/a.txt", "a")
    [built] = json.loads(project.cli("build", "--json", check=True).stdout)
    found = docker_client.inspect_image(built["tag"])
    config = found["Config"]
    assert config["Labels"][labels.KEY] == built["key"]
    daemon = Daemon()
    try:
        store = daemon.engine.store
    finally:
        daemon.close()
    saved = b"".join(docker_client.get_image(built["tag"]))
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        names = tar.getnames()
        if "index.json" in names:
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
            manifest_digest = index["manifests"][0]["digest"]
        else:
            manifest_digest = None
    if store == "containerd":
        assert found["Id"] == manifest_digest
    else:
        # the config's digest, whatever layout the engine saves in
        with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
            [entry] = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            raw = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        assert found["Id"] == archive.image_id(raw)


def test_status_names_the_engine_and_its_store(project: Project) -> None:
    project.write(
        "envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[services.none]\nimage = "{project.base}"\n'
    )
    daemon = Daemon()
    try:
        engine = daemon.engine
    finally:
        daemon.close()
    reported = json.loads(project.cli("status", "--json", check=True).stdout)["engine"]
    assert {k: reported[k] for k in ("product", "version", "api_version", "store")} == engine.to_json()
    text = project.cli("status", check=True).stdout
    assert f"{engine.version}, API {engine.api_version}" in text
    matrix = os.environ.get("ENVKIT_TEST_ENGINE")
    if matrix is not None:
        assert (reported["product"], reported["store"]) == EXPECTED[matrix]


UNREADABLE = """
import sys
from envkit.images import facts

def unreadable(self, daemon, image_id, *, stall):
    raise facts.UnreadableImage(image_id, "has no manifest.json or index.json")

facts.FactsCache.get = unreadable
from envkit.cli import main
sys.argv = ["envkit", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("flag", ["--json", "--explain"])
def test_a_base_whose_save_cannot_be_read_goes_to_the_classic_builder_and_says_why(
    project: Project, docker_client: docker.APIClient, tmp_path: Path, flag: str
) -> None:
    """The base's ``docker save`` is not laid out as any engine writes it: no traceback, the
    classic builder builds the image, and --json (builder_reason) and --explain say why."""
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", f"FROM {project.base}\nCOPY a.txt /a.txt\n")
    project.write("images/app/a.txt", "a")
    env = {**project.env(), "XDG_CACHE_HOME": str(tmp_path / "fresh-cache")}
    proc = subprocess.run(
        [sys.executable, "-c", UNREADABLE, "build", flag],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    why = "cannot be read: docker save of sha256:"
    if flag == "--json":
        [built] = json.loads(proc.stdout)
        assert (built["status"], built["builder"]) == ("built", "classic"), built
        assert (
            why in built["builder_reason"] and "has no manifest.json or index.json" in built["builder_reason"]
        )
    else:
        assert "made by the classic builder: " in proc.stdout, proc.stdout
        assert why in proc.stdout and "has no manifest.json or index.json" in proc.stdout, proc.stdout
    tag = json.loads(project.cli("build", "--json", check=True).stdout)[0]["tag"]
    assert docker_client.inspect_image(tag)["Config"]["Labels"][labels.BUILDER] == "classic"
