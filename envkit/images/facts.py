"""What envkit's assembler needs to know of a parent image: its raw config and its file tree.

The tree (every path, its kind, mode and owner; file contents are never kept)
answers the questions the classic builder answers by looking inside the image:
is ``COPY app.py /usr/local/bin`` a copy into a directory, and which mode and
owner does a directory already have. Images envkit makes itself (assembled, or
from a Debian recipe) record their facts as they are made; any other image is
read once with ``docker save`` (headers only are looked at), and the result is
kept in the user's cache under the image ID, which names its content for good.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from envkit.docker.engine import Daemon
from envkit.errors import StateError
from envkit.fsutil import atomic_write_text, ensure_private_dir

FORMAT = 1
KEEP = 32  # facts files kept: the least recently used go first (a Debian rootfs's is ~2 MB)
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class Node:
    kind: str  # "d" directory, "f" file (or hard link, device...), "l" symlink
    mode: int
    uid: int
    gid: int
    target: str = ""  # a symlink's target


@dataclass
class ImageFacts:
    """An image's raw config (as ``docker save`` carries it) and its file tree."""

    config: dict[str, Any]
    tree: dict[str, Node] = field(default_factory=dict)  # "usr/local/bin" -> Node (no leading /)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config,
            "tree": {p: [n.kind, n.mode, n.uid, n.gid, n.target] for p, n in sorted(self.tree.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageFacts:
        if data.get("format") != FORMAT:
            raise ValueError("another format")
        tree = {
            str(p): Node(str(k), int(m), int(u), int(g), str(t))
            for p, (k, m, u, g, t) in data["tree"].items()
        }
        return cls(dict(data["config"]), tree)


def apply_layer(tree: dict[str, Node], entries: Iterable[tarfile.TarInfo]) -> None:
    """Apply one layer's entries (with Docker's whiteouts) to ``tree``."""
    for info in entries:
        path = info.name.strip("/").removeprefix("./")
        if not path or path == ".":
            continue
        parent, _, base = path.rpartition("/")
        if base == OPAQUE:
            prefix = f"{parent}/" if parent else ""
            for known in [p for p in tree if p.startswith(prefix) and p != parent]:
                del tree[known]
            continue
        if base.startswith(WHITEOUT):
            gone = f"{parent}/{base[len(WHITEOUT) :]}" if parent else base[len(WHITEOUT) :]
            for known in [p for p in tree if p == gone or p.startswith(gone + "/")]:
                del tree[known]
            continue
        if info.isdir():
            kind = "d"
        elif info.issym():
            kind = "l"
        else:
            kind = "f"
        if kind != "d":
            for known in [p for p in tree if p.startswith(path + "/")]:
                del tree[known]  # a directory replaced by something else
        tree[path] = Node(kind, info.mode & 0o7777, info.uid, info.gid, info.linkname if kind == "l" else "")


_READING: dict[str, threading.Lock] = {}  # image ID -> held while one thread reads that image
_READING_LOCK = threading.Lock()


class FactsCache:
    """Image facts by image ID, in ``<cache>/images/<id>.json``."""

    def __init__(self, cache_dir: Path) -> None:
        self.directory = cache_dir / "images"

    def _path(self, image_id: str) -> Path:
        return self.directory / (image_id.removeprefix("sha256:") + ".json")

    def put(self, image_id: str, facts: ImageFacts) -> None:
        try:
            ensure_private_dir(self.directory)
            atomic_write_text(self._path(image_id), json.dumps(facts.to_json(), separators=(",", ":")))
        except StateError:
            return  # a cache: the next assembly reads the image again
        self._prune()

    def _prune(self) -> None:
        """Keep the :data:`KEEP` most recently used files (a read counts as a use)."""
        try:
            known = [(p.stat().st_mtime, p) for p in self.directory.glob("*.json")]
        except OSError:
            return
        for _, path in sorted(known, reverse=True)[KEEP:]:
            path.unlink(missing_ok=True)

    def get(self, daemon: Daemon, image_id: str, *, stall: float | None) -> ImageFacts:
        """The facts of ``image_id``, read from the cache or, once, from the image itself (images
        built side by side on one parent wait for one read of it)."""
        with _READING_LOCK:
            reading = _READING.setdefault(image_id, threading.Lock())
        with reading:
            known = self._cached(image_id)
            if known is not None:
                return known
            facts = read_image(daemon.save(image_id, stall=stall))
            self.put(image_id, facts)
            return facts

    def _cached(self, image_id: str) -> ImageFacts | None:
        path = self._path(image_id)
        try:
            facts = ImageFacts.from_json(json.loads(path.read_text(encoding="utf-8")))
            os.utime(path)  # used now: kept longer
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return facts


class _Chunks(io.RawIOBase):
    """A file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def read_image(chunks: Iterator[bytes]) -> ImageFacts:
    """An image's facts from its ``docker save`` stream, read once, front to back."""
    stream: IO[bytes] = io.BufferedReader(_Chunks(chunks), 1 << 20)
    layers: dict[str, list[tarfile.TarInfo]] = {}
    documents: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if member.name.endswith("/layer.tar") or member.name.endswith(".tar"):
                extracted = archive.extractfile(member)
                if extracted is None:
                    continue
                with tarfile.open(fileobj=extracted, mode="r|") as layer:
                    layers[member.name] = [entry for entry in layer]
            elif member.name.endswith(".json") and member.isfile():
                extracted = archive.extractfile(member)
                documents[member.name] = extracted.read() if extracted else b""
    manifest = json.loads(documents["manifest.json"])[0]
    config = json.loads(documents[manifest["Config"]])
    tree: dict[str, Node] = {}
    for name in manifest["Layers"]:
        apply_layer(tree, layers.get(name, []))
    return ImageFacts(config, tree)
