"""What the assembler knows of a parent image without a save: the canonical config from inspect
and history, and the file tree looked up path by path (envkit.images.parent); against real
engines in tests/integration/test_engines.py."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from envkit.docker import labels
from envkit.docker.engine import Container
from envkit.errors import DaemonError, EngineNotFound, EngineUnreachable
from envkit.images import gc, parent
from envkit.images.facts import Node
from envkit.images.parent import Ambiguous, PathEntry, Tree

API = "1.45"  # an engine that knows a Healthcheck's StartInterval (Docker 25 and later)
RAW = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-03-01T10:20:30.123456789Z",
    "author": "someone",
    "container": "abc",
    "docker_version": "20.10.24",
    "config": {
        "Hostname": "",
        "User": "",
        "Env": ["PATH=/bin", "A=1"],
        "Cmd": ["sh"],
        "Image": "sha256:11",
        "Labels": None,
        "OpenStdin": False,
        "WorkingDir": "/app",
        "ExposedPorts": {"80/tcp": {}},
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:d1", "sha256:d2", "sha256:d3"]},
    "history": [
        {
            "created": "2024-03-01T10:00:00.5Z",
            "created_by": "/bin/sh -c #(nop) ADD file:x in /",
            "author": "a",
        },
        {"created": "2024-03-01T10:10:00+01:00", "created_by": "ENV A=1", "empty_layer": True},
        {"created": "2024-03-01T10:15:00.999Z", "created_by": "RUN make", "comment": "buildkit"},
        {"created": "2024-03-01T10:20:30.1Z", "created_by": "RUN touch /x"},
    ],
}
# what `docker image inspect` and `docker history` (newest first) say of RAW
INSPECT = {
    "Architecture": "amd64",
    "Os": "linux",
    "Created": "2024-03-01T10:20:30.123456789Z",
    "Config": {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "Env": ["PATH=/bin", "A=1"],
        "Cmd": ["sh"],
        "Image": "",
        "Volumes": None,
        "WorkingDir": "/app",
        "Entrypoint": None,
        "OnBuild": None,
        "Labels": {},
        "ExposedPorts": {"80/tcp": {}},
    },
    "RootFS": {"Type": "layers", "Layers": ["sha256:d1", "sha256:d2", "sha256:d3"]},
}
HISTORY = [
    {"Created": 1709288430, "CreatedBy": "RUN touch /x", "Size": 12, "Comment": ""},
    {"Created": 1709288100, "CreatedBy": "RUN make", "Size": 4096, "Comment": "buildkit"},
    {"Created": 1709284200, "CreatedBy": "ENV A=1", "Size": 0, "Comment": ""},
    {"Created": 1709287200, "CreatedBy": "/bin/sh -c #(nop) ADD file:x in /", "Size": 1234, "Comment": ""},
]


def test_times_are_whole_seconds_in_utc() -> None:
    assert parent.seconds("2024-03-01T10:20:30.123456789Z") == "2024-03-01T10:20:30Z"
    assert parent.seconds("2024-03-01T11:20:30+01:00") == "2024-03-01T10:20:30Z"
    assert parent.seconds(1709288430) == "2024-03-01T10:20:30Z"
    for none in (
        "0001-01-01T00:00:00Z",
        parent.ZERO_TIME,
        0,
        "1970-01-01T00:00:00Z",
        "",
        None,
        "yesterday",
        True,
    ):
        assert parent.seconds(none) is None


def test_a_raw_config_and_inspect_with_history_give_the_same_canonical_config() -> None:
    from_save = parent.canonical(RAW, API)
    assert from_save == parent.from_inspect(INSPECT, HISTORY, API)
    assert from_save["config"] == {
        "Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/app", "ExposedPorts": {"80/tcp": {}},
    }  # fmt: skip
    assert "author" not in from_save and "container" not in from_save
    assert from_save["created"] == "2024-03-01T10:20:30Z"
    assert from_save["history"][1] == {
        "created": "2024-03-01T09:10:00Z",
        "created_by": "ENV A=1",
        "empty_layer": True,
    }
    assert from_save["history"][2]["comment"] == "buildkit"
    assert [bool(h.get("empty_layer")) for h in from_save["history"]] == [False, True, False, False]


def test_a_history_that_cannot_tell_which_steps_made_layers_is_none() -> None:
    # a step that made a layer without a change (size 0) beside a step with no layer: an ENV never
    # makes one, so RUN true did
    unchanged = [{**HISTORY[0], "CreatedBy": "RUN true", "Size": 0}, *HISTORY[1:]]
    told = parent.from_inspect(INSPECT, unchanged, API)
    assert told is not None
    assert [bool(h.get("empty_layer")) for h in told["history"]] == [False, True, False, False]
    assert told == parent.canonical(
        {**RAW, "history": [*RAW["history"][:3], {**RAW["history"][3], "created_by": "RUN true"}]}, API
    )
    # the classic builder's "#(nop)" metadata steps and the assembler's own are told apart too
    nop = [
        {**HISTORY[0], "CreatedBy": "WORKDIR /srv", "Size": 0},
        {**HISTORY[2], "CreatedBy": '/bin/sh -c #(nop)  CMD ["sh"]'},
        HISTORY[3],
    ]
    two = {**INSPECT, "RootFS": {"Type": "layers", "Layers": ["sha256:d1", "sha256:d2"]}}
    found = parent.from_inspect(two, nop, API)
    assert found is not None and [bool(h.get("empty_layer")) for h in found["history"]] == [
        False,
        True,
        False,
    ]
    # two steps without size that could each have made the one missing layer: which?
    both = [
        {**HISTORY[0], "CreatedBy": "RUN true", "Size": 0},
        {**HISTORY[1], "CreatedBy": "WORKDIR /x", "Size": 0},
        HISTORY[3],
    ]
    assert parent.from_inspect(two, both, API) is None
    # every step a layer, some of them without a change: told by the count
    two_layers = {**INSPECT, "RootFS": {"Type": "layers", "Layers": ["sha256:d1", "sha256:d2"]}}
    every = parent.from_inspect(two_layers, [unchanged[0], HISTORY[3]], API)
    assert every is not None and not any(h.get("empty_layer") for h in every["history"])
    # no history at all (an imported image whose config has none)
    bare = parent.from_inspect(INSPECT, [], API)
    assert (
        bare is not None and bare["history"] == [] and bare == parent.canonical({**RAW, "history": []}, API)
    )


def test_a_healthcheck_is_held_as_the_engine_holds_it() -> None:
    check = {"Test": ["CMD", "true"], "Interval": 0, "Retries": 0, "StartInterval": 5_000_000_000}
    raw = {**RAW, "config": {**RAW["config"], "Healthcheck": check}}
    # inspect drops zero fields; an engine before API 1.44 (Docker 25) drops StartInterval too
    new = {"Test": ["CMD", "true"], "StartInterval": 5_000_000_000}
    old = {"Test": ["CMD", "true"]}
    assert parent.canonical(raw, "1.45")["config"]["Healthcheck"] == new
    assert parent.canonical(raw, "1.41")["config"]["Healthcheck"] == old
    looked = {**INSPECT, "Config": {**INSPECT["Config"], "Healthcheck": old}}
    assert parent.from_inspect(looked, HISTORY, "1.41") == parent.canonical(raw, "1.41")


def test_a_volume_of_the_image_is_doubtful_and_so_is_a_directory_above_it_made_as_the_engine_makes_them() -> (
    None
):
    files = {
        "data": _d("data"), "data/x": PathEntry("data/x", "f", 0o644, 0, 0, size=3),
        "var": PathEntry("var", "d", 0o711, 0, 0), "var/lib": PathEntry("var/lib", "d", 0o700, 0, 0),
        "var/lib/db": _d("var/lib/db"),
        "opt": _d("opt"),
    }  # fmt: skip
    tree = Tree({}, lookup=Lookups(files), volumes=["/data", "/var/lib/db/", "/opt/new"])
    for path in ("data", "data/x", "var/lib/db", "opt"):
        with pytest.raises(Ambiguous):
            Tree({}, lookup=Lookups(files), volumes=["/data", "/var/lib/db/", "/opt/new"]).get(path)
    assert tree.get("var/lib") == Node("d", 0o700, 0, 0)  # not as the engine makes it: the image's
    assert Tree({}, lookup=Lookups(files)).get("data/x") is not None  # no volume: no doubt


def _tar(members: list[tuple[str, str]], *, size: int = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, "target"
                archive.addfile(info)
            else:
                info.size, info.mode, info.uid, info.gid = size, 0o640, 7, 8
                archive.addfile(info, io.BytesIO(b"x" * size))
    return buffer.getvalue()


def _chunks(data: bytes, size: int = 700) -> Iterator[bytes]:
    return iter([data[i : i + size] for i in range(0, len(data), size)])


def test_read_entries_names_paths_from_the_root_and_stops_at_the_budget() -> None:
    data = _tar([("app", "d"), ("app/a.txt", "f"), ("app/lib", "d"), ("app/link", "l")], size=10)
    entries, whole = parent.read_entries(_chunks(data), "srv/app", 1 << 20)
    assert whole
    assert [(e.path, e.kind) for e in entries] == [
        ("srv/app", "d"), ("srv/app/a.txt", "f"), ("srv/app/lib", "d"), ("srv/app/link", "l"),
    ]  # fmt: skip
    assert (entries[1].mode, entries[1].uid, entries[1].gid, entries[1].size) == (0o640, 7, 8, 10)
    assert entries[3].target == "target"
    big = _tar([("app", "d"), ("app/a", "f"), ("app/b", "f"), ("app/c", "f")], size=100_000)
    cut, whole = parent.read_entries(_chunks(big, 65536), "app", 50_000)
    assert not whole and 1 < len(cut) < 4


@pytest.mark.parametrize(
    "data",
    [b"not a tar at all" * 40, _tar([("other", "d")])],
    ids=["garbage", "another-path"],
)
def test_read_entries_of_what_is_not_that_archive_is_a_daemon_error(data: bytes) -> None:
    with pytest.raises(DaemonError):
        parent.read_entries(_chunks(data), "app", 1 << 20)


class Lookups:
    """A container's files, answered like Looker answers, counting the requests."""

    def __init__(self, files: dict[str, PathEntry], listed: bool = True) -> None:
        self.files = files
        self.listed = listed
        self.asked: list[str] = []

    def __call__(self, path: str) -> tuple[list[PathEntry], bool] | None:
        self.asked.append(path)
        if path not in self.files:
            return None
        under = [e for p, e in sorted(self.files.items()) if p.startswith(path + "/") and self.listed]
        return [self.files[path], *under], self.listed


def _d(path: str, uid: int = 0) -> PathEntry:
    return PathEntry(path, "d", 0o755, uid, uid)


def test_a_looked_up_tree_asks_only_what_it_must() -> None:
    files = {
        "usr": _d("usr"), "usr/bin": _d("usr/bin"), "bin": PathEntry("bin", "l", 0o777, 0, 0, "usr/bin"),
        "srv": _d("srv", 1000), "srv/app": _d("srv/app", 1000),
        "srv/app/x": PathEntry("srv/app/x", "f", 0o644, 1, 1),
    }  # fmt: skip
    lookups = Lookups(files)
    tree = Tree({}, lookup=lookups)
    assert not tree.complete
    assert tree.get("srv/app") == Node("d", 0o755, 1000, 1000)
    assert tree.get("srv/app/x") == Node("f", 0o644, 1, 1)  # listed with srv
    assert tree.get("srv/app/new") is None
    assert lookups.asked == ["srv"]  # srv was listed whole: the rest was known
    assert tree.get("opt/a/b/c") is None and tree.get("opt/z") is None
    assert lookups.asked == ["srv", "opt"]  # nothing under a missing directory
    assert tree.get("bin/sh") is None  # under a symlink: not a path of the tree
    assert tree.get("bin") == Node("l", 0o777, 0, 0, "usr/bin")
    assert lookups.asked == ["srv", "opt", "bin"]
    tree["opt"] = Node("d", 0o700, 5, 5)  # a layer of this build
    assert "opt" in tree and tree.get("opt") == Node("d", 0o700, 5, 5)
    assert tree.get("opt/a") is None and lookups.asked == ["srv", "opt", "bin"]


def test_a_directory_not_listed_whole_is_asked_for_each_child() -> None:
    lookups = Lookups({"usr": _d("usr"), "usr/lib": _d("usr/lib")}, listed=False)
    tree = Tree({}, lookup=lookups)
    assert tree.get("usr/lib") == Node("d", 0o755, 0, 0)
    assert tree.get("usr/share") is None
    assert lookups.asked == ["usr", "usr/lib", "usr/share"]


def test_what_only_the_init_layer_may_have_made_is_ambiguous() -> None:
    init = {
        "etc": _d("etc"),
        "etc/hosts": PathEntry("etc/hosts", "f", 0o755, 0, 0),
        "etc/mtab": PathEntry("etc/mtab", "l", 0o777, 0, 0, "/proc/mounts"),
    }
    with pytest.raises(Ambiguous):
        Tree({}, lookup=Lookups(init)).get("etc")
    with pytest.raises(Ambiguous):
        Tree({}, lookup=Lookups({"proc": _d("proc")})).get("proc/x")
    passwd = PathEntry("etc/passwd", "f", 0o644, 0, 0, size=30)
    real = {
        "etc": _d("etc"),
        "etc/passwd": passwd,
        "etc/hosts": PathEntry("etc/hosts", "f", 0o644, 0, 0, size=9),
    }
    tree = Tree({}, lookup=Lookups(real))
    assert tree.get("etc/app") is None  # the image's /etc: no doubt
    assert tree.get("etc/hosts") == Node("f", 0o644, 0, 0)  # the image's own hosts file
    doubtful = Tree({}, lookup=Lookups({**init, "etc/passwd": passwd}))
    assert doubtful.get("etc") == Node("d", 0o755, 0, 0)
    with pytest.raises(Ambiguous):  # an empty 0755 file of root's: the image may have no hosts
        doubtful.get("etc/hosts")


def test_a_whole_tree_never_looks_anything_up_and_has_the_directories_its_layers_imply() -> None:
    tree = Tree({"etc": Node("d", 0o700, 0, 0), "srv/app/keep.txt": Node("f", 0o644, 0, 0)})
    assert tree.complete and tree.get("proc") is None and tree.get("etc") == Node("d", 0o700, 0, 0)
    # a layer that lists srv/app/keep.txt alone: the engine made srv and srv/app, 0755, root's
    assert tree.get("srv") == tree.get("srv/app") == Node("d", 0o755, 0, 0)
    assert tree.get("srv/app/other") is None
    tree["app"] = Node("d", 0o755, 0, 0)
    assert set(tree.whole()) == {"etc", "app", "srv", "srv/app", "srv/app/keep.txt"}


class _Daemon:
    """Enough of an engine for Looker: a created container and its archives."""

    def __init__(self, archives: dict[str, bytes]) -> None:
        self.archives = archives
        self.created: list[dict[str, str]] = []
        self.removed: list[str] = []
        self.closed: list[str] = []

    def create_idle(self, image: str, found_labels: dict[str, str]) -> str:
        self.created.append(found_labels)
        return "c1"

    def container_archive(self, cid: str, path: str) -> Iterator[bytes]:
        def stream() -> Iterator[bytes]:
            if path not in self.archives:
                raise EngineNotFound("no such path", 404)
            try:
                yield from _chunks(self.archives[path])
            finally:
                self.closed.append(path)

        return stream()

    def remove_container(self, cid: str) -> None:
        self.removed.append(cid)


def test_the_looker_creates_one_container_closes_each_archive_and_removes_the_container() -> None:
    daemon = _Daemon({"/app": _tar([("app", "d"), ("app/x", "f")])})
    looker = parent.Looker(daemon, "sha256:img", {labels.PROJECT: "shop", labels.LOOKUP: "1"})  # type: ignore[arg-type]
    found = looker("/app")
    assert found is not None and [e.path for e in found[0]] == ["app", "app/x"]
    assert looker("/nope") is None
    assert daemon.created == [{labels.PROJECT: "shop", labels.LOOKUP: "1"}]
    assert daemon.closed == ["/app"]
    looker.close()
    looker.close()
    assert daemon.removed == ["c1"]


def test_falling_back_to_facts_only_after_a_lookup_and_never_for_an_engine_gone() -> None:
    known = parent.Parents(_Daemon({}), None, {}, None)  # type: ignore[arg-type]
    assert not known.fall_back(Ambiguous("x"))  # nothing was looked up: the error is real
    looker = parent.Looker(_Daemon({}), "img", {})  # type: ignore[arg-type]
    known.lookers.append(looker)
    assert not known.fall_back(EngineUnreachable("gone"))
    assert not known.fall_back(ValueError("a bug"))
    assert known.fall_back(DaemonError("cannot archive", 500))
    assert known.read_facts and not known.lookers
    assert not known.fall_back(Ambiguous("again"))  # once


class _GcDaemon:
    def __init__(self, containers: list[Container]) -> None:
        self.listed = containers
        self.removed: list[str] = []
        self.selectors: list[str] = []

    def containers(self, label: str) -> list[Container]:
        self.selectors.append(label)
        return self.listed

    def remove_container(self, cid: str) -> None:
        self.removed.append(cid)


def _lookup(cid: str, stack: str = "shop", state: str = "created", **extra: str) -> Container:
    found_labels = {
        labels.PROJECT: stack,
        labels.IMAGE: "web",
        labels.KEY: "k" * 64,
        labels.LOOKUP: "1",
        **extra,
    }
    return Container(cid, cid, found_labels, state, "", "sha256:img")


def test_gc_removes_only_this_stacks_lookup_containers_whose_build_is_not_running(tmp_path: Path) -> None:
    daemon = _GcDaemon([_lookup("mine"), _lookup("other", stack="else"), _lookup("up", state="running")])
    result = gc.GcResult()
    gc._lookups(daemon, "shop", tmp_path, dry_run=True, result=result)  # type: ignore[arg-type]
    assert result.containers == ["mine"] and daemon.removed == []
    assert daemon.selectors == [f"{labels.LOOKUP}=1"]
    result = gc.GcResult()
    tag = gc.image_tag("shop", "web", "k" * 64)
    with gc._build_lock(tmp_path, tag) as free:  # a build of that image is running
        assert free
        gc._lookups(daemon, "shop", tmp_path, dry_run=False, result=result)  # type: ignore[arg-type]
    assert result.containers == [] and daemon.removed == []
    gc._lookups(daemon, "shop", tmp_path, dry_run=False, result=result)  # type: ignore[arg-type]
    assert result.containers == ["mine"] and daemon.removed == ["mine"]
    assert "containers" in result.to_json()


# -- the lookup: a container gone, the listing budget


class _GoneDaemon(_Daemon):
    """The lookup container was removed behind the build's back (`docker container prune`, a
    `docker rm` of created containers): the engine answers 404 for the container, not the path."""

    def container_archive(self, cid: str, path: str) -> Iterator[bytes]:
        def stream() -> Iterator[bytes]:
            raise EngineNotFound(f"GET /containers/{cid}/archive answered 404: No such container: {cid}", 404)
            yield b""  # pragma: no cover

        return stream()


def test_a_lookup_container_gone_is_an_error_not_an_empty_image() -> None:
    looker = parent.Looker(_GoneDaemon({}), "sha256:img", {})  # type: ignore[arg-type]
    tree = Tree({}, lookup=looker)
    # /tmp is there (1777) in the image: a container that is gone must not make it "absent", or
    # COPY x /tmp/ writes a new /tmp (0755) over it
    with pytest.raises(DaemonError):
        tree.get("tmp")


@pytest.mark.parametrize(
    ("members", "path"),
    [([("big", "f")], "srv/big"), ([("app", "d"), ("app/a", "f"), ("app/b", "f")], "app")],
    ids=["a-big-file", "a-directory-of-big-files"],
)
def test_the_listing_budget_bounds_what_is_read(members: list[tuple[str, str]], path: str) -> None:
    # the lookup of a 200 MB file (COPY onto it, or a directory that holds it first) must not read
    # it through: the budget is what a lookup may cost
    data = _tar(members, size=8 << 20)
    consumed = 0

    def counting() -> Iterator[bytes]:
        nonlocal consumed
        for chunk in _chunks(data, 65536):
            consumed += len(chunk)
            yield chunk

    entries, _ = parent.read_entries(counting(), path, 1 << 20)
    assert entries[0].path == path
    assert consumed <= 2 << 20, f"read {consumed} bytes for a budget of {1 << 20}"
