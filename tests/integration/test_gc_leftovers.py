"""Untagged images a build left behind, against the real engine: `envkit gc` removes this
stack's, and nothing else; a classic build that fails after the engine made its image removes it.

A build killed between the engine making the image and envkit tagging it leaves an image that
carries envkit's labels and no tag. The tests make such leftovers for real: the classic builder
(:func:`envkit.images.classic.build`, POST /build) builds the project's image with envkit's
labels and returns its ID, and nothing tags it. The Dockerfiles have no ``RUN``, so that every
engine can build them (Podman in a container cannot run one). Everything a test creates is
removed at its end, also when it fails: images by ID, containers by ID, and whatever carries
the test's stack label (the ``project`` fixture).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from conftest import Project
from docker.errors import ImageNotFound, NotFound

import envkit.images.build
from envkit.config.find import load
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import BuildError, EngineUnreachable
from envkit.images import classic
from envkit.images.gc import gc
from envkit.progress import Silent
from envkit.settings import Settings

pytestmark = pytest.mark.docker


class Leftovers:
    """The images and containers a test makes, removed at its end whatever happens."""

    def __init__(self, project: Project, client: docker.APIClient, daemon: Daemon) -> None:
        self.project = project
        self.client = client
        self.daemon = daemon
        self.images: list[str] = []
        self.containers: list[str] = []

    def stack_file(self) -> None:
        self.project.write("envkit.toml", f'[stack]\nname = "{self.project.stack}"\n\n[images.app]\n')
        self.project.write("images/app/Dockerfile", f"FROM {self.project.base}\nCOPY a.txt /a.txt\n")
        self.project.write("images/app/a.txt", f"{uuid.uuid4()}\n")

    def image_labels(self, *, stack: str | None = None, key: str | None = None) -> dict[str, str]:
        """The labels envkit's build gives the project's image ``app`` (another stack's, or
        another key's, when asked)."""
        config = load(self.project.root)
        the_plan = envkit.images.build.plan(config, self.daemon, names=["app"])
        return {
            labels.PROJECT: stack or self.project.stack,
            labels.IMAGE: "app",
            labels.KEY: key or the_plan.inputs["app"].key,
            labels.BUILDER: "classic",
        }

    def classic_build(self, image_labels: dict[str, str]) -> str:
        """The project's image ``app`` by the classic builder, with ``image_labels``, untagged:
        a build that was killed before envkit tagged it."""
        config = load(self.project.root)
        the_plan = envkit.images.build.plan(config, self.daemon, names=["app"])
        image_id = classic.build(
            self.daemon,
            config.images["app"],
            the_plan.inputs["app"],
            parents={},
            labels=image_labels,
            progress=Silent(),
        )
        self.images.append(image_id)
        return image_id

    def raw_build(self, dockerfile: str) -> str:
        """An image built by POST /build from ``dockerfile`` (and a file ``f.txt``), untagged."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, text in (("Dockerfile", dockerfile), ("f.txt", f"{uuid.uuid4()}\n")):
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        size = buf.tell()
        buf.seek(0)
        image_id = self.daemon.build(  # a failed build raises
            buf, size, dockerfile="Dockerfile", buildargs={}, target=None, platform=None, stall=120
        )
        assert image_id
        self.images.append(image_id)
        return image_id

    def container(self, image: str) -> str:
        created = self.client.create_container(
            image, command=["true"], labels={labels.PROJECT: self.project.stack}
        )
        self.containers.append(str(created["Id"]))
        return str(created["Id"])

    def exists(self, image: str) -> bool:
        try:
            self.client.inspect_image(image)
        except ImageNotFound:
            return False
        return True

    def dangling(self) -> set[str]:
        """The IDs of the engine's dangling images (GET /images/json, filter dangling=true)."""
        return {str(i["Id"]) for i in self.client.images(filters={"dangling": True})}

    def cleanup(self) -> None:
        for cid in self.containers:
            with contextlib.suppress(NotFound):
                self.client.remove_container(cid, force=True, v=True)
        for image in reversed(self.images):
            with contextlib.suppress(NotFound, docker.errors.APIError):
                self.client.remove_image(image, force=True)


@pytest.fixture
def leftovers(project: Project, docker_client: docker.APIClient) -> Iterator[Leftovers]:
    daemon = Daemon()
    made = Leftovers(project, docker_client, daemon)
    made.stack_file()
    try:
        yield made
    finally:
        made.cleanup()
        daemon.close()
    for image in made.images:
        assert not made.exists(image), f"the test left {image}"


def gc_json(project: Project, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(project.cli("gc", "--json", *args, check=True).stdout)
    return data


def test_gc_removes_this_stacks_untagged_leftovers_and_nothing_else(
    project: Project, leftovers: Leftovers
) -> None:
    mine_labels = leftovers.image_labels()
    mine = leftovers.classic_build(mine_labels)  # the current key's build, killed before its tag
    in_use = leftovers.classic_build(leftovers.image_labels(key="0" * 64))  # an old key's
    leftovers.container(in_use)
    other_stack = leftovers.classic_build(leftovers.image_labels(stack=f"t-other-{uuid.uuid4().hex[:8]}"))
    unlabelled = leftovers.raw_build("FROM scratch\nCOPY f.txt /f.txt\n")
    assert len({mine, in_use, other_stack, unlabelled}) == 4
    for image in (mine, in_use, other_stack, unlabelled):
        assert leftovers.client.inspect_image(image)["RepoTags"] in ([], None)
    assert {mine, other_stack, unlabelled} <= leftovers.dangling()

    # A build of that tag is running (it holds the tag's build lock): its image is left alone.
    tag = envkit.images.build.image_tag(project.stack, "app", mine_labels[labels.KEY])
    settings = Settings.from_env()
    with envkit.images.build._machine_lock(tag, "app", Silent(), settings.lock_dir):
        result = gc(load(project.root), leftovers.daemon, dry_run=True, settings=settings)
    assert result.removed == [in_use], result
    assert leftovers.exists(mine)

    dry = gc_json(project, "--dry-run")
    assert sorted(dry["removed"]) == sorted([mine, in_use]), dry
    assert sorted(dry["untagged"]) == sorted([mine, in_use]), dry
    for image in (mine, in_use, other_stack, unlabelled):
        assert leftovers.exists(image)  # a dry run removes nothing

    done = gc_json(project)
    assert done["removed"] == [mine], done
    assert done["kept_in_use"] == [in_use], done
    assert sorted(done["untagged"]) == sorted([mine, in_use]), done
    assert not leftovers.exists(mine)
    for image in (in_use, other_stack, unlabelled):
        assert leftovers.exists(image)
    assert mine not in leftovers.dangling()

    text = project.cli("gc", check=True).stdout
    assert f"kept {in_use} (a container uses it)" in text, text

    leftovers.client.remove_container(leftovers.containers[-1], force=True)
    leftovers.containers.pop()  # removed: the test's cleanup need not
    assert gc_json(project) == {
        "removed": [in_use],
        "kept_in_use": [],
        "untagged": [in_use],
        "containers": [],
    }
    assert not leftovers.exists(in_use)
    assert leftovers.exists(other_stack) and leftovers.exists(unlabelled)
    assert gc_json(project) == {"removed": [], "kept_in_use": [], "untagged": [], "containers": []}


def test_gc_leaves_an_untagged_image_made_from_one_of_the_stacks_images(
    project: Project, leftovers: Leftovers
) -> None:
    """It carries the stack's labels, inherited, not envkit's LABEL: the step of a build on the
    stack's image (or the cache a failed one keeps for its next try), or someone's own image."""
    (built,) = envkit.images.build.ensure(load(project.root), leftovers.daemon)
    derived = leftovers.raw_build(f"FROM {built.tag}\nCOPY f.txt /f.txt\n")
    found = leftovers.client.inspect_image(derived)["Config"]["Labels"]
    assert (found[labels.PROJECT], found[labels.KEY]) == (project.stack, built.key)
    assert derived in leftovers.dangling()

    assert gc_json(project) == {"removed": [], "kept_in_use": [], "untagged": [], "containers": []}
    assert leftovers.exists(derived)
    assert leftovers.exists(built.tag)


# `envkit build` killed (SIGKILL) the moment it would tag the image the classic builder made.
KILLED_AT_TAG = """\
import os, signal, sys
from envkit.docker.engine import Daemon

def tag(self, image, reference):
    print("LEFTOVER", image, file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

Daemon.tag = tag
from envkit.cli import main
main()
"""


def test_gc_removes_what_an_envkit_build_killed_before_tagging_left(
    project: Project, leftovers: Leftovers
) -> None:
    # ONBUILD: the classic builder's (the assembler cannot), and it runs no container.
    project.write("images/app/Dockerfile", f"FROM {project.base}\nCOPY a.txt /a.txt\nONBUILD RUN true\n")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_TAG, "build"],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    found = re.search(r"^LEFTOVER (\S+)$", killed.stderr, re.MULTILINE)
    assert killed.returncode == -signal.SIGKILL and found, (killed.returncode, killed.stderr)
    leftover = found.group(1)
    leftovers.images.append(leftover)
    image = leftovers.client.inspect_image(leftover)
    assert image["RepoTags"] in ([], None)
    assert image["Config"]["Labels"][labels.PROJECT] == project.stack
    assert image["Config"]["Labels"][labels.BUILDER] == "classic"

    assert gc_json(project) == {
        "removed": [image["Id"]],
        "kept_in_use": [],
        "untagged": [image["Id"]],
        "containers": [],
    }
    assert not leftovers.exists(leftover)
    built = json.loads(project.cli("build", "--json", check=True).stdout)
    assert [(b["image"], b["status"], b["builder"]) for b in built] == [("app", "built", "classic")]
    assert leftovers.exists(built[0]["tag"])


class _Broken:
    """``Daemon.build`` whose stream breaks right after the builder named its image, or that
    never names it (``on_image``), only in ``Successfully built ID``; the image it made is noted."""

    def __init__(self, daemon: Daemon, *, drop_aux: bool) -> None:
        self.build = daemon.build
        self.drop_aux = drop_aux
        self.made = ""

    def __call__(
        self, *args: Any, on_image: Callable[[str], None] | None = None, **kwargs: Any
    ) -> str | None:
        def named(image_id: str) -> None:
            self.made = image_id
            if self.drop_aux:
                return
            if on_image is not None:
                on_image(image_id)
            raise EngineUnreachable("POST /build: the engine did not answer within 1s", timed_out=True)

        made = self.build(*args, on_image=named, **kwargs)
        return None if self.drop_aux else made


@pytest.mark.parametrize("drop_aux", [False, True], ids=["stream-breaks-after-aux", "no-aux"])
def test_a_classic_build_that_fails_after_the_engine_made_its_image_removes_it(
    project: Project, leftovers: Leftovers, monkeypatch: pytest.MonkeyPatch, drop_aux: bool
) -> None:
    broken = _Broken(leftovers.daemon, drop_aux=drop_aux)
    monkeypatch.setattr(leftovers.daemon, "build", broken)
    with pytest.raises(BuildError) as caught:
        leftovers.classic_build(leftovers.image_labels())
    assert broken.made
    leftovers.images.append(broken.made)  # removed at the end, should the build have left it
    assert ("no image ID" if drop_aux else "printed nothing") in str(caught.value)
    assert not leftovers.exists(broken.made)
    # The stack's base is still there: only the image the failed build made went.
    assert leftovers.exists(project.base)


def test_gc_removes_the_lookup_containers_a_killed_build_left_and_nothing_else(
    project: Project, leftovers: Leftovers
) -> None:
    """An assembly looks into a base through a container it creates, never starts, and removes;
    killed meanwhile, it leaves that container, labelled as a lookup for the image it built: gc
    removes this stack's, never another stack's, nor a started one, nor one while that image's
    build runs."""
    mine = leftovers.image_labels()
    others = leftovers.image_labels(stack=f"{project.stack}-other")

    def lookup(found_labels: dict[str, str], *, start: bool = False) -> str:
        created = leftovers.client.create_container(
            project.base,
            command=["sleep", "30"] if start else ["/envkit-never-started"],
            labels={**found_labels, labels.LOOKUP: "1"},
        )
        leftovers.containers.append(str(created["Id"]))
        if start:
            leftovers.client.start(created)
        return str(created["Id"])

    left, other, started = lookup(mine), lookup(others), lookup(mine, start=True)
    config = load(project.root)
    settings = Settings.from_env()
    tag = envkit.images.build.image_tag(project.stack, "app", mine[labels.KEY])
    from envkit.images.gc import _build_lock

    with _build_lock(settings.lock_dir, tag) as free:  # that image's build is running
        assert free
        assert gc(config, leftovers.daemon, settings=settings).containers == []
    dry = gc_json(project, "--dry-run")
    assert dry["containers"] == [left], dry
    done = gc_json(project)
    assert done["containers"] == [left], done
    remaining = {
        c["Id"] for c in leftovers.client.containers(all=True, filters={"label": f"{labels.LOOKUP}=1"})
    }
    assert left not in remaining and {other, started} <= remaining
