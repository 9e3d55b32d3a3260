"""envkit's assembler against the classic builder, on the real daemon.

Every case of the corpus (tests/integration/assembler_corpus.py) is built both
ways from the same key's inputs: by the classic builder (the context envkit
sends, as ``docker build`` would) and by envkit's assembler. The two images
must hold the same files (path, type, mode, owner, size, content, link target:
read back through ``docker export`` of a container created, never started, from
each) and the same config (Env, Cmd, Entrypoint, WorkingDir, User,
ExposedPorts, Volumes, StopSignal, Healthcheck, Shell, and the labels other
than envkit's).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Project, import_busybox, remove_stack_images
from engine_client import EngineFacts

import envkit.images.build
from envkit.config.find import load
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.images import assemble, classic
from envkit.images.facts import FactsCache
from envkit.progress import Silent
from integration import events
from integration.assembler_corpus import CASES, PARENT, PARENT_FILES, Case, FileValue
from integration.test_recipe_build import RECIPE, FakeMmdebstrap

pytestmark = pytest.mark.docker

CONFIG_FIELDS = (
    "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "StopSignal",
    "Healthcheck", "Shell", "Labels",
)  # fmt: skip


def write_files(root: Path, files: dict[str, FileValue]) -> None:
    for relative, value in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, str) and value.startswith("-> "):
            os.symlink(value[3:], path)
            continue
        text, mode = (value, 0o644) if isinstance(value, str) else value
        path.write_text(text)
        path.chmod(mode)


def write_case(project: Project, case: Case) -> None:
    def fill(text: str) -> str:
        return text.replace("{base}", project.base).replace("{stack}", project.stack)

    entry = ["[images.case]"]
    if case.args:
        pairs = ", ".join(f'{k} = "{fill(v)}"' for k, v in case.args.items())
        entry.append(f"args = {{ {pairs} }}")
    if case.target:
        entry.append(f'target = "{case.target}"')
    parent = "[images.parent]\n" if case.parent else ""
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n{parent}' + "\n".join(entry) + "\n")
    project.write("images/case/Dockerfile", fill(case.dockerfile))
    write_files(project.root / "images/case", case.files)
    if case.ignore is not None:
        project.write("images/case/.dockerignore", case.ignore)
    if case.parent:
        project.write("images/parent/Dockerfile", fill(PARENT))
        write_files(project.root / "images/parent", PARENT_FILES)


def build_both_ways(project: Project, tmp_path: Path) -> tuple[str, str]:
    """The case's image by the classic builder and by the assembler: their IDs."""
    daemon = Daemon()
    try:
        config = load(project.root)
        if "parent" in config.images:
            envkit.images.build.ensure(config, daemon, names=["parent"])
        the_plan = envkit.images.build.plan(config, daemon, names=["case"])
        spec, inputs = config.images["case"], the_plan.inputs["case"]
        parents = {name: the_plan.tag(name) for name in spec.parents}
        image_labels = {labels.PROJECT: project.stack}
        by_classic = classic.build(
            daemon, spec, inputs, parents=parents, labels=image_labels, progress=Silent()
        )
        by_envkit = assemble.build(
            daemon,
            spec,
            inputs,
            parents=parents,
            labels=image_labels,
            facts=FactsCache(tmp_path / "facts"),
            platform=inputs.platform,
            stall=None,
        )
        return by_classic, by_envkit
    finally:
        daemon.close()


def files_of(client: docker.APIClient, image: str, stack: str) -> dict[str, tuple[Any, ...]]:
    """Every file of ``image``: path -> (type, mode, uid, gid, size, sha256, link target).

    Read through ``docker export`` of a container created (never started) from it.
    """
    container = client.create_container(image, command=["/nothing"], labels={labels.PROJECT: stack})
    mounts = client.inspect_container(container["Id"])["Mounts"] or []
    anonymous = {m["Name"] for m in mounts if m.get("Type") == "volume"}  # an image's VOLUMEs
    try:
        with tempfile.TemporaryFile() as out:
            for chunk in client.export(container["Id"]):
                out.write(chunk)
            out.seek(0)
            found: dict[str, tuple[Any, ...]] = {}
            with tarfile.open(fileobj=out) as tar:
                for info in tar:
                    digest = ""
                    if info.isreg():
                        extracted = tar.extractfile(info)
                        assert extracted is not None
                        digest = hashlib.sha256(extracted.read()).hexdigest()[:16]
                    found["/" + info.name.strip("/")] = (
                        info.type, oct(info.mode), info.uid, info.gid, info.size if info.isreg() else 0,
                        digest, info.linkname,
                    )  # fmt: skip
            return found
    finally:
        client.remove_container(container["Id"], force=True, v=True)  # and its anonymous volumes
        left = anonymous & {v["Name"] for v in client.volumes().get("Volumes") or []}
        assert not left, f"volumes left by the container of {image}: {left}"


def config_of(client: docker.APIClient, image: str) -> dict[str, Any]:
    config = client.inspect_image(image)["Config"] or {}
    out = {name: config.get(name) for name in CONFIG_FIELDS}
    out["Labels"] = {k: v for k, v in (out["Labels"] or {}).items() if not k.startswith("envkit.")}
    return {k: v or None for k, v in out.items()}  # an empty list, map or string is no value


def differences(left: dict[str, Any], right: dict[str, Any]) -> list[str]:
    return [
        f"{key}: classic {left.get(key)!r} != assembled {right.get(key)!r}"
        for key in sorted(set(left) | set(right))
        if left.get(key) != right.get(key)
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_assembled_image_equals_the_classic_builders(
    case: Case, project: Project, docker_client: docker.APIClient, tmp_path: Path, engine_facts: EngineFacts
) -> None:
    engine_facts.require(
        "the corpus's reference is Docker's classic builder; Podman builds with buildah, whose images "
        "differ from Docker's (its own label, Env order, port ranges, SHELL): the assembler makes "
        "Docker's image there too (test_engines checks it loads and runs)",
        podman=False,
    )
    write_case(project, case)
    by_classic, by_envkit = build_both_ways(project, tmp_path)
    file_diff = differences(
        files_of(docker_client, by_classic, project.stack), files_of(docker_client, by_envkit, project.stack)
    )
    assert file_diff == [], "\n".join(file_diff)
    config_diff = differences(config_of(docker_client, by_classic), config_of(docker_client, by_envkit))
    assert config_diff == [], "\n".join(config_diff)


def test_the_corpus_covers_what_the_issue_names() -> None:
    """scratch, a stack parent, an external base, a multi-stage target, --chown, wildcards, an
    ignored file: each is in the corpus at least once, and there are 30 cases or more."""
    texts = {c.id: c.dockerfile for c in CASES}
    assert len(CASES) >= 30
    assert any(t.startswith("FROM scratch") for t in texts.values())
    assert any(c.parent for c in CASES)
    assert any("FROM {base}" in t for t in texts.values())
    assert any(c.target and c.dockerfile.count("FROM ") > 1 for c in CASES)
    assert any("--chown" in t for t in texts.values())
    assert any(ch in t for t in texts.values() for ch in "*?[")
    assert any(c.ignore for c in CASES)


# --------------------------------------------------------------------------- no container, no builder


class Events:
    """The daemon's container and image events while a block runs."""

    def __init__(self, client: docker.APIClient) -> None:
        self.client = client
        self.seen: list[dict[str, Any]] = []

    def __enter__(self) -> Events:
        self.since = time.time() - 1
        return self

    def __exit__(self, *_: object) -> None:
        self.seen = events.log().between(self.since, kind=None)


def test_an_assembled_build_starts_no_container_and_calls_no_builder(
    project: Project,
    docker_client: docker.APIClient,
    monkeypatch: pytest.MonkeyPatch,
    engine_facts: EngineFacts,
) -> None:
    engine_facts.require(
        "the test reads the engine's event stream up to a labelled volume's create event, "
        "which Podman's Docker-compatible events do not deliver",
        podman=False,
    )
    # a base of this test's own: any container made from it (a builder's step) is this test's
    base = import_busybox(docker_client, f"envkit-test/{project.stack}", "base", project.stack)
    base_id = docker_client.inspect_image(base)["Id"]
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write(
        "images/app/Dockerfile", f'FROM {base}\nENV A=1\nWORKDIR /app\nCOPY . .\nUSER 1000\nCMD ["sh"]\n'
    )
    write_files(project.root / "images/app", {"main.py": "print(1)\n", "lib/x.py": ""})
    daemon = Daemon()
    builder_calls: list[Any] = []
    original = daemon.build

    def counted_build(*args: Any, **kwargs: Any) -> Any:
        builder_calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(daemon, "build", counted_build)
    try:
        with Events(docker_client) as events:
            [result] = envkit.images.build.ensure(load(project.root), daemon)
    finally:
        daemon.close()
    assert result.status == "built" and result.builder == "assembler"
    assert builder_calls == []
    ours = [
        e
        for e in events.seen
        if e.get("Type") == "container"
        and (
            e.get("from") == base_id
            or (e.get("Actor") or {}).get("Attributes", {}).get(labels.PROJECT) == project.stack
        )
    ]
    # the only container is the one the base's files are looked up in: created, never started,
    # labelled as such, and removed
    assert not [e for e in ours if e.get("Action") in ("start", "exec_create", "commit")], ours
    looked = {e["id"] for e in ours}
    assert all(e["Actor"]["Attributes"].get(labels.LOOKUP) == "1" for e in ours), ours
    assert looked == {e["id"] for e in ours if e.get("Action") == "destroy"}, "a lookup container was left"
    loads = [e for e in events.seen if e.get("Type") == "image" and e.get("Action") == "load"]
    assert loads, "the image was not loaded (the events cannot be read?)"
    found = docker_client.inspect_image(result.tag)
    assert found["Config"]["Labels"][labels.BUILDER] == "assembler"
    assert found["RootFS"]["Layers"][0] == docker_client.inspect_image(base_id)["RootFS"]["Layers"][0]


def test_a_dockerfile_with_run_goes_to_the_classic_builder_and_explain_says_why(project: Project) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n[images.plain]\n')
    project.write("images/app/Dockerfile", f"FROM {project.base}\nCOPY . /app/\nRUN true\n")
    project.write("images/app/a.txt", "a")
    project.write("images/plain/Dockerfile", f"FROM {project.base}\nCOPY . /app/\n")
    project.write("images/plain/a.txt", "a")
    data = {d["image"]: d for d in json.loads(project.cli("build", "--json", check=True).stdout)}
    assert data["app"]["builder"] == "classic"
    assert "RUN at line 3" in data["app"]["builder_reason"]
    assert data["plain"]["builder"] == "assembler"
    text = project.cli("build", "--explain", check=True).stdout
    assert "classic builder: RUN at line 3 needs the classic builder" in text
    assert "made by envkit's assembler" in text
    # the manifest records which builder made each image, and why
    for name, builder in (("app", "classic"), ("plain", "assembler")):
        made = json.loads(
            (project.root / ".envkit/manifests" / name / f"{data[name]['key']}.builder").read_text()
        )
        assert made["builder"] == builder and made["why"] == data[name]["builder_reason"]


@pytest.mark.parametrize(
    ("dockerfile", "files", "why"),
    [
        ("FROM {base}\nADD pack.tar /x/\n", "tar", "ADD of the archive"),
        (
            "FROM {base}\nCOPY passwd group /etc/\nCOPY --chown=nobody a.txt /x/\n",
            "a",
            "names a user or group",
        ),
        ("FROM {base}\nCOPY missing*.txt /x/\n", "a", "matches nothing"),
    ],
    ids=["add-archive", "chown-by-name", "no-match"],
)
def test_what_the_assembler_cannot_do_the_classic_builder_does(
    project: Project, docker_client: docker.APIClient, dockerfile: str, files: str, why: str
) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", dockerfile.replace("{base}", project.base))
    project.write("images/app/a.txt", "a")
    project.write("images/app/passwd", "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    project.write("images/app/group", "root:x:0:\nnobody:x:65534:\n")
    if files == "tar":
        with tarfile.open(project.root / "images/app/pack.tar", "w") as tar:
            tar.add(project.root / "images/app/a.txt", arcname="inside.txt")
    proc = project.cli("build", "--json")
    if why == "matches nothing":  # the classic builder fails it too, naming the source
        assert proc.returncode != 0 and "missing" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    [data] = json.loads(proc.stdout)
    assert data["builder"] == "classic"
    assert why in data["builder_reason"]
    assert docker_client.inspect_image(data["tag"])["Config"]["Labels"][labels.BUILDER] == "classic"


# --------------------------------------------------------------------------- reproducible


def image_ids(client: docker.APIClient, built: list[dict[str, Any]]) -> dict[str, str]:
    return {d["image"]: client.inspect_image(d["tag"])["Id"] for d in built}


@pytest.fixture
def mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMmdebstrap:
    """A stand-in for mmdebstrap first on PATH: it writes the busybox rootfs (see test_recipe_build)."""
    the_fake = FakeMmdebstrap(tmp_path / "fake-mmdebstrap")
    monkeypatch.setenv("PATH", f"{the_fake.bin}{os.pathsep}{os.environ['PATH']}")
    return the_fake


def test_the_same_keys_give_the_same_images_from_another_path_umask_cache_and_time(
    project: Project, mmdebstrap: FakeMmdebstrap, docker_client: docker.APIClient, tmp_path: Path
) -> None:
    """Every assembled and recipe image: removed, then rebuilt from a copy of the checkout at
    another path, written and built under umask 077, with another cache and state, later."""
    project.write(
        "envkit.toml",
        f'[stack]\nname = "{project.stack}"\n\n[images.base]\nrecipe = "recipe.toml"\n\n'
        "[images.app]\n[images.tiny]\n[images.external]\n",
    )
    project.write("images/base/recipe.toml", RECIPE)
    project.write("images/app/Dockerfile", 'FROM base\nWORKDIR /srv/app\nCOPY . .\nUSER 1000\nCMD ["sh"]\n')
    write_files(project.root / "images/app", {"app.py": "print(1)\n", "run.sh": ("#!/bin/sh\n", 0o755)})
    project.write("images/tiny/Dockerfile", "FROM scratch\nCOPY . /\n")
    write_files(project.root / "images/tiny", {"data/a.txt": "a", "link": "-> data/a.txt"})
    project.write("images/external/Dockerfile", f"FROM {project.base}\nCOPY . /x/\nENV X=1\n")
    project.write("images/external/x.txt", "x")
    first = json.loads(project.cli("build", "--json", check=True).stdout)
    assert {d["image"]: d["builder"] for d in first} == {
        "base": "recipe", "app": "assembler", "tiny": "assembler", "external": "assembler",
    }  # fmt: skip
    before = image_ids(docker_client, first)
    remove_stack_images(docker_client, project.stack)
    time.sleep(1.1)  # another second on the clock

    elsewhere = tmp_path / "another" / "place" / "checkout"
    elsewhere.parent.mkdir(parents=True)
    env = {**project.env(), "ENVKIT_ROOT": str(elsewhere), "XDG_CACHE_HOME": str(tmp_path / "other-cache")}
    script = f'umask 077 && cp -R {project.root} {elsewhere} && rm -rf {elsewhere}/.envkit* && exec "$@"'
    proc = subprocess.run(
        ["sh", "-c", script, "sh", sys.executable, "-m", "envkit", "build", "--json"],
        cwd=elsewhere.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert oct((elsewhere / "images/app/app.py").stat().st_mode & 0o777) == "0o600"  # the umask held
    second = json.loads(proc.stdout)
    assert {d["image"]: d["status"] for d in second} == dict.fromkeys(before, "built")
    assert image_ids(docker_client, second) == before
