"""envkit's content-addressed builds against the real Docker daemon.

Every test gets a throwaway project with its own stack name (``project``), a
docker client whose ``build`` is counted (``spy``), and a private lock
directory. The stack used by most tests has three images:

* ``base``:  ``FROM <busybox>``, copies its context (files, an executable, a
  symlink, a sub folder, ``*.log`` files hidden by ``.dockerignore``);
* ``child``: ``FROM base`` (the stack's own image), copies its context;
* ``sib``:   a two-stage Dockerfile with ``target = "two"`` and a build arg.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Project, import_busybox, remove_stack_images
from docker.errors import ImageNotFound
from engine_client import EngineFacts

import envkit.images.assemble
import envkit.images.build
import envkit.images.classic
from envkit.config.find import load
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import BaseImageError, BuildError
from envkit.images.build import ImageResult

pytestmark = pytest.mark.docker

IMAGES = ("base", "child", "sib")


# --------------------------------------------------------------------------- fixtures


class BuildSpy:
    """A real docker client whose image-making calls (``build`` for the classic builder, ``load``
    for envkit's assembler) are counted, and the images each builder was asked to make."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.builds = 0
        self.contexts: list[str] = []  # images whose build context went to the classic builder
        self.assembled: list[str] = []  # images the assembler was asked for
        self._lock = threading.Lock()
        for name in ("build", "load"):
            original = getattr(daemon, name)

            def counting(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                with self._lock:
                    self.builds += 1
                return _original(*args, **kwargs)

            setattr(daemon, name, counting)

    def ensure(self, root: Path, **kwargs: Any) -> dict[str, ImageResult]:
        """``envkit.images.build.ensure`` on the project at ``root``; counters start from zero."""
        self.builds = 0
        self.contexts = []
        self.assembled = []
        results = envkit.images.build.ensure(load(root), self.daemon, **kwargs)
        return {r.image: r for r in results}

    def sent(self) -> set[str]:
        """The images made: their context sent to the classic builder, or assembled."""
        return set(self.contexts) | set(self.assembled)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[BuildSpy]:
    daemon = Daemon()
    the_spy = BuildSpy(daemon)
    write_context = envkit.images.classic.write_context

    def recording_write_context(fileobj: Any, spec: Any, inputs: Any, text: str) -> None:
        with the_spy._lock:
            the_spy.contexts.append(spec.name)
        write_context(fileobj, spec, inputs, text)

    monkeypatch.setattr(envkit.images.classic, "write_context", recording_write_context)
    assemble = envkit.images.assemble.build

    def recording_assemble(daemon: Any, spec: Any, *args: Any, **kwargs: Any) -> str:
        with the_spy._lock:
            the_spy.assembled.append(spec.name)
        return assemble(daemon, spec, *args, **kwargs)

    monkeypatch.setattr(envkit.images.assemble, "build", recording_assemble)
    yield the_spy
    daemon.close()


# --------------------------------------------------------------------------- the stack


def write_stack_file(project: Project, *, greeting: str = "hello", target: str = "two") -> None:
    project.write(
        "envkit.toml",
        f"""\
[stack]
name = "{project.stack}"

[images.base]

[images.child]

[images.sib]
args = {{ GREETING = "{greeting}" }}
target = "{target}"
""",
    )


def make_stack(project: Project) -> None:
    write_stack_file(project)
    project.write("images/base/Dockerfile", f"FROM {project.base}\nCOPY . /base/\n")
    project.write("images/base/a.txt", "alpha-1\n")
    project.write("images/base/run.sh", "#!/bin/sh\necho run\n", mode=0o755)
    project.write("images/base/sub/b.txt", "bravo\n")
    project.write("images/base/sub2/d.txt", "delta\n")
    project.write("images/base/debug.log", "noise\n")
    project.write("images/base/keep.log", "kept\n")
    project.write("images/base/.dockerignore", "*.log\n")
    os.symlink("a.txt", project.root / "images/base/link")
    project.write("images/child/Dockerfile", "FROM base\nCOPY . /child/\n")
    project.write("images/child/c.txt", "charlie\n")
    project.write(
        "images/sib/Dockerfile",
        f"ARG GREETING=hi\nFROM {project.base} AS one\nCOPY . /sib/\n\nFROM one AS two\n",
    )
    project.write("images/sib/s.txt", "sierra\n")


def statuses(results: dict[str, ImageResult]) -> dict[str, str]:
    return {name: r.status for name, r in results.items()}


def cold_build(spy: BuildSpy, project: Project) -> dict[str, ImageResult]:
    make_stack(project)
    results = spy.ensure(project.root)
    assert statuses(results) == dict.fromkeys(IMAGES, "built")
    assert spy.builds == 3
    return results


def cli_json(project: Project, *args: str) -> list[dict[str, Any]]:
    proc = project.cli("build", "--json", *args, check=True)
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    return data


def image_key(client: docker.APIClient, tag: str) -> str:
    found = client.inspect_image(tag)["Config"]["Labels"] or {}
    return str(found.get(labels.KEY, ""))


def layers(client: docker.APIClient, ref: str) -> list[str]:
    return list(client.inspect_image(ref)["RootFS"]["Layers"])


def stands_on(client: docker.APIClient, ref: str, base_layers: list[str]) -> bool:
    """``ref`` is built on the image whose layers are ``base_layers``: its own begin with them.

    Every engine reports an image's layers; the link to a parent image is not there to read
    (``Parent`` is the classic store's, set by its classic builder only; Docker 28 leaves the
    config's ``Image`` empty, and the containerd store never had either)."""
    own = layers(client, ref)
    return own[: len(base_layers)] == base_layers


# --------------------------------------------------------------------------- 1. cold and warm


def test_cold_build_then_warm_run_builds_nothing_and_sends_no_context(
    project: Project, spy: BuildSpy, docker_client: docker.APIClient
) -> None:
    cold = cold_build(spy, project)
    assert spy.sent() == set(IMAGES)
    for name, result in cold.items():
        assert result.tag == f"{project.stack}/{name}:{result.key[:16]}"
        assert image_key(docker_client, result.tag) == result.key
    # child was built on the stack's own base image (which adds a layer to busybox), not on something else
    assert len(layers(docker_client, cold["base"].tag)) > len(layers(docker_client, project.base))
    assert stands_on(docker_client, cold["child"].tag, layers(docker_client, cold["base"].tag))
    assert cold["child"].key != cold["base"].key

    warm = spy.ensure(project.root)
    assert statuses(warm) == dict.fromkeys(IMAGES, "cached")
    assert spy.builds == 0, "a warm run must not call the builder"
    assert spy.contexts == [], "a warm run must not write a build context"
    assert spy.assembled == [], "a warm run must not assemble an image"
    assert {n: r.key for n, r in warm.items()} == {n: r.key for n, r in cold.items()}

    data = cli_json(project)
    assert [(d["image"], d["status"]) for d in data] == [(n, "cached") for n in IMAGES]
    assert {d["image"]: d["key"] for d in data} == {n: r.key for n, r in cold.items()}


# --------------------------------------------------------------------------- 2. what rebuilds


def _base(project: Project, relative: str = "") -> Path:
    return project.root / "images/base" / relative


def edit_same_size_same_mtime(project: Project) -> None:
    path = _base(project, "a.txt")
    before = path.stat()
    path.write_text("alpha-2\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # like touch -r
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def chmod_executable(project: Project) -> None:
    path = _base(project, "a.txt")
    path.chmod(path.stat().st_mode | 0o111)


def rename_file(project: Project) -> None:
    _base(project, "sub/b.txt").rename(_base(project, "sub/b-renamed.txt"))


def move_between_folders(project: Project) -> None:
    _base(project, "sub/b.txt").rename(_base(project, "sub2/b.txt"))


def retarget_symlink(project: Project) -> None:
    link = _base(project, "link")
    link.unlink()
    os.symlink("sub/b.txt", link)


def add_file(project: Project) -> None:
    project.write("images/child/new.txt", "new\n")


def delete_file(project: Project) -> None:
    _base(project, "run.sh").unlink()


def reinclude_by_negation(project: Project) -> None:
    project.write("images/base/.dockerignore", "*.log\n!keep.log\n")


def edit_dockerfile(project: Project) -> None:
    project.write("images/child/Dockerfile", "FROM base\n# a comment is an edit too\nCOPY . /child/\n")


def change_build_arg(project: Project) -> None:
    write_stack_file(project, greeting="bonjour")


def change_target(project: Project) -> None:
    write_stack_file(project, target="one")


def edit_sibling_content(project: Project) -> None:
    project.write("images/sib/s.txt", "sierra-2\n")


BASE_AND_CHILD = frozenset({"base", "child"})


@dataclass(frozen=True)
class Change:
    mutate: Callable[[Project], None]
    rebuilt: frozenset[str]  # the images that must rebuild; the others stay cached
    reasons: tuple[str, ...]  # what --explain must say about the changed image


def change(mutate: Callable[[Project], None], rebuilt: Iterable[str], *reasons: str) -> Any:
    return pytest.param(Change(mutate, frozenset(rebuilt), reasons), id=mutate.__name__.replace("_", "-"))


REBUILDS = [
    change(edit_same_size_same_mtime, BASE_AND_CHILD, "file changed: a.txt (content)"),
    change(chmod_executable, BASE_AND_CHILD, "file changed: a.txt (mode 644 -> 755)"),
    change(rename_file, BASE_AND_CHILD, "file added: sub/b-renamed.txt", "file removed: sub/b.txt"),
    change(move_between_folders, BASE_AND_CHILD, "file added: sub2/b.txt", "file removed: sub/b.txt"),
    change(retarget_symlink, BASE_AND_CHILD, "file changed: link (link target a.txt -> sub/b.txt)"),
    change(add_file, {"child"}, "file added: new.txt"),
    change(delete_file, BASE_AND_CHILD, "file removed: run.sh"),
    change(reinclude_by_negation, BASE_AND_CHILD, "file added: keep.log"),
    change(edit_dockerfile, {"child"}, "the Dockerfile changed"),
    change(change_build_arg, {"sib"}, "build arg changed: GREETING: hello -> bonjour"),
    change(change_target, {"sib"}, "target changed: two -> one"),
    change(edit_sibling_content, {"sib"}, "file changed: s.txt (content)"),
]


@pytest.mark.parametrize("case", REBUILDS)
def test_change_rebuilds_exactly_the_image_and_its_children(
    project: Project, spy: BuildSpy, docker_client: docker.APIClient, case: Change
) -> None:
    rebuilt = case.rebuilt
    before = cold_build(spy, project)
    base_layers_before = layers(docker_client, before["base"].tag)
    touched = "base" if rebuilt == BASE_AND_CHILD else next(iter(rebuilt))

    case.mutate(project)
    after = spy.ensure(project.root)

    assert statuses(after) == {n: "built" if n in rebuilt else "cached" for n in IMAGES}
    assert spy.sent() == rebuilt
    assert spy.builds == len(rebuilt)
    for name in IMAGES:
        if name in rebuilt:
            assert after[name].key != before[name].key
            assert image_key(docker_client, after[name].tag) == after[name].key
        else:
            assert after[name].key == before[name].key
            assert after[name].reasons == []
    for reason in case.reasons:
        assert reason in after[touched].reasons, after[touched].reasons
    if "child" in rebuilt and touched == "base":
        child_reasons = after["child"].reasons
        assert any(r.startswith("parent base changed") for r in child_reasons), child_reasons
        # the new child stands on the new base
        assert stands_on(docker_client, after["child"].tag, layers(docker_client, after["base"].tag))
        assert not stands_on(docker_client, after["child"].tag, base_layers_before)

    # and the new state is stable
    again = spy.ensure(project.root)
    assert statuses(again) == dict.fromkeys(IMAGES, "cached")
    assert spy.builds == 0


def test_retagged_local_base_rebuilds_the_images_built_on_it(
    project: Project, spy: BuildSpy, docker_client: docker.APIClient
) -> None:
    repository, tag = f"envkit-test/{project.stack}", "base"
    local = import_busybox(docker_client, repository, tag, project.stack)
    first_id = docker_client.inspect_image(local)["Id"]
    project.write(
        "envkit.toml",
        f'[stack]\nname = "{project.stack}"\n\n[images.app]\n\n[images.app2]\n\n[images.other]\n',
    )
    project.write("images/app/Dockerfile", f"FROM {local}\nCOPY . /app/\n")
    project.write("images/app/f.txt", "app\n")
    project.write("images/app2/Dockerfile", "FROM app\n")
    project.write("images/other/Dockerfile", f"FROM {project.base}\nCOPY . /other/\n")
    cold = spy.ensure(project.root)
    assert statuses(cold) == {"app": "built", "app2": "built", "other": "built"}

    first_layers = layers(docker_client, local)
    # the same repository:tag now names another image (another file in it: other layers)
    import_busybox(docker_client, repository, tag, project.stack, files={"etc/retagged": "yes\n"})
    assert docker_client.inspect_image(local)["Id"] != first_id

    after = spy.ensure(project.root)
    assert statuses(after) == {"app": "built", "app2": "built", "other": "cached"}
    assert spy.sent() == {"app", "app2"}
    app_reasons, app2_reasons = after["app"].reasons, after["app2"].reasons
    assert any(r.startswith(f"base image changed: {local}") for r in app_reasons), app_reasons
    assert any(r.startswith("parent app changed") for r in app2_reasons), app2_reasons
    assert stands_on(docker_client, after["app"].tag, layers(docker_client, local))
    assert not stands_on(docker_client, after["app"].tag, first_layers)


# --------------------------------------------------------------------------- 3. what does not


def touch_mtime_only(project: Project) -> None:
    for path in (_base(project, "a.txt"), project.root / "images/sib/s.txt"):
        st = path.stat()
        later = st.st_mtime_ns + 3_600 * 10**9
        os.utime(path, ns=(later, later))


def add_ignored_file(project: Project) -> None:
    project.write("images/base/new.log", "ignored\n")


@pytest.mark.parametrize(
    "mutate",
    [pytest.param(touch_mtime_only, id="mtime-only"), pytest.param(add_ignored_file, id="ignored-file")],
)
def test_change_that_does_not_reach_the_image_rebuilds_nothing(
    project: Project, spy: BuildSpy, mutate: Callable[[Project], None]
) -> None:
    before = cold_build(spy, project)
    mutate(project)
    after = spy.ensure(project.root)
    assert statuses(after) == dict.fromkeys(IMAGES, "cached")
    assert spy.builds == 0
    assert {n: r.key for n, r in after.items()} == {n: r.key for n, r in before.items()}


@pytest.mark.parametrize("copy_state", [False, True], ids=["fresh-state", "copied-state"])
def test_checkout_copied_elsewhere_has_the_same_keys(
    project: Project, spy: BuildSpy, tmp_path: Path, copy_state: bool
) -> None:
    before = cold_build(spy, project)
    assert (project.root / ".envkit").is_dir()
    copy = tmp_path / "elsewhere" / "checkout"
    ignore = None if copy_state else shutil.ignore_patterns(".envkit")
    shutil.copytree(project.root, copy, symlinks=True, ignore=ignore)
    assert (copy / ".envkit").is_dir() == copy_state
    assert os.readlink(copy / "images/base/link") == "a.txt"

    config = load(copy)
    assert config.root == copy.resolve()
    assert config.state_dir == copy.resolve() / ".envkit"
    after = spy.ensure(copy)
    assert statuses(after) == dict.fromkeys(IMAGES, "cached")
    assert spy.builds == 0
    assert {n: r.key for n, r in after.items()} == {n: r.key for n, r in before.items()}

    # and as a user would run it there: ENVKIT_ROOT points at the copy
    moved = Project(root=copy, stack=project.stack, base=project.base)
    data = cli_json(moved)
    assert {d["image"]: (d["status"], d["key"]) for d in data} == {
        n: ("cached", r.key) for n, r in before.items()
    }


class Recorder:
    """A Progress that keeps every event in the order it happened (from any thread)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def log(self, image: str, line: str) -> None:
        with self._lock:
            self.events.append((image, "log"))

    def note(self, image: str, message: str, state: object = None) -> None:
        kind = (
            "done" if message.startswith("built ") else "start" if message.startswith("building") else "note"
        )
        with self._lock:
            self.events.append((image, kind))

    def first(self, image: str, kind: str) -> int:
        return self.events.index((image, kind))


def test_independent_images_build_side_by_side_and_children_after_parents(
    project: Project, spy: BuildSpy
) -> None:
    project.write(
        "envkit.toml",
        f'[stack]\nname = "{project.stack}"\n\n[images.left]\n[images.right]\n[images.child]\n',
    )
    for name in ("left", "right"):  # each build takes a while, so side by side they overlap
        project.write(f"images/{name}/Dockerfile", f"FROM {project.base}\nRUN sleep 2\n")
    project.write("images/child/Dockerfile", "FROM left\nCOPY . /c/\n")
    recorder = Recorder()
    results = envkit.images.build.ensure(load(project.root), spy.daemon, progress=recorder)
    assert [r.status for r in results] == ["built"] * 3
    first_done = min(recorder.first("left", "done"), recorder.first("right", "done"))
    assert recorder.first("left", "log") < first_done
    assert recorder.first("right", "log") < first_done  # both were building at once
    assert recorder.first("child", "start") > recorder.first("left", "done")  # after its parent


# --------------------------------------------------------------------------- 5. failures


# How the engine's builder says a RUN step exited 3: Docker's classic builder, Podman's buildah.
EXIT_3 = r"non-zero code: 3|exit status 3"


def test_failing_build_raises_build_error_and_leaves_no_tag(
    project: Project, spy: BuildSpy, docker_client: docker.APIClient
) -> None:
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.broken]\n\n[images.fine]\n')
    project.write("images/broken/Dockerfile", f"FROM {project.base}\nRUN echo about-to-fail && exit 3\n")
    project.write("images/fine/Dockerfile", f"FROM {project.base}\nCOPY . /fine/\n")

    with pytest.raises(BuildError) as caught:
        spy.ensure(project.root)
    err = caught.value
    assert err.image == "broken"
    assert re.search(EXIT_3, err.reason), err.reason
    assert err.build_log, "the tail of the build log must be kept"
    assert any("about-to-fail" in line for line in err.build_log), err.build_log
    assert len(err.build_log) <= envkit.images.classic.LOG_TAIL
    assert "about-to-fail" in str(err)

    tag = envkit.images.build.plan(load(project.root), spy.daemon).tag("broken")
    with pytest.raises(ImageNotFound):
        docker_client.inspect_image(tag)
    assert docker_client.images(name=f"{project.stack}/broken") == []

    proc = project.cli("build")
    assert proc.returncode != 0
    assert "envkit: error: image 'broken' failed to build" in proc.stderr
    assert re.search(EXIT_3, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert docker_client.images(name=f"{project.stack}/broken") == []


def test_ctrl_c_during_a_build_exits_at_once_and_leaves_nothing(
    project: Project, docker_client: docker.APIClient, engine_facts: EngineFacts
) -> None:
    engine_facts.require(
        "the test finds the RUN step's container by the builder's 'Running in <id>' line, which "
        "Docker's classic builder prints and Podman's does not",
        podman=False,
    )
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.slow]\n')
    project.write("images/slow/Dockerfile", f"FROM {project.base}\nRUN sleep 60\n")
    # envkit as a terminal starts it: Ctrl-C not ignored, whatever this process inherited (a
    # shell's background job starts with SIGINT ignored, and a program cannot tell)
    restore_ctrl_c = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.executable, [sys.executable, '-m', 'envkit', 'build'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", restore_ctrl_c],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        container = ""
        for line in proc.stderr:  # wait until the RUN step's container exists
            match = re.search(r"Running in ([0-9a-f]{12})", line)
            if match:
                container = match.group(1)
                break
        assert container, "the build never reached its RUN step"
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - interrupted < 10  # not after the 60 s build
        assert proc.returncode == 130
        assert "envkit: interrupted" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipes (left open, they warn in a later test)
    # The daemon cancels the build: its container goes, and no tag is ever applied.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and docker_client.containers(all=True, filters={"id": container}):
        time.sleep(0.2)
    assert not docker_client.containers(all=True, filters={"id": container})
    assert not [i for i in docker_client.images(filters={"label": f"{labels.PROJECT}={project.stack}"})]


def test_missing_base_with_pull_never_is_a_clear_error(project: Project, spy: BuildSpy) -> None:
    missing = f"envkit-test/absent-{uuid.uuid4().hex[:8]}:nope"
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", f"FROM {missing}\nCOPY . /app/\n")

    with pytest.raises(BaseImageError) as caught:
        spy.ensure(project.root, pull="never")
    assert caught.value.image == "app"
    assert caught.value.reference == missing
    assert spy.builds == 0

    proc = project.cli("build", "--pull", "never")
    assert proc.returncode != 0
    assert "envkit: error:" in proc.stderr
    assert missing in proc.stderr
    assert "'never'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_base_that_cannot_be_pulled_is_a_clear_error(project: Project, spy: BuildSpy) -> None:
    """Under the default policy a missing base is pulled; with no registry that fails cleanly."""
    missing = f"envkit-test/absent-{uuid.uuid4().hex[:8]}:nope"
    project.write("envkit.toml", f'[stack]\nname = "{project.stack}"\n\n[images.app]\n')
    project.write("images/app/Dockerfile", f"FROM {missing}\nCOPY . /app/\n")

    with pytest.raises(BaseImageError) as caught:
        spy.ensure(project.root)
    assert caught.value.reference == missing
    assert "pulling it failed" in caught.value.detail
    assert spy.builds == 0

    proc = project.cli("build")
    assert proc.returncode == 1
    assert f"base image {missing!r} is not available: pulling it failed" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- 6. explain


def test_explain_names_the_changed_file_and_a_removed_image(
    project: Project, spy: BuildSpy, docker_client: docker.APIClient
) -> None:
    cold_build(spy, project)
    project.write("images/child/c.txt", "charlie, edited\n")

    proc = project.cli("build", "--explain", check=True)
    lines = proc.stdout.splitlines()
    child_line = next(i for i, line in enumerate(lines) if line.startswith("child "))
    assert " built " in lines[child_line]
    assert lines[child_line + 1].strip() == "- file changed: c.txt (content)", proc.stdout
    base_line = next(i for i, line in enumerate(lines) if line.startswith("base "))
    assert " cached " in lines[base_line]
    assert lines[base_line + 1].strip() == "- inputs unchanged since the last build"
    assert "3 images: 1 built, 2 cached" in proc.stdout

    child_tag = next(d["tag"] for d in cli_json(project) if d["image"] == "child")
    docker_client.remove_image(child_tag)
    with pytest.raises(ImageNotFound):
        docker_client.inspect_image(child_tag)

    proc = project.cli("build", "--explain", check=True)
    lines = proc.stdout.splitlines()
    child_line = next(i for i, line in enumerate(lines) if line.startswith("child "))
    assert " built " in lines[child_line]
    assert lines[child_line + 1].strip() == "- the image was removed locally; its inputs are unchanged"
    assert "3 images: 1 built, 2 cached" in proc.stdout
    assert image_key(docker_client, child_tag)  # it is back


# --------------------------------------------------------------------------- gc


def test_gc_removes_only_this_stacks_stale_tags(
    project: Project, spy: BuildSpy, docker_client: docker.APIClient
) -> None:
    old = cold_build(spy, project)
    project.write("images/base/a.txt", "alpha-2 with other content\n")
    new = spy.ensure(project.root)
    assert statuses(new) == {"base": "built", "child": "built", "sib": "cached"}
    stale = {old["base"].tag, old["child"].tag}
    current = {r.tag for r in new.values()}

    # An image of another stack, even one tagged under this stack's prefix, is not ours.
    other_stack = f"t-other-{uuid.uuid4().hex[:8]}"
    impostor = import_busybox(docker_client, f"{project.stack}/impostor", "old", other_stack)
    try:
        proc = project.cli("gc", "--dry-run", "--json", check=True)
        assert set(json.loads(proc.stdout)["removed"]) == stale
        for tag in stale:
            docker_client.inspect_image(tag)  # a dry run removes nothing

        proc = project.cli("gc", "--json", check=True)
        assert set(json.loads(proc.stdout)["removed"]) == stale
        for tag in stale:
            with pytest.raises(ImageNotFound):
                docker_client.inspect_image(tag)
        for tag in current:
            docker_client.inspect_image(tag)
        assert docker_client.inspect_image(impostor)["Config"]["Labels"] == {labels.PROJECT: other_stack}

        again = spy.ensure(project.root)
        assert statuses(again) == dict.fromkeys(IMAGES, "cached")
        assert json.loads(project.cli("gc", "--json", check=True).stdout)["removed"] == []
    finally:
        remove_stack_images(docker_client, other_stack)
    with pytest.raises(ImageNotFound):
        docker_client.inspect_image(impostor)
