"""A parent image as the assembler sees it: its config, its layers and its files.

A parent is known in one of two ways:

- by its facts (:mod:`envkit.images.facts`): the raw config and the whole file
  tree, recorded when envkit made the image, or read from a ``docker save``.
  On Docker's containerd image store this is the only way: a child's manifest
  names the parent's layers by the blobs the engine holds, which only a save
  tells.
- looked up, on Docker's classic image store, when no facts are cached (a base
  pulled from a registry or a remote cache, on a fresh machine): the config from
  ``docker image inspect`` and ``docker history``, the files path by path, only
  those an instruction asks about, from a container of the image that is
  created, never started, and removed (``GET /containers/{id}/archive``, headers
  only; a small directory is listed whole in the same answer). A save costs
  seconds per hundred megabytes; a lookup costs a few requests. Podman's
  Docker-compatible inspect leaves an image's Healthcheck out (and its history
  fails on some images), so there the save is read too.

Either way the config is put in one canonical form (:func:`canonical`): the
fields an engine reads, none that are empty, history times in whole seconds (as
``docker history`` gives them) and no author. So an assembled image gets the
same ID however its parent was known. Where ``docker history`` cannot tell
which steps made the layers (a step with an empty layer beside one without a
layer), the image is read from a save instead.

A created container of a Docker engine also holds what the engine's init layer
puts there (``/etc/hosts``, ``/dev``, ``/proc``...), which the classic builder does
not see: where the image may lack such a path (the container shows only what
the init layer makes there), the lookup gives up (:class:`Ambiguous`) and the
parent's facts are read from a save instead.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from envkit.docker.engine import Daemon
from envkit.errors import DaemonError, EngineNotFound, EngineUnreachable
from envkit.images.archive import Blob
from envkit.images.facts import FactsCache, Node, UnreadableImage

# the container config fields an engine reads from an image, in the order they are written
RUN_FIELDS = (
    "User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Healthcheck", "ArgsEscaped", "Volumes",
    "WorkingDir", "Labels", "OnBuild", "StopSignal", "StopTimeout", "Shell",
)  # fmt: skip
# a Healthcheck's fields; StartInterval only where the engine knows it (API 1.44, Docker 25)
HEALTHCHECK_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "Retries", "StartInterval")
# what a step's CreatedBy starts with when it made no layer (the classic builder's "#(nop)", or
# the instruction as BuildKit and envkit's assembler write it); COPY and ADD always make one
_NO_LAYER = re.compile(
    r"(?:/bin/sh -c )?(?:#\(nop\)\s*)?(?!COPY\b|ADD\b)"
    r"(ENV|LABEL|CMD|ENTRYPOINT|EXPOSE|USER|VOLUME|STOPSIGNAL|HEALTHCHECK|SHELL|ARG|ONBUILD|MAINTAINER)\b"
)
ZERO_TIME = -62135596800  # Go's zero time, in Unix seconds: "no time"
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$", re.IGNORECASE)
# what a Docker engine's init layer makes in a container: path -> (kind, mode, size)
INIT_LAYER: dict[str, tuple[str, int, int]] = {
    "dev": ("d", 0o755, 0), "dev/pts": ("d", 0o755, 0), "dev/shm": ("d", 0o755, 0),
    "dev/console": ("f", 0o755, 0), "proc": ("d", 0o755, 0), "sys": ("d", 0o755, 0),
    ".dockerenv": ("f", 0o755, 0), "etc": ("d", 0o755, 0), "etc/hosts": ("f", 0o755, 0),
    "etc/hostname": ("f", 0o755, 0), "etc/resolv.conf": ("f", 0o755, 0), "etc/mtab": ("l", 0o777, 0),
}  # fmt: skip
IMPLICIT_DIR = Node("d", 0o755, 0, 0)  # a directory a layer implies (lists only what is under it)
DIRECTORY_BUDGET = 1 << 20  # bytes of a directory's archive read to list it whole, at most


def seconds(value: Any) -> str | None:
    """A time (RFC 3339 text, or Unix seconds) as ``YYYY-MM-DDTHH:MM:SSZ``; None for none: Go's
    zero time, and the Unix epoch (which newer engines' ``docker history`` gives for a step
    without a time, and a reproducible build may write)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if value <= ZERO_TIME or value == 0:
            return None
        moment = datetime.datetime.fromtimestamp(int(value), datetime.timezone.utc)
    elif isinstance(value, str) and (found := _RFC3339.match(value.strip())):
        zone = found.group(2).upper().replace("Z", "+00:00")
        moment = datetime.datetime.fromisoformat(found.group(1) + zone).astimezone(datetime.timezone.utc)
        if moment.year <= 1 or moment.timestamp() == 0:
            return None
    else:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _run(run: Mapping[str, Any], api_version: str) -> dict[str, Any]:
    out = {name: run[name] for name in RUN_FIELDS if run.get(name)}
    check = out.get("Healthcheck")
    if isinstance(check, Mapping):  # as the engine's own types hold it: known keys, no zeros
        keys = HEALTHCHECK_FIELDS if _api(api_version) >= (1, 44) else HEALTHCHECK_FIELDS[:-1]
        out["Healthcheck"] = {key: check[key] for key in keys if check.get(key)}
    return out


def _api(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (1, 44)


def _step(created: Any, created_by: Any, comment: Any, empty: bool) -> dict[str, Any]:
    step: dict[str, Any] = {}
    when = seconds(created)
    if when:
        step["created"] = when
    if created_by:
        step["created_by"] = str(created_by)
    if comment:
        step["comment"] = str(comment)
    if empty:
        step["empty_layer"] = True
    return step


def _head(architecture: Any, os_name: Any, variant: Any, created: Any) -> dict[str, Any]:
    head: dict[str, Any] = {"architecture": str(architecture or ""), "os": str(os_name or "")}
    if variant:
        head["variant"] = str(variant)
    when = seconds(created)
    if when:
        head["created"] = when
    return head


def canonical(raw: Mapping[str, Any], api_version: str) -> dict[str, Any]:
    """An image's raw config (as a save carries it) in the canonical form, as an engine of
    ``api_version`` holds it."""
    config = _head(raw.get("architecture"), raw.get("os"), raw.get("variant"), raw.get("created"))
    config["config"] = _run(raw.get("config") or {}, api_version)
    diff_ids = [str(d) for d in (raw.get("rootfs") or {}).get("diff_ids") or []]
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = [
        _step(h.get("created"), h.get("created_by"), h.get("comment"), bool(h.get("empty_layer")))
        for h in raw.get("history") or []
        if isinstance(h, Mapping)
    ]
    return config


def from_inspect(
    inspect: Mapping[str, Any], history: Iterable[Mapping[str, Any]], api_version: str
) -> dict[str, Any] | None:
    """The canonical config from ``docker image inspect`` and ``docker history`` (newest first)
    on an engine of ``api_version``; None when the history does not tell which steps made the
    layers."""
    config = _head(
        inspect.get("Architecture"), inspect.get("Os"), inspect.get("Variant"), inspect.get("Created")
    )
    config["config"] = _run(inspect.get("Config") or {}, api_version)
    diff_ids = [str(d) for d in (inspect.get("RootFS") or {}).get("Layers") or []]
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    steps = list(history)[::-1]
    made = _layered(steps, len(diff_ids))
    if made is None:
        return None
    config["history"] = [
        _step(step.get("Created"), step.get("CreatedBy"), step.get("Comment"), not layer)
        for step, layer in zip(steps, made, strict=True)
    ]
    return config


@dataclass(frozen=True)
class PathEntry:
    """One file of a container as its archive names it: path (no leading /), kind ("d"
    directory, "l" symlink, "f" anything else), mode bits (permissions, setuid, setgid,
    sticky), owner, a symlink's target and a file's size."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    target: str = ""
    size: int = 0


def _layered(steps: list[Mapping[str, Any]], layers: int) -> list[bool] | None:
    """Which steps made the ``layers`` layers: those with a size, then, of those without, the
    ones that are not an instruction that never makes one (ENV, CMD...); None if that does not
    add up (a step that made an empty layer beside one of the same kind that made none)."""
    if not steps:
        return []
    sized = [int(step.get("Size") or 0) > 0 for step in steps]
    if sum(sized) == layers:
        return sized
    maybe = [
        not has and not _NO_LAYER.match(str(step.get("CreatedBy") or "").strip())
        for step, has in zip(steps, sized, strict=True)
    ]
    if sum(sized) + sum(maybe) == layers:
        return [a or b for a, b in zip(sized, maybe, strict=True)]
    return None


Lookup = Callable[[str], "tuple[list[PathEntry], bool] | None"]


class Ambiguous(Exception):
    """A looked-up path may be only the engine's init layer's: the image's facts must be read."""


class Tree:
    """The files of the image being assembled, by path (no leading /): its parent's (all of
    them, or looked up as asked for) and what this build's layers put there."""

    def __init__(
        self, known: Mapping[str, Node], *, lookup: Lookup | None = None, volumes: Iterable[str] = ()
    ) -> None:
        self.parent: dict[str, Node] = dict(known)  # the parent's nodes, as far as known
        # the image's VOLUMEs: a created container has their mount points, made if missing
        self.volumes = {posixpath.normpath("/" + v).strip("/") for v in volumes} - {""}
        self.complete = lookup is None  # every node of the parent is in ``parent``
        self.changes: dict[str, Node] = {}  # what this build's layers wrote
        self._lookup = lookup
        self._absent: set[str] = set()  # nothing in the parent at (or under) these paths
        self._listed: set[str] = set()  # parent directories whose every entry is known
        self._doubtful: set[str] = set()  # what may be only the init layer's (see Ambiguous)
        self._implied: set[str] | None = None  # see _implicit

    def get(self, path: str) -> Node | None:
        if path in self.changes:
            return self.changes[path]
        return self._in_parent(path)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.get(path) is not None

    def __setitem__(self, path: str, node: Node) -> None:
        self.changes[path] = node

    def _volume_made(self, entry: PathEntry) -> bool:
        """Whether ``entry`` may be only what the engine made for a VOLUME of the image: at or
        under a volume (whose content the engine copied into a new volume), or a directory
        above one that looks as the engine makes it."""
        for volume in self.volumes:
            if entry.path == volume or entry.path.startswith(volume + "/"):
                return True
            if volume.startswith(entry.path + "/") and _made_by_engine(entry):
                return True
        return False

    def _implicit(self) -> set[str]:
        """The directories of a whole tree that no layer lists, only paths under them: the
        engine made them (0755, root's) as it unpacked the layer."""
        if self._implied is None:
            self._implied = set()
            for path in self.parent:
                above = posixpath.dirname(path)
                while above and above not in self._implied:
                    self._implied.add(above)
                    above = posixpath.dirname(above)
            self._implied -= set(self.parent)
        return self._implied

    def whole(self) -> dict[str, Node]:
        """Every node (only for a complete tree), the implied directories too."""
        assert self.complete
        return {**dict.fromkeys(self._implicit(), IMPLICIT_DIR), **self.parent, **self.changes}

    def _in_parent(self, path: str) -> Node | None:
        if path in self.parent:
            return self.parent[path]
        if path in self._doubtful:
            raise Ambiguous(f"/{path} may be only what the engine makes in a container (init layer, VOLUME)")
        if self.complete:
            return IMPLICIT_DIR if path in self._implicit() else None
        if path in self._absent:
            return None
        above = posixpath.dirname(path)
        holder = self._in_parent(above) if above else IMPLICIT_DIR  # the root
        if path in self.parent or path in self._doubtful:  # listed with what is above it
            return self._in_parent(path)
        if holder is None or holder.kind != "d" or above in self._listed:
            self._absent.add(path)
            return None
        return self._look(path)

    def _look(self, path: str) -> Node | None:
        assert self._lookup is not None
        found = self._lookup(path)
        if found is None:
            self._absent.add(path)
            return None
        entries, whole = found
        for entry in entries:
            if _only_init_layer(entry, entries) or self._volume_made(entry):
                self._doubtful.add(entry.path)
                continue
            self.parent[entry.path] = Node(entry.kind, entry.mode, entry.uid, entry.gid, entry.target)
            if whole and entry.kind == "d":
                self._listed.add(entry.path)
        return self._in_parent(path)


def _made_by_engine(entry: PathEntry) -> bool:
    """Whether ``entry`` is what the engine makes where a path is missing: 0755, root's."""
    return (entry.kind, entry.mode, entry.uid, entry.gid) == ("d", 0o755, 0, 0)


def _only_init_layer(entry: PathEntry, entries: list[PathEntry]) -> bool:
    """Whether what the container holds at ``entry`` is what a Docker engine's init layer makes
    there (and nothing the image adds under it): then the image may not have it at all."""
    if entry.path not in INIT_LAYER:
        return False
    kind, mode, size = INIT_LAYER[entry.path]
    if (entry.kind, entry.mode, entry.uid, entry.gid, entry.size) != (kind, mode, 0, 0, size):
        return False
    return all(other.path in INIT_LAYER for other in entries if other.path.startswith(entry.path + "/"))


class Looker:
    """Looks up paths in a container of one image, created at the first lookup (labelled
    ``labels``, never started) and removed by :meth:`close`."""

    def __init__(self, daemon: Daemon, image: str, labels: Mapping[str, str]) -> None:
        self.daemon = daemon
        self.image = image
        self.labels = dict(labels)
        self.container: str | None = None
        self.requests = 0

    def __call__(self, path: str) -> tuple[list[PathEntry], bool] | None:
        """The entry at ``path``, then those under it (for a directory) as far as
        :data:`DIRECTORY_BUDGET` bytes of its archive go; whether that was all. None: nothing
        is there."""
        if self.container is None:
            self.container = self.daemon.create_idle(self.image, self.labels)
        self.requests += 1
        chunks = self.daemon.container_archive(self.container, path)
        try:
            return read_entries(chunks, path.strip("/"), DIRECTORY_BUDGET)
        except EngineNotFound as err:
            if "no such container" in err.detail.lower():  # removed behind the build's back
                raise DaemonError(f"the container looked into {self.image} through is gone") from None
            return None
        finally:
            chunks.close()  # stops the engine's archive where it is

    def close(self) -> None:
        if self.container is not None:
            with contextlib.suppress(DaemonError):  # gc removes what is left (its labels say whose)
                self.daemon.remove_container(self.container)
            self.container = None


def read_entries(chunks: Iterator[bytes], path: str, budget: int) -> tuple[list[PathEntry], bool]:
    """The entries of a container archive of ``path`` (headers only), until ``budget`` bytes
    were read; whether all were. A DaemonError when it is not such an archive."""
    import tarfile

    stream = _Counted(chunks)
    entries: list[PathEntry] = []
    base = posixpath.dirname(path)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                entries.append(_entry(base, member))
                if entries[0].kind != "d":
                    stream.count = -1  # nothing is under it: its content is never read
                    break
                if stream.count + member.size > budget:  # the next header is past its content
                    break
            else:
                stream.count = -1  # read to its end
    except (tarfile.TarError, EOFError) as err:
        raise DaemonError(f"the archive of /{path} is not a tar archive ({err})") from None
    if not entries or entries[0].path != path:
        raise DaemonError(f"the archive of /{path} does not begin with it")
    return entries, stream.count < 0


class _Counted(io.RawIOBase):
    """Chunks as a file that counts the bytes read from it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = chunk
        size = min(len(target), len(self._left))
        target[:size] = self._left[:size]
        self._left = self._left[size:]
        self.count += size
        return size


def _entry(base: str, member: Any) -> PathEntry:
    kind = "d" if member.isdir() else "l" if member.issym() else "f"
    path = posixpath.normpath(posixpath.join(base, member.name)).strip("/")
    size = member.size if member.isfile() else 0
    return PathEntry(
        path, kind, member.mode & 0o7777, member.uid, member.gid, member.linkname if kind == "l" else "", size
    )


class Parents:
    """What the assembly of one image knows of its parents (see the module docstring): looked
    up where it can be, else from their facts; the containers it looked into are removed by
    :meth:`close`."""

    def __init__(
        self, daemon: Daemon, facts: FactsCache, labels: Mapping[str, str], stall: float | None
    ) -> None:
        self.daemon = daemon
        self.facts = facts
        self.labels = dict(labels)
        self.stall = stall
        self.lookers: list[Looker] = []
        self.read_facts = False  # True: every parent's facts are read, none looked up

    def known(
        self, ref: str, image_id: str, found: Mapping[str, Any]
    ) -> tuple[dict[str, Any], Tree, list[Blob]]:
        """A parent's canonical config, its files and its layers' blobs (none when not known):
        from its facts when cached or where a lookup cannot tell (see the module docstring),
        else looked up. CannotRead: its facts cannot be read."""
        from envkit.docker import labels

        if not self.read_facts and self.daemon.engine.store == "classic" and not self.facts.has(image_id):
            try:
                config = from_inspect(found, self.daemon.history_entries(image_id), self.daemon.api_version)
            except EngineUnreachable:
                raise
            except DaemonError:
                config = None  # the save tells
            if config is not None:
                looker = Looker(self.daemon, image_id, {**self.labels, labels.LOOKUP: "1"})
                self.lookers.append(looker)
                volumes = (found.get("Config") or {}).get("Volumes") or {}
                return config, Tree({}, lookup=looker, volumes=volumes), []
        try:
            facts = self.facts.get(self.daemon, image_id, stall=self.stall)
        except UnreadableImage as err:
            raise CannotRead(f"its base {ref} cannot be read: {err}") from None
        except EngineUnreachable:  # the engine went away or stopped answering: that is the error
            raise
        except DaemonError as err:
            raise CannotRead(f"docker save of its base {ref} failed: {err.detail}") from None
        return canonical(facts.config, self.daemon.api_version), Tree(facts.tree), list(facts.layers)

    def fall_back(self, err: BaseException) -> bool:
        """After ``err`` in an assembly that looked parents up: whether to assemble again from
        their facts (then every container looked into is gone)."""
        if not isinstance(err, Ambiguous | DaemonError) or isinstance(err, EngineUnreachable):
            return False
        if self.read_facts or not self.lookers:
            return False
        self.close()
        self.read_facts = True
        return True

    def close(self) -> None:
        for looker in self.lookers:
            looker.close()
        self.lookers.clear()


class CannotRead(Exception):
    """A parent whose facts cannot be read (the classic builder's job); ``str()`` says why."""
