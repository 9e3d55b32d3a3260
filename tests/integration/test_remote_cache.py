"""A registry as envkit's remote cache, against a real registry and the real daemon.

Two "machines" share one registry: each is a checkout at a path of its own, with a HOME
and a cache directory of its own (so build locks and the daemons' cache too), and the
stack's images removed locally before it starts; machine B has no state directory.
Both talk to the one daemon here, so what a machine builds is counted by its daemon's
events (read as they happen: the daemon keeps only its last 256 for a later look):
a builder container, a push, a pull. The recipe image is made by the fake
mmdebstrap of the recipe tests, which counts its calls.

Each test pushes under a cache path of its own (its stack name); the registry's
storage is removed with it at the end of the session, and the project fixture removes
every local image labelled with the test's stack, pulled ones included.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Project, busybox_rootfs_tar, remove_stack_images

from envkit.config.find import load
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.images import build as build_mod
from envkit.images import cache
from envkit.settings import Settings
from integration.registry import Registry, free_port, silent_registry
from integration.stack_fixtures import StackProject
from integration.test_recipe_build import RECIPE, FakeMmdebstrap

pytestmark = pytest.mark.docker

IMAGES = ("base", "parent", "child")


@dataclass
class Machine:
    """One checkout on one "machine": its own root, HOME and cache directory."""

    root: Path
    home: Path
    cache: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
        env.update(
            ENVKIT_ROOT=str(self.root),
            ENVKIT_CACHE=self.cache,
            HOME=str(self.home),
            XDG_CACHE_HOME=str(self.home / ".cache"),
        )
        env.update(extra)
        return env

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "envkit", *args],
            cwd=self.root,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=240,
        )

    def build(self, *args: str, **extra: str) -> dict[str, dict[str, Any]]:
        """``envkit build --json ARGS``: image -> its result (the run must succeed)."""
        proc = self.cli("build", "--json", *args, **extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return {r["image"]: r for r in json.loads(proc.stdout)}


def machine(
    project: Project, tmp_path: Path, name: str, cache_path: str, *, like: Machine | None = None
) -> Machine:
    """Machine ``name``: a checkout of its own (a copy of ``like``'s, without its state
    directory; the project's root for the first), a HOME of its own."""
    root = project.root
    if like is not None:
        root = tmp_path / f"checkout-{name}"
        shutil.copytree(like.root, root, ignore=shutil.ignore_patterns(".envkit*"))
    home = tmp_path / f"home-{name}"
    home.mkdir()
    return Machine(root, home, cache_path)


class Events:
    """Docker's events (``docker events --filter ...``) while a block runs, read as they happen."""

    def __init__(self, *filters: str) -> None:
        self.filters = filters
        self.seen: list[dict[str, Any]] = []

    def __enter__(self) -> Events:
        self.started = time.time_ns()  # what happened before the block (a build just done) is not its
        self.proc = subprocess.Popen(
            ["docker", "events", "--since", f"{time.time() - 0.5:.3f}", "--format", "{{json .}}"]
            + [f"--filter={f}" for f in self.filters],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)  # subscribed (and --since covers the moment before)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(1.0)  # the last events reach the stream
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        seen = [json.loads(line) for line in out.splitlines() if line.strip()]
        self.seen = [e for e in seen if int(e.get("timeNano") or 0) >= self.started]

    def of(self, stack: str, action: str) -> list[dict[str, Any]]:
        """The events ``action`` of objects labelled with ``stack`` (a container inherits the
        labels of the image it runs: a builder's step containers carry the stack's)."""
        return [
            e
            for e in self.seen
            if e.get("Action") == action
            and (e.get("Actor") or {}).get("Attributes", {}).get(labels.PROJECT) == stack
        ]

    def refs(self, stack: str, action: str) -> collections.Counter[str]:
        """How often each reference was pushed (or pulled)."""
        return collections.Counter(str(e["Actor"]["ID"]) for e in self.of(stack, action))


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMmdebstrap:
    the_fake = FakeMmdebstrap(tmp_path / "fake-mmdebstrap")
    monkeypatch.setenv("PATH", f"{the_fake.bin}{os.pathsep}{os.environ['PATH']}")
    return the_fake


def write_stack(project: Project) -> None:
    """base (a recipe) <- parent (assembled) <- child (the classic builder, for its RUN)."""
    project.write(
        "envkit.toml",
        f'[stack]\nname = "{project.stack}"\npull = "never"\n\n'
        '[images.base]\nrecipe = "recipe.toml"\n\n[images.parent]\n\n[images.child]\n',
    )
    project.write("images/base/recipe.toml", RECIPE)
    project.write("images/parent/Dockerfile", "FROM base\nCOPY . /parent/\n")
    project.write("images/parent/p.txt", "parent\n")
    project.write(
        "images/child/Dockerfile",
        'FROM parent\nCOPY . /child/\nRUN ["/bin/busybox", "sh", "-c", "echo built > /child/marker"]\n',
    )
    project.write("images/child/c.txt", "child\n")


def warm_cache(
    project: Project, tmp_path: Path, registry: Registry, client: docker.APIClient
) -> tuple[Machine, dict[str, dict[str, Any]]]:
    """Machine A builds the stack and pushes it; then its images go (machine B has none)."""
    write_stack(project)
    a = machine(project, tmp_path, "a", registry.cache(project.stack))
    with Events("type=container", "event=create") as events:
        built = a.build("--push")
    assert {n: r["status"] for n, r in built.items()} == dict.fromkeys(IMAGES, "built")
    assert all(r["pushed"] for r in built.values())
    # the counting method sees a classic build: its step containers carry the stack's label
    assert events.of(project.stack, "create"), "the builder's containers are not seen"
    remove_stack_images(client, project.stack)
    return a, built


# -- 1. machine B pulls all three, builds none; then all cached --------------------------------------


def test_machine_b_pulls_every_image_machine_a_pushed_and_builds_none(
    project: Project,
    tmp_path: Path,
    registry: Registry,
    fake: FakeMmdebstrap,
    docker_client: docker.APIClient,
) -> None:
    a, built = warm_cache(project, tmp_path, registry, docker_client)
    assert len(fake.calls()) == 1
    for name in IMAGES:  # the entry is the image's full key, under <cache>/<image>
        assert registry.tags(f"{project.stack}/{name}") == [built[name]["key"]]
        assert built[name]["remote"] == f"{a.cache}/{name}:{built[name]['key']}"

    b = machine(project, tmp_path, "b", a.cache, like=a)
    assert not (b.root / ".envkit").exists()
    with Events("type=container", "event=create", "type=image", "event=pull") as events:
        pulled = b.build()
    assert {n: r["status"] for n, r in pulled.items()} == dict.fromkeys(IMAGES, "pulled")
    assert {n: r["key"] for n, r in pulled.items()} == {n: r["key"] for n, r in built.items()}
    for name, result in pulled.items():
        assert result["cache"] == f"pulled from {a.cache}/{name}:{result['key']}"
        found = docker_client.inspect_image(result["tag"])
        assert found["Config"]["Labels"][labels.KEY] == result["key"]
        assert result["builder"] == found["Config"]["Labels"][labels.BUILDER]
    assert events.of(project.stack, "create") == [], "machine B ran a builder"
    assert len(fake.calls()) == 1, "machine B ran mmdebstrap"
    assert sum(events.refs(project.stack, "pull").values()) == 3
    # the cache's names are not left behind: only the stack's own tags
    tags = {
        t
        for i in docker_client.images(filters={"label": f"{labels.PROJECT}={project.stack}"})
        for t in i["RepoTags"] or []
    }
    assert tags == {r["tag"] for r in pulled.values()}

    explained = b.cli("build", "--explain")
    assert explained.returncode == 0, explained.stderr
    assert "3 images: 0 built, 3 cached" in explained.stdout
    assert {n: r["status"] for n, r in b.build().items()} == dict.fromkeys(IMAGES, "cached")


def test_build_explain_says_pulled_from_and_why_not(
    project: Project,
    tmp_path: Path,
    registry: Registry,
    fake: FakeMmdebstrap,
    docker_client: docker.APIClient,
) -> None:
    a, built = warm_cache(project, tmp_path, registry, docker_client)
    b = machine(project, tmp_path, "b", a.cache, like=a)
    b.root.joinpath("images/child/c.txt").write_text("changed on B\n")
    proc = b.cli("build", "--explain")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"pulled from {a.cache}/base:{built['base']['key']}" in out
    child = re.search(r"child +built .*?(?=\n\S|\Z)", out, re.S)
    assert child, out
    assert "file changed: c.txt" not in child.group(0)  # no manifest on B: nothing to diff with
    assert "is not in the cache" in child.group(0)
    assert "3 images: 1 built, 2 pulled, 0 cached" in out


# -- 2. a changed file rebuilds that image and its children; --push uploads only those -------------


def test_a_change_on_machine_b_rebuilds_only_that_image_and_its_children_and_pushes_only_those(
    project: Project,
    tmp_path: Path,
    registry: Registry,
    fake: FakeMmdebstrap,
    docker_client: docker.APIClient,
) -> None:
    a, built = warm_cache(project, tmp_path, registry, docker_client)
    b = machine(project, tmp_path, "b", a.cache, like=a)
    b.root.joinpath("images/parent/p.txt").write_text("parent, changed on B\n")
    with Events("type=image", "event=push", "event=pull") as events:
        second = b.build("--push")
    assert {n: r["status"] for n, r in second.items()} == {
        "base": "pulled",
        "parent": "built",
        "child": "built",
    }
    assert second["base"]["key"] == built["base"]["key"]
    assert second["parent"]["key"] != built["parent"]["key"]
    assert {n: r["pushed"] for n, r in second.items()} == {"base": False, "parent": True, "child": True}
    pushed = events.refs(project.stack, "push")
    assert pushed == {f"{a.cache}/{n}:{second[n]['key']}": 1 for n in ("parent", "child")}, pushed
    assert sum(events.refs(project.stack, "pull").values()) == 1  # base only
    assert len(fake.calls()) == 1
    assert registry.tags(f"{project.stack}/parent") == sorted(
        [built["parent"]["key"], second["parent"]["key"]]
    )
    assert registry.tags(f"{project.stack}/base") == [built["base"]["key"]]


# -- 3. a poisoned entry is refused, and the image built here -------------------------------------------


@pytest.mark.parametrize("label", ["0" * 64, None], ids=["wrong-key", "no-key"])
def test_a_poisoned_entry_is_refused_and_the_image_built_locally(
    project: Project, tmp_path: Path, registry: Registry, docker_client: docker.APIClient, label: str | None
) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\npull = "never"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", f"FROM {project.base}\nCOPY . /app/\n")
    project.write("images/app/a.txt", "app\n")
    a = machine(project, tmp_path, "a", registry.cache(project.stack))
    key = a.build()["app"]["key"]
    remove_stack_images(docker_client, project.stack)
    # The poison: another image at the entry's very reference, labelled for this test's stack.
    ref = f"{a.cache}/app:{key}"
    changes = [f"LABEL {labels.PROJECT}={project.stack}", 'CMD ["sh"]']
    if label is not None:
        changes.append(f"LABEL {labels.KEY}={label}")
    repository, tag = ref.rsplit(":", 1)
    docker_client.import_image_from_data(
        busybox_rootfs_tar(), repository=repository, tag=tag, changes=changes
    )
    for line in docker_client.push(repository, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    poison = docker_client.inspect_image(ref)["Id"]
    docker_client.remove_image(ref)
    assert registry.tags(f"{project.stack}/app") == [key]

    b = machine(project, tmp_path, "b", a.cache, like=a)
    proc = b.cli("build", "--json", "--push")
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["status"] == "built"
    why = f"its {labels.KEY} label is '{label}'" if label else f"it has no {labels.KEY} label"
    assert result["cache"] == f"not pulled: refused {ref}: {why}, not the image's key"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("envkit: app: refused")]
    assert len(warnings) == 1 and ref in warnings[0], proc.stderr
    found = docker_client.inspect_image(result["tag"])
    assert found["Id"] != poison and found["Config"]["Labels"][labels.KEY] == key
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.inspect_image(ref)  # the poison's reference is not left here
    # the good image replaced the entry: the next machine pulls it
    assert result["pushed"]
    remove_stack_images(docker_client, project.stack)
    c = machine(project, tmp_path, "c", a.cache, like=a)
    assert c.build()["app"]["status"] == "pulled"


# -- 4. a registry that is down: one warning, a local build, exit 0; a warm no-op asks nothing -------


def test_a_registry_that_refuses_connections_costs_one_warning_and_the_build_goes_on(
    project: Project, tmp_path: Path, fake: FakeMmdebstrap
) -> None:
    write_stack(project)
    dead = f"127.0.0.1:{free_port()}/{project.stack}"  # nothing listens there
    a = machine(project, tmp_path, "a", dead)
    proc = a.cli("build", "--json")
    assert proc.returncode == 0, proc.stderr
    results = {r["image"]: r for r in json.loads(proc.stdout)}
    assert {n: r["status"] for n, r in results.items()} == dict.fromkeys(IMAGES, "built")
    warnings = [line for line in proc.stderr.splitlines() if "did not answer" in line]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith(f"envkit: the cache {dead} (from ENVKIT_CACHE) did not answer")
    assert all(
        r["cache"].startswith(f"not pulled: the cache {dead} did not answer") for r in results.values()
    )
    pushing = a.cli("build", "--push")  # a push cannot be done: an error with the fix, after the build
    assert pushing.returncode == 1
    assert "not pushed to the cache" in pushing.stderr and "docker login 127.0.0.1" in pushing.stderr
    # status and config say which cache is in use, and what set it
    status = a.cli("status")
    assert status.returncode == 0, status.stderr
    assert f"cache: {dead} (from ENVKIT_CACHE)" in status.stdout
    shown = a.cli("config", "--json", ENVKIT_CACHE_PUSH="1")
    assert json.loads(shown.stdout)["cache"] == {"repository": dead, "source": "ENVKIT_CACHE", "push": True}
    assert json.loads(a.cli("config", "--json", ENVKIT_CACHE="").stdout)["cache"] is None


def test_a_registry_that_does_not_answer_is_waited_for_briefly_and_never_by_a_warm_no_op(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\npull = "never"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", f"FROM {project.base}\nCOPY . /app/\n")
    project.write("images/app/a.txt", "app\n")
    with silent_registry() as silent:
        a = machine(project, tmp_path, "a", f"{silent.host}/{project.stack}")
        started = time.monotonic()
        proc = a.cli("build", "--json")
        cold = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)[0]["status"] == "built"
        assert sum("did not answer" in line for line in proc.stderr.splitlines()) == 1, proc.stderr
        assert silent.accepted >= 1  # it was asked...
        assert cold < cache.LOOKUP_TIMEOUT + 15  # ...for a few seconds only

        # The warm no-op, in this process: no lookup, no connection to the registry, and no
        # slower than without a cache.
        config = load(project.root, environ={})
        lookups: list[str] = []
        monkeypatch.setattr(Daemon, "distribution", lambda self, ref, **kw: lookups.append(ref))
        accepted = silent.accepted
        settings = {
            "with": Settings.from_env(a.env()),
            "without": Settings.from_env({k: v for k, v in a.env().items() if k != "ENVKIT_CACHE"}),
        }
        assert settings["with"].cache and settings["without"].cache is None
        daemon = Daemon()
        try:
            seconds: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(3):
                for which in ("with", "without"):
                    started = time.monotonic()
                    [result] = build_mod.ensure(config, daemon, settings=settings[which])
                    seconds[which].append(time.monotonic() - started)
                    assert result.status == "cached"
        finally:
            daemon.close()
        assert lookups == [] and silent.accepted == accepted
        assert min(seconds["with"]) < min(seconds["without"]) + 0.5, seconds


# -- 5. two checkouts at once against one cache: each image made once per machine, pushed once -------


def write_concurrent_stack(project: Project) -> None:
    project.write(
        "envkit.toml",
        f'[stack]\nname = "{project.stack}"\npull = "never"\n\n'
        "[images.base]\n\n[images.child]\n\n[images.sib]\n",
    )
    # the RUN widens the window in which the second process finds the first one making base
    project.write("images/base/Dockerfile", f"FROM {project.base}\nCOPY . /base/\nRUN sleep 1\n")
    project.write("images/base/unique.txt", f"{project.stack}\n")
    project.write("images/child/Dockerfile", "FROM base\nCOPY . /child/\n")
    project.write("images/child/unique.txt", f"{project.stack}\n")
    project.write("images/sib/Dockerfile", f"FROM {project.base}\nCOPY . /sib/\n")
    project.write("images/sib/unique.txt", f"{project.stack}\n")


def run_together(machines: list[Machine], *args: str) -> list[dict[str, dict[str, Any]]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "envkit", "build", "--json", *args],
            cwd=m.root,
            env=m.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in machines
    ]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=180)
            assert proc.returncode == 0, stderr
            outputs.append({r["image"]: r for r in json.loads(stdout)})
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


def test_two_checkouts_at_once_make_each_image_once_and_push_it_once(
    project: Project, tmp_path: Path, registry: Registry, docker_client: docker.APIClient
) -> None:
    write_concurrent_stack(project)
    first = machine(project, tmp_path, "a1", registry.cache(project.stack))
    second = machine(project, tmp_path, "a2", first.cache, like=first)
    second.home = first.home  # one machine: one user's build locks (two checkouts)
    names = ("base", "child", "sib")

    with Events("type=image", "event=push", "event=pull") as events:
        outputs = run_together([first, second], "--push")
    for name in names:
        statuses = sorted(o[name]["status"] for o in outputs)
        assert statuses == ["built", "cached"], (name, outputs)
    keys = {name: outputs[0][name]["key"] for name in names}
    assert events.refs(project.stack, "push") == {f"{first.cache}/{n}:{keys[n]}": 1 for n in names}
    for name in names:
        assert sum(o[name]["pushed"] for o in outputs) == 1

    # Another machine, two checkouts at once, a warm cache: each image pulled once, none built.
    remove_stack_images(docker_client, project.stack)
    third = machine(project, tmp_path, "b1", first.cache, like=first)
    fourth = machine(project, tmp_path, "b2", first.cache, like=first)
    fourth.home = third.home
    with Events("type=image", "event=pull", "event=push", "type=container", "event=create") as events:
        outputs = run_together([third, fourth])
    for name in names:
        statuses = sorted(o[name]["status"] for o in outputs)
        assert statuses == ["cached", "pulled"], (name, outputs)
    assert events.refs(project.stack, "pull") == {f"{first.cache}/{n}:{keys[n]}": 1 for n in names}
    assert events.of(project.stack, "push") == [] and events.of(project.stack, "create") == []


# -- 6. `envkit e2e` on a fresh machine with a warm cache pulls everything and builds nothing ---------

E2E_TESTS = """
import urllib.request

import pytest

pytestmark = pytest.mark.services("web")


def test_web_answers(envkit_stack):
    assert urllib.request.urlopen(envkit_stack.url("web", 8000) + "/hostname", timeout=10).status == 200
"""


@pytest.fixture
def fresh_checkout(stack_project: StackProject, tmp_path: Path) -> Iterator[StackProject]:
    """A second checkout of ``stack_project`` (a copy without its state): machine B's."""
    root = tmp_path / "checkout-b"
    other = StackProject(
        project=Project(root=root, stack=stack_project.project.stack, base=stack_project.project.base),
        client=stack_project.client,
    )
    yield other
    assert not other.cleanup(), "envkit e2e left its stack behind"


def test_e2e_on_a_fresh_machine_with_a_warm_cache_pulls_everything_and_builds_nothing(
    stack_project: StackProject, fresh_checkout: StackProject, tmp_path: Path, registry: Registry
) -> None:
    sp = stack_project
    sp.write_stack(extra_images="[images.tools]\n")
    sp.project.write("images/tools/Dockerfile", "FROM bb\nCOPY . /tools/\n")
    sp.project.write("images/tools/t.txt", "tools\n")
    sp.project.write("e2e/test_web.py", E2E_TESTS)
    a = machine(sp.project, tmp_path, "a", registry.cache(sp.project.stack))
    assert {r["status"] for r in a.build("--push").values()} == {"built"}
    remove_stack_images(sp.client, sp.project.stack)

    b = machine(sp.project, tmp_path, "b", a.cache, like=a)
    assert b.root == fresh_checkout.root
    with Events("type=container", "event=create", "type=image", "event=pull") as events:
        run = b.cli("e2e", "--path", "e2e", "--workers", "1", ENVKIT_GRACE="0")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "images: 0 built, 2 pulled, 0 cached" in run.stdout, run.stdout
    assert "tests: 1 passed" in run.stdout
    assert sum(events.refs(sp.project.stack, "pull").values()) == 2
    builders = [
        e for e in events.of(sp.project.stack, "create") if labels.SERVICE not in e["Actor"]["Attributes"]
    ]
    assert builders == [], "a builder ran on machine B"
