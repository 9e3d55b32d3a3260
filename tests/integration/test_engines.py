"""What must hold on every engine of the matrix (tests/engines/run.py runs this module inside
each; here it runs against this machine's engine): envkit knows the engine, an image it writes
loads and is named by what the engine reports, a parent's facts are read from the engine's own
``docker save``, a refused load leaves nothing, and an external base's identity is its content."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Project, import_busybox
from engine_client import EngineFacts

import envkit.images.build
from envkit.config.find import load
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import BuildError, DaemonError
from envkit.images import archive, parent
from envkit.images.facts import FactsCache, ImageFacts, read_image
from integration.assembler_corpus import Case, FileValue
from integration.registry import Registry

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
    store = {"classic": "classic image store", "containerd": "containerd image store"}.get(
        engine.store, engine.store
    )
    name = "Podman" if engine.product == "podman" else "Docker Engine"
    assert engine.describe() == f"{name} {engine.version} (API {engine.api_version}, {store})"


def test_an_assembled_image_on_an_imported_base_reads_the_base_from_the_engine(
    project: Project, docker_client: docker.APIClient, tmp_path: Path
) -> None:
    """No facts cached: the base's files and config come from this engine (looked up, or its
    ``docker save`` in whatever layout on the containerd store), the image is assembled, loaded
    under the ID the engine reports, and its files are there."""
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


# A parent whose `docker save` cannot be read goes to the classic builder, and --json
# (builder_reason) and --explain say why; never a traceback. The save is the engine's own, cut
# short on its way to envkit.
CUT_SAVE = textwrap.dedent(
    """
    import sys
    from envkit.docker.engine import Daemon

    from envkit.errors import DaemonError

    real = Daemon.save

    def no_history(self, ref):  # the base cannot be looked up: its save is read
        raise DaemonError("no history here", 500)

    def cut(self, image, *, stall):
        data = b"".join(real(self, image, stall=stall))
        yield data[: len(data) // 2 + 100]  # inside a member, off any 512-byte block

    Daemon.save = cut
    Daemon.history_entries = no_history
    sys.argv[0] = "envkit"
    from envkit.cli import main

    main()
    """
)


def test_a_parent_whose_save_cannot_be_read_goes_to_the_classic_builder_and_says_why(
    project: Project, docker_client: docker.APIClient, tmp_path: Path
) -> None:
    base = import_busybox(docker_client, f"envkit-test/{project.stack}", "base", project.stack)
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", f"FROM {base}\nCOPY a.txt /srv/\n")
    project.write("images/app/a.txt", "a")
    wrapper = tmp_path / "envkit_cut_save.py"
    wrapper.write_text(CUT_SAVE)
    # a cache of its own: the base's facts are read from its save, not remembered
    env = {**project.env(), "XDG_CACHE_HOME": str(tmp_path / "fresh-cache")}

    def envkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(wrapper), *args],
            cwd=project.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )

    proc = envkit("build", "--json")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    [built] = json.loads(proc.stdout)
    assert (built["builder"], built["status"]) == ("classic", "built"), built
    assert f"its base {base} cannot be read" in built["builder_reason"], built
    assert "docker save of" in built["builder_reason"], built  # the reader's own reason follows
    found = docker_client.inspect_image(built["tag"])
    assert found["Config"]["Labels"][labels.BUILDER] == "classic"
    # --explain says it as well, also once the image is cached
    explained = envkit("build", "--explain")
    assert explained.returncode == 0 and "Traceback" not in explained.stderr, explained.stderr
    why = f"made by the classic builder: its base {base} cannot be read"
    assert why in explained.stdout, explained.stdout


# The archive's new layer is replaced by another tar, so the engine refuses it; whatever the
# refusal leaves, no image of the stack stays, tagged or not.
def test_a_refused_load_leaves_no_image(
    project: Project, docker_client: docker.APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = archive.load

    def corrupt(daemon, image, raw_config, *, new_layers, **kwargs):  # type: ignore[no-untyped-def]
        bad = {}
        for digest, path in new_layers.items():
            other = path.with_name(path.name + ".bad")
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                tar.addfile(tarfile.TarInfo("not-what-the-config-says.txt"), io.BytesIO(b""))
            other.write_bytes(buffer.getvalue())
            bad[digest] = other
        return real(daemon, image, raw_config, new_layers=bad, **kwargs)

    monkeypatch.setattr(archive, "load", corrupt)
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n")
    project.write("images/app/a.txt", "a")
    daemon = Daemon()
    try:
        with pytest.raises(BuildError) as caught:
            envkit.images.build.ensure(load(project.root), daemon)
    finally:
        daemon.close()
    assert "docker load of the image envkit wrote was refused" in str(caught.value)
    left = docker_client.images(all=True, filters={"label": f"{labels.PROJECT}={project.stack}"})
    assert [i["Id"] for i in left] == []


# A fixed project (one image on a fixed external base, one FROM
# scratch) has the same keys on every engine and image store, whatever the base's local ID (it is
# imported twice, a second apart: another ID each time, on every store), and the image envkit
# writes has the same ID on every store of one kind (the config's digest on Docker's classic store
# and Podman, the manifest's on the containerd store). Measured on Docker 26.1 (both stores) and
# Podman 5.4, linux/amd64. A change of these values changes every user's keys: bump KEY_SCHEMA.
GOLDEN_KEYS = {
    "app": "557f82a2cb2534d1732e1010d9f6a8fe2fc84d32ab408a0368d9fa3a2a870c37",
    "tiny": "95fe6507aca17e9d0c0e4371cbbf24e9eaf8087035c9265decd65c8fdc6426ce",
}
GOLDEN_TINY_ID = {
    "config": "sha256:eb7555848bc72b64305c962a231e47c3c3972b7ef6294c9b4697673b7cad0d30",
    "manifest": "sha256:73a4a9ee10f4ed7b354ebf8c2863c79110de22042117ca45ce912514901c2d93",
}
GOLDEN_STACK = "envkit-golden"
GOLDEN_BASE = "envkit-test/golden-base:1"


def _fixed_rootfs() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/hello")
        info.size, info.mode, info.mtime = 6, 0o644, 0
        tar.addfile(info, io.BytesIO(b"hello\n"))
    return buffer.getvalue()


def _remove_golden(client: docker.APIClient) -> None:
    for stack in (GOLDEN_STACK, f"{GOLDEN_STACK}-base"):
        for image in client.images(filters={"label": f"{labels.PROJECT}={stack}"}):
            client.remove_image(image["Id"], force=True)


def test_the_same_inputs_give_the_same_keys_and_ids_on_every_engine(
    project: Project, docker_client: docker.APIClient, engine_facts: EngineFacts
) -> None:

    daemon = Daemon()
    try:
        platform = daemon.platform
    finally:
        daemon.close()
    if platform != "linux/amd64":
        pytest.skip(f"the golden values are linux/amd64's; the engine builds for {platform}")
    project.write("envkit.toml", f'[stack]\nname = "{GOLDEN_STACK}"\n\n[images.app]\n[images.tiny]\n')
    project.write("images/app/Dockerfile", f"FROM {GOLDEN_BASE}\nCOPY a.txt /srv/\nENV A=1\n")
    project.write("images/app/a.txt", "a")
    project.write("images/tiny/Dockerfile", "FROM scratch\nCOPY a.txt /\n")
    project.write("images/tiny/a.txt", "a")
    _remove_golden(docker_client)
    try:
        runs = []
        for _ in range(2):
            docker_client.import_image_from_data(
                _fixed_rootfs(),
                repository=GOLDEN_BASE.split(":", maxsplit=1)[0],
                tag=GOLDEN_BASE.split(":")[1],
                changes=[f"LABEL {labels.PROJECT}={GOLDEN_STACK}-base", "ENV PATH=/bin", 'CMD ["sh"]'],
            )
            base_id = docker_client.inspect_image(GOLDEN_BASE)["Id"]
            # the keys first, as planned (before any build): what identifies the base
            daemon = Daemon()
            try:
                the_plan = envkit.images.build.plan(load(project.root), daemon)
            finally:
                daemon.close()
            assert {n: the_plan.inputs[n].key for n in the_plan.order} == GOLDEN_KEYS
            built = {d["image"]: d for d in json.loads(project.cli("build", "--json", check=True).stdout)}
            tiny_id = docker_client.inspect_image(built["tiny"]["tag"])["Id"]
            runs.append((base_id, {n: d["key"] for n, d in built.items()}, tiny_id))
            _remove_golden(docker_client)
            time.sleep(1.1)  # the next import is another image (its Created differs)
        (first_base, first_keys, first_tiny), (second_base, second_keys, second_tiny) = runs
        assert first_base != second_base  # another local ID for the same content...
        assert first_keys == second_keys == GOLDEN_KEYS  # ...and the same keys, on every engine
        kind = "config" if engine_facts.image_id_is_config_digest else "manifest"
        assert first_tiny == second_tiny == GOLDEN_TINY_ID[kind]
    finally:
        with contextlib.suppress(docker.errors.APIError):  # the test's own failure is the one to see
            _remove_golden(docker_client)


def test_a_push_to_a_plain_http_registry_works_where_the_engine_trusts_it_and_says_how_elsewhere(
    project: Project, registry: Registry, engine_facts: EngineFacts
) -> None:
    """Docker trusts a registry on 127.0.0.0/8 over plain HTTP: the push goes through. Podman
    does only when its registries.conf says so: the push fails naming that setting, never a
    bare 'server gave HTTP response to HTTPS client'."""
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.tiny]\n')
    project.write("images/tiny/Dockerfile", "FROM scratch\nCOPY a.txt /\n")
    project.write("images/tiny/a.txt", "a")
    env = {**project.env(), "ENVKIT_CACHE": registry.cache(project.stack)}
    proc = subprocess.run(
        [sys.executable, "-m", "envkit", "build", "--push", "--json"],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "Traceback" not in proc.stderr
    if not engine_facts.podman:
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)[0]["pushed"] is True
    else:
        assert proc.returncode != 0
        assert "registries.conf" in proc.stderr and "insecure = true" in proc.stderr, proc.stderr


# A base envkit did not make, on a fresh machine: what the assembler needs of it is looked up
# (inspect, history, and the paths the instructions ask about, in a container created and never
# started), not read from a save of the whole image; the containerd store, whose manifests name
# layers by blobs only a save tells, reads the save. Either way the image is the same: built
# again with the base's facts read from its save, it gets the same ID.
def test_a_fresh_base_is_looked_up_not_saved_and_makes_the_image_its_facts_make(
    project: Project,
    docker_client: docker.APIClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    engine_facts: EngineFacts,
) -> None:
    base = import_busybox(
        docker_client,
        f"envkit-test/{project.stack}",
        "base",
        project.stack,
        files={"srv/app/keep.txt": "kept", "srv/old.txt": "old"},
    )
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write(
        "images/app/Dockerfile",
        f"FROM {base}\nWORKDIR /srv/app\nCOPY --chown=1000:1000 src/ ./\nCOPY one.txt /srv/\nENV A=1\n",
    )
    for name in ("src/main.py", "src/lib/x.py", "one.txt"):
        project.write(f"images/app/{name}", name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh-cache"))
    daemon = Daemon()
    saves: list[str] = []
    real_save = daemon.save

    def counted_save(image: str, *, stall: float | None) -> object:
        saves.append(image)
        return real_save(image, stall=stall)

    monkeypatch.setattr(daemon, "save", counted_save)
    try:
        [looked_up] = envkit.images.build.ensure(load(project.root), daemon)
        assert (looked_up.builder, looked_up.status) == ("assembler", "built"), looked_up
        if engine_facts.image_store != "classic":  # containerd: blobs; Podman: its inspect (parent.py)
            assert saves, "the base is read from its save there"
        else:
            assert saves == [], "the base was saved, not looked up"
        left = docker_client.containers(all=True, filters={"label": f"{labels.LOOKUP}=1"})
        assert [c for c in left if c["Labels"].get(labels.PROJECT) == project.stack] == []
        first = docker_client.inspect_image(looked_up.tag)
        # the base's facts from its save, then the same inputs again
        FactsCache(tmp_path / "fresh-cache" / "envkit").get(
            daemon, str(docker_client.inspect_image(base)["Id"]), stall=60
        )
        docker_client.remove_image(looked_up.tag)
        [from_facts] = envkit.images.build.ensure(load(project.root), daemon)
        assert (from_facts.builder, from_facts.status) == ("assembler", "built"), from_facts
    finally:
        daemon.close()
    again = docker_client.inspect_image(from_facts.tag)
    assert again["Id"] == first["Id"], "the image depends on how its base was known"
    container = docker_client.create_container(
        from_facts.tag,
        ["sh", "-c", "ls -ln /srv/app; cat /srv/app/keep.txt /srv/one.txt"],
        labels={labels.PROJECT: project.stack},
    )
    try:
        docker_client.start(container)
        docker_client.wait(container, timeout=60)
        out = docker_client.logs(container).decode()
    finally:
        docker_client.remove_container(container, force=True, v=True)
    assert "keptone.txt" in out
    assert " 1000 " in out.split("main.py")[0].splitlines()[-1], out  # --chown applied


# The canonical config of a base is the same from `docker image inspect` and `docker history`
# as from its save, on every engine: for an imported base and for one the classic builder made
# (its history has steps that made no layer).
def test_inspect_and_history_tell_the_config_a_save_carries(
    project: Project, docker_client: docker.APIClient, engine_facts: EngineFacts
) -> None:
    base = import_busybox(docker_client, f"envkit-test/{project.stack}", "base", project.stack)
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.step]\n')
    project.write(
        "images/step/Dockerfile",
        f'FROM {base}\nENV B=2\nRUN echo hi > /srv.txt\nLABEL x=y\nEXPOSE 80\nCMD ["sh"]\n',
    )
    daemon = Daemon()
    try:
        [built] = envkit.images.build.ensure(load(project.root), daemon)
        assert built.builder == "classic"
        for ref in (base, built.tag):
            saved, looked = _canonical_both_ways(daemon, docker_client, ref)
            assert looked is not None, ref
            assert looked == saved, ref
    finally:
        daemon.close()


# -- the lookup against the classic builder and the save: what the engine makes in a
# container, harder configs, odd names
# Bases whose config names paths their files lack, built both ways (classic builder, assembler with
# no facts cached, so the base is looked up): the two images must hold the same files and config.


def _import_with(
    client: docker.APIClient,
    project: Project,
    tag: str,
    changes: list[str],
    files: dict[str, str] | None = None,
) -> str:
    from conftest import busybox_rootfs_tar

    repository = f"envkit-test/{project.stack}"
    client.import_image_from_data(
        busybox_rootfs_tar(files),
        repository=repository,
        tag=tag,
        changes=[f"LABEL {labels.PROJECT}={project.stack}", "ENV PATH=/bin", 'CMD ["sh"]', *changes],
    )
    return f"{repository}:{tag}"


def _both_ways_differences(
    engine_facts: EngineFacts,
    project: Project,
    client: docker.APIClient,
    tmp_path: Path,
    base: str,
    dockerfile: str,
    files: dict[str, FileValue],
) -> list[str]:
    import dataclasses

    engine_facts.require(
        "the reference is Docker's classic builder; Podman builds with buildah, whose images "
        "differ from Docker's (its own label, and what it makes of a missing VOLUME)",
        podman=False,
    )
    from integration.test_assembler import build_both_ways, config_of, differences, files_of, write_case

    on_base = dataclasses.replace(project, base=base)
    write_case(on_base, Case("on-base", dockerfile, files))
    by_classic, by_envkit = build_both_ways(on_base, tmp_path)
    left = client.containers(all=True, filters={"label": f"{labels.LOOKUP}=1"})
    assert [c for c in left if c["Labels"].get(labels.PROJECT) == project.stack] == [], "lookup left"
    return differences(
        files_of(client, by_classic, project.stack), files_of(client, by_envkit, project.stack)
    ) + differences(config_of(client, by_classic), config_of(client, by_envkit))


# A base whose WorkingDir is not among its files (`docker import --change WORKDIR`, `docker commit
# --change`): a container created of it gets the directory (the engine makes it at create, root's),
# the image does not. The classic builder's COPY --chown into that path makes it, the owner's.
def test_a_base_workdir_its_files_lack_is_no_directory(
    project: Project, docker_client: docker.APIClient, tmp_path: Path, engine_facts: EngineFacts
) -> None:
    base = _import_with(docker_client, project, "workdir", ["WORKDIR /w"])
    dockerfile = "FROM {base}\nCOPY --chown=1000:1000 f.txt /w/\n"
    assert (
        _both_ways_differences(
            engine_facts, project, docker_client, tmp_path, base, dockerfile, {"f.txt": "f\n"}
        )
        == []
    )


# A base with a VOLUME its files lack: the archive of a created container mounts the container's
# volumes, making the mount point (root's); the image has no such directory.
def test_a_base_volume_its_files_lack_is_no_directory(
    project: Project, docker_client: docker.APIClient, tmp_path: Path, engine_facts: EngineFacts
) -> None:
    base = _import_with(docker_client, project, "volume", ["VOLUME /data"])
    dockerfile = "FROM {base}\nCOPY --chown=1000:1000 f.txt /data/\n"
    assert (
        _both_ways_differences(
            engine_facts, project, docker_client, tmp_path, base, dockerfile, {"f.txt": "f\n"}
        )
        == []
    )


def _saved(daemon: Daemon, image_id: str) -> ImageFacts:
    """An image's facts as its ``docker save`` carries them (the response closed whatever happens)."""
    chunks = daemon.save(image_id, stall=60)
    try:
        return read_image(chunks, image=image_id)
    finally:
        chunks.close()


def _canonical_both_ways(daemon: Daemon, client: docker.APIClient, ref: str) -> tuple[Any, Any]:
    """A local image's canonical config from its save, and from inspect + history (None: the
    history cannot tell)."""
    image_id = str(client.inspect_image(ref)["Id"])
    saved = _saved(daemon, image_id)
    looked = parent.from_inspect(
        daemon.inspect_image(image_id) or {}, daemon.history_entries(image_id), daemon.api_version
    )
    return parent.canonical(saved.config, daemon.api_version), looked


def _load_crafted(client: docker.APIClient, config: dict[str, Any], tag: str) -> str:
    """``docker load`` of a one-layer image whose config is ``config`` (rootfs filled in)."""
    import hashlib

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("srv/x.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    raw = json.dumps({**config, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    name = hashlib.sha256(raw).hexdigest()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        manifest = [{"Config": f"{name}.json", "RepoTags": [tag], "Layers": ["l/layer.tar"]}]
        for path, data in ((f"{name}.json", raw), ("l/layer.tar", layer.getvalue()),
                           ("manifest.json", json.dumps(manifest).encode())):  # fmt: skip
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for _ in client.load_image(out.getvalue()):
        pass
    return tag


# The canonical config of bases whose configs are harder than test_inspect_and_history_tell_the_
# config_a_save_carries's: whatever inspect + history answer, when they answer, is what the save
# carries (else one base gives two IDs to the same child, by whether its facts were cached).
def test_inspect_and_history_tell_the_config_of_harder_images(
    project: Project, docker_client: docker.APIClient, engine_facts: EngineFacts
) -> None:
    engine_facts.require(PODMAN_INSPECT, podman=False)
    base = import_busybox(docker_client, f"envkit-test/{project.stack}", "base", project.stack)
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.hard]\n\n[images.trigger]\n')
    project.write(
        "images/hard/Dockerfile",
        f"FROM {base}\nHEALTHCHECK --interval=5s --retries=2 CMD true\nSTOPSIGNAL SIGINT\nVOLUME /data\n"
        'LABEL a="" b=x\nENV A=1 A=2\nEXPOSE 80 53/udp\nSHELL ["/bin/sh", "-c"]\nUSER 1000:1000\n'
        'ENTRYPOINT ["sh"]\nRUN echo hi > /tmp/f\n',
    )
    project.write("images/trigger/Dockerfile", f"FROM {base}\nONBUILD RUN echo x\nRUN echo hi > /tmp/f\n")
    daemon = Daemon()
    try:
        built = envkit.images.build.ensure(load(project.root), daemon)
        refs = [base, *(b.tag for b in built)]
        for ref in refs:
            saved, looked = _canonical_both_ways(daemon, docker_client, ref)
            assert looked is not None, ref  # every step that made a layer made content
            assert looked == saved, ref
    finally:
        daemon.close()


PODMAN_INSPECT = (
    "Podman's Docker-compatible inspect leaves a Healthcheck out and its history fails on some "
    "images: envkit reads the save there (test_a_fresh_base_is_looked_up_not_saved... checks it)"
)


# Configs another engine or builder wrote, pulled here. A Healthcheck with Docker 25's StartInterval
# (`HEALTHCHECK --start-interval`), which this engine's API types do not know, or a zero it would
# omit: the engine's inspect re-encodes the config through its own types, the save carries the bytes.
# A time in another zone, history without times, a variant, an author: told the same both ways.
FOREIGN: dict[str, dict[str, Any]] = {
    "zone-variant-untimed-history": {
        "created": "2021-06-01T12:00:00+02:00",
        "variant": "v3",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"empty": ""}},
        "history": [{"created_by": "ADD x /", "author": "me", "comment": "c"}],
    },
    "healthcheck-start-interval": {
        "created": "2021-06-01T12:00:00Z",
        "config": {"Healthcheck": {"Test": ["CMD", "true"], "StartInterval": 1000000000}},
        "history": [{"created": "2021-06-01T12:00:00Z", "created_by": "ADD x /"}],
    },
    "healthcheck-zero-retries": {
        "created": "2021-06-01T12:00:00Z",
        "config": {"Healthcheck": {"Test": ["CMD", "true"], "Interval": 0, "Retries": 0}},
        "history": [{"created": "2021-06-01T12:00:00Z", "created_by": "ADD x /"}],
    },
}


@pytest.mark.parametrize("name", list(FOREIGN))
def test_inspect_and_history_tell_a_foreign_config_a_save_carries(
    name: str, project: Project, docker_client: docker.APIClient, engine_facts: EngineFacts
) -> None:
    engine_facts.require(PODMAN_INSPECT, podman=False)
    config = {"architecture": "amd64", "os": "linux", **FOREIGN[name]}
    config["config"] = {
        **config["config"],
        "Labels": {**config["config"].get("Labels", {}), labels.PROJECT: project.stack},
    }
    tag = _load_crafted(docker_client, config, f"envkit-test/{project.stack}:foreign")
    daemon = Daemon()
    try:
        saved, looked = _canonical_both_ways(daemon, docker_client, tag)
        assert looked is not None
        assert looked == saved
    finally:
        daemon.close()


# The lookup container removed behind the build's back (`docker container prune` in a CI job
# beside it): the engine answers 404 for every path, which the lookup takes for "nothing there".
def test_a_removed_lookup_container_is_no_empty_image(
    project: Project, docker_client: docker.APIClient
) -> None:
    base = import_busybox(docker_client, f"envkit-test/{project.stack}", "base", project.stack)
    daemon = Daemon()
    looker = parent.Looker(
        daemon,
        str(docker_client.inspect_image(base)["Id"]),
        {labels.PROJECT: project.stack, labels.LOOKUP: "1"},
    )
    try:
        assert looker("bin") is not None
        assert looker.container is not None
        docker_client.remove_container(looker.container, force=True, v=True)
        with pytest.raises(DaemonError):
            parent.Tree({}, lookup=looker).get("tmp")  # /tmp is in the image (1777)
    finally:
        looker.close()
        daemon.close()


# Point 2 of the issue: a fresh machine reads only what the assembler needs. A parent whose history
# has a layer without content (a WORKDIR that made a directory, as envkit's own assembler and the
# classic builder both commit) beside steps without a layer (ENV, CMD...) cannot be looked up: its
# whole save is read. Every stack image with a WORKDIR is such a parent, as are most images built
# from Dockerfiles.
def test_a_parent_with_a_workdir_layer_is_looked_up_not_saved(
    project: Project,
    docker_client: docker.APIClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    engine_facts: EngineFacts,
) -> None:
    base = import_busybox(docker_client, f"envkit-test/{project.stack}", "base", project.stack)
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n\n[images.child]\n')
    project.write("images/app/Dockerfile", f"FROM {base}\nENV A=1\nWORKDIR /srv/app\nCOPY x.txt ./\n")
    project.write("images/app/x.txt", "x")
    project.write("images/child/Dockerfile", "FROM app\nCOPY y.txt /srv/app/\n")
    project.write("images/child/y.txt", "y")
    daemon = Daemon()
    try:
        [app] = envkit.images.build.ensure(load(project.root), daemon, names=["app"])
        assert app.builder == "assembler", app
        app_id = str(docker_client.inspect_image(app.tag)["Id"])
        saves: list[str] = []
        real_save = daemon.save

        def counted_save(image: str, *, stall: float | None) -> object:
            saves.append(image)
            return real_save(image, stall=stall)

        monkeypatch.setattr(daemon, "save", counted_save)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh-cache"))  # another machine
        built = envkit.images.build.ensure(load(project.root), daemon, names=["child"])
        assert [b.builder for b in built if b.image == "child"] == ["assembler"], built
        if engine_facts.image_store != "classic":  # read from its save there (parent.py)
            assert app_id in saves
        else:
            assert app_id not in saves, "the stack parent was saved, not looked up"
    finally:
        daemon.close()


# Paths with a space, '%' and non-ASCII letters asked for one by one (each directory above holds
# more than the listing budget, so none is listed whole): the query names them exactly.
def test_paths_with_spaces_percent_and_unicode_are_looked_up_by_name(
    project: Project, docker_client: docker.APIClient, tmp_path: Path, engine_facts: EngineFacts
) -> None:
    big = "x" * (parent.DIRECTORY_BUDGET + 1000)
    files = {"srv/0big": big, "srv/a b/0big": big, "srv/a b/%41 \u00fc+&#/keep.txt": "k"}
    base = _import_with(docker_client, project, "names", [], files)
    dockerfile = 'FROM {base}\nCOPY --chown=1000:1000 ["f.txt", "/srv/a b/%41 \u00fc+&#/"]\n'
    assert (
        _both_ways_differences(
            engine_facts, project, docker_client, tmp_path, base, dockerfile, {"f.txt": "f\n"}
        )
        == []
    )


# A parent whose config has no time (an image made FROM scratch is created at the epoch, which the
# canonical form holds as no time): its child's history steps carry none either, never a null.
def test_a_child_of_an_image_without_a_time_has_no_null_times(
    project: Project, docker_client: docker.APIClient
) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.first]\n\n[images.second]\n')
    project.write("images/first/Dockerfile", "FROM scratch\nCOPY a.txt /a.txt\n")
    project.write("images/first/a.txt", "a")
    project.write("images/second/Dockerfile", "FROM first\nENV B=1\nCOPY b.txt /b.txt\n")
    project.write("images/second/b.txt", "b")
    daemon = Daemon()
    try:
        built = {b.image: b for b in envkit.images.build.ensure(load(project.root), daemon)}
        assert {b.builder for b in built.values()} == {"assembler"}
        image_id = str(docker_client.inspect_image(built["second"].tag)["Id"])
        config = _saved(daemon, image_id).config
    finally:
        daemon.close()
    steps = config["history"]
    assert [s.get("created_by") for s in steps] == ["COPY a.txt /a.txt", "ENV B=1", "COPY b.txt /b.txt"]
    assert all(value is not None for step in steps for value in step.values()), steps
