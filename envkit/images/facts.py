"""What envkit's assembler needs to know of a parent image: its raw config and its file tree.

The tree (every path, its kind, mode and owner; file contents are never kept)
answers the questions the classic builder answers by looking inside the image:
is ``COPY app.py /usr/local/bin`` a copy into a directory, and which mode and
owner does a directory already have. Images envkit makes itself (assembled, or
from a Debian recipe) record their facts as they are made; any other image is
read with ``docker save`` (headers only are looked at) where
:mod:`envkit.images.parent` cannot look it up instead, and the result is kept in
the user's cache under the image ID, which names its content for good.

A save is read in whichever layout the engine writes it: the docker-archive
(``manifest.json`` and ``<id>/layer.tar``; Podman's ``layer.tar`` is a link to
a ``<diff id>.tar``) or the OCI layout of Docker 25 and later (``index.json``
and ``blobs/sha256/<hex>``, gzipped layers on the containerd image store), in
which case the layers' blobs as its manifest names them are kept too. A save
that is none of these, or broken, raises :class:`UnreadableImage`, and the
image is left to the classic builder.
"""

from __future__ import annotations

import gzip
import importlib
import io
import json
import os
import posixpath
import re
import tarfile
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from envkit.docker.engine import Daemon
from envkit.errors import EnvkitError, StateError
from envkit.fsutil import atomic_write_text, ensure_private_dir
from envkit.images.archive import Blob

FORMAT = 2  # 2: the layers as the engine holds them
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
    # each layer as the image's manifest names it (a child's manifest names the same blobs);
    # empty when not known
    layers: list[Blob] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.config,
            "tree": {p: [n.kind, n.mode, n.uid, n.gid, n.target] for p, n in sorted(self.tree.items())},
            "layers": [blob.to_json() for blob in self.layers],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageFacts:
        if data.get("format") != FORMAT:
            raise ValueError("another format")
        tree = {
            str(p): Node(str(k), int(m), int(u), int(g), str(t))
            for p, (k, m, u, g, t) in data["tree"].items()
        }
        layers = [Blob.from_json(blob) for blob in data.get("layers") or []]
        return cls(dict(data["config"]), tree, layers)


def apply_layer(tree: dict[str, Node], entries: Iterable[tarfile.TarInfo]) -> None:
    """Apply one layer's entries to ``tree``. Its whiteouts (``.wh.NAME``, and ``.wh..wh..opq``
    for a directory whose lower contents are gone) hide what the layers below have, never what
    this layer adds, wherever they stand in it; a directory replaced by something else takes
    its contents with it."""
    below = _children(tree)  # of the tree as the layers below left it: whiteouts look only there
    added: list[tuple[str, tarfile.TarInfo]] = []
    for info in entries:
        path = info.name.strip("/").removeprefix("./")
        if not path or path == ".":
            continue
        parent, _, base = path.rpartition("/")
        if base == OPAQUE:
            _drop_under(tree, below, parent)
        elif base.startswith(WHITEOUT):
            gone = f"{parent}/{base[len(WHITEOUT) :]}" if parent else base[len(WHITEOUT) :]
            tree.pop(gone, None)
            _drop_under(tree, below, gone)
        else:
            added.append((path, info))
    for path, info in added:
        if info.isdir():
            kind = "d"
        elif info.issym():
            kind = "l"
        else:
            kind = "f"
        if kind != "d":
            _drop_under(tree, below, path)  # a directory replaced by something else
        tree[path] = Node(kind, info.mode & 0o7777, info.uid, info.gid, info.linkname if kind == "l" else "")


def _children(tree: Mapping[str, Node]) -> dict[str, set[str]]:
    """Each directory's children in ``tree`` ("" is the root's), also of directories the tree
    holds no entry for (a layer need not list a file's parents): removing a subtree then costs
    its size, not a look at every path (a Debian rootfs has ~20,000)."""
    children: dict[str, set[str]] = {}
    for path in tree:
        child = path
        while child:
            parent = child.rpartition("/")[0]
            known = parent in children  # then so are its own ancestors
            children.setdefault(parent, set()).add(child)
            if known:
                break
            child = parent
    return children


def _drop_under(tree: dict[str, Node], children: Mapping[str, set[str]], directory: str) -> None:
    """Remove everything under ``directory`` (not itself) that ``children`` knows of."""
    pending = list(children.get(directory, ()))
    while pending:
        path = pending.pop()
        tree.pop(path, None)
        pending.extend(children.get(path, ()))


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
            chunks = daemon.save(image_id, stall=stall)
            try:
                facts = read_image(chunks, image=image_id)
            finally:
                close = getattr(chunks, "close", None)  # the engine's response: never left open
                if close is not None:
                    close()
            self.put(image_id, facts)
            return facts

    def has(self, image_id: str) -> bool:
        """Whether the facts of ``image_id`` are cached (not whether they can be read)."""
        return self._path(image_id).is_file()

    def _cached(self, image_id: str) -> ImageFacts | None:
        path = self._path(image_id)
        try:
            facts = ImageFacts.from_json(json.loads(path.read_text(encoding="utf-8")))
            os.utime(path)  # used now: kept longer
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return facts


class UnreadableImage(EnvkitError, ValueError):
    """A ``docker save`` stream that is not laid out as any engine is known to write it, or that
    cannot be read (a missing layer, a compression this Python cannot undo, a broken tar or JSON).
    ``reason`` says what was unexpected; whoever asked for the facts builds without them."""

    def __init__(self, image: str, reason: str) -> None:
        super().__init__(image, reason)
        self.image = image
        self.reason = reason

    def __str__(self) -> str:
        return f"docker save of {self.image} {self.reason}" if self.image else f"docker save {self.reason}"


JSON_LIMIT = 4 << 20  # a blob larger than this is never a config, manifest or index worth keeping
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LINK_HOPS = 16  # links followed from one name before it counts as a loop
_INDEX_DEPTH = 4  # indexes followed from index.json before the nesting counts as a loop
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")  # as OCI defines a digest


def _zstd_module() -> Any:
    # The standard library decompresses zstd from Python 3.14 on; before that a zstd layer is
    # unreadable here (a third-party decoder is not worth a dependency for a fallback's sake).
    try:
        return importlib.import_module("compression.zstd")
    except ImportError:
        return None


_ZSTD = _zstd_module()
# What reading a tar, a gzip or zstd stream or a JSON document raises on bytes that are not one.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    ValueError,
    RecursionError,
    *((_ZSTD.ZstdError,) if _ZSTD is not None else ()),
)


class _SourceFailed(Exception):
    """The chunks' own iterator failed (the engine, the connection): not the stream's fault, so it
    must pass the handlers that turn bad bytes into :class:`UnreadableImage` (it is no OSError)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


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
            except Exception as err:
                raise _SourceFailed(err) from err
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


@dataclass
class _Saved:
    """What one pass over a save stream keeps, by member name: which member is the config or a
    layer is known only at the end (blobs may come before the manifest that names them)."""

    documents: dict[str, bytes] = field(default_factory=dict)  # small JSON-looking files
    layers: dict[str, list[tarfile.TarInfo]] = field(default_factory=dict)  # tars: headers only
    not_tars: dict[str, str] = field(default_factory=dict)  # files neither: why tar failed
    problems: dict[str, str] = field(default_factory=dict)  # files not read: why (a predicate)
    links: dict[str, str] = field(default_factory=dict)  # symlinks and hard links: their target

    def holds(self, name: str) -> bool:
        kept = (self.documents, self.layers, self.not_tars, self.problems, self.links)
        return any(name in known for known in kept)


def _member_path(name: str) -> str:
    """A member name or a path in a manifest as one spelling: no ``./``, no leading ``/``."""
    return posixpath.normpath(name).lstrip("/")


def read_image(chunks: Iterable[bytes], *, image: str = "") -> ImageFacts:
    """An image's facts from its ``docker save`` stream, read once, front to back, in any of the
    layouts engines write: the docker-archive (``manifest.json``, ``<id>/layer.tar``; Podman's
    ``layer.tar`` is a link to ``<diff id>.tar``) and the OCI layout (``index.json``,
    ``blobs/sha256/<hex>``, usually with a ``manifest.json`` naming the blobs), with plain or
    compressed layers. ``image`` names the image in messages. Raises :class:`UnreadableImage` for
    anything unexpected; the chunks' own errors pass unchanged."""
    saved = _Saved()
    stream: IO[bytes] = io.BufferedReader(_Chunks(iter(chunks)), 1 << 20)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                _keep(archive, member, saved)
    except _SourceFailed as failed:
        raise failed.error from None
    except _READ_ERRORS as err:
        raise UnreadableImage(image, f"is not a tar archive read to its end ({_why(err)})") from None
    layout = _layout(saved, image)
    config = _document(saved, layout.config, "config", image)
    if not isinstance(config, dict):
        raise UnreadableImage(image, f"has a config {layout.config} that is not a JSON object")
    tree: dict[str, Node] = {}
    for path in layout.layers:
        apply_layer(tree, _layer(saved, path, image))
    return ImageFacts(config, tree, layout.blobs)


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _keep(archive: tarfile.TarFile, member: tarfile.TarInfo, saved: _Saved) -> None:
    """Keep what may matter of one member of the save stream (never a layer's contents)."""
    name = _member_path(member.name)
    if member.issym():
        # a link's data cannot be read in stream mode: note where it points and read the target
        saved.links[name] = _member_path(posixpath.join(posixpath.dirname(name), member.linkname))
        return
    if member.islnk():
        saved.links[name] = _member_path(member.linkname)  # a hard link names an archive path
        return
    if not member.isreg():
        return
    # An ExFileObject (a BufferedReader): its first bytes can be looked at without consuming them.
    data = cast(io.BufferedReader, archive.extractfile(member))
    head = data.peek(512)[:512]
    if head.startswith(GZIP_MAGIC):
        _keep_layer(saved, name, gzip.GzipFile(fileobj=data, mode="rb"))
    elif head.startswith(ZSTD_MAGIC):
        if _ZSTD is None:
            saved.problems[name] = "is compressed with zstd, which this Python cannot decompress"
        else:
            _keep_layer(saved, name, _ZSTD.ZstdFile(data))
    elif head.lstrip()[:1] in (b"{", b"["):
        if member.size > JSON_LIMIT:
            saved.problems[name] = f"is a JSON document of {member.size} bytes, more than is read"
        else:
            saved.documents[name] = data.read()
    else:
        _keep_layer(saved, name, data)


def _keep_layer(saved: _Saved, name: str, data: IO[bytes] | gzip.GzipFile) -> None:
    try:
        with tarfile.open(fileobj=data, mode="r|") as layer:
            saved.layers[name] = list(layer)
    except _READ_ERRORS as err:
        # Not necessarily a layer (a VERSION file, a blob nothing names): only an error if a
        # manifest names it as one. If the save stream itself broke, reading on says so.
        saved.not_tars[name] = _why(err)


def _resolve(saved: _Saved, path: str, image: str) -> str:
    """The member that ``path`` (a name in a manifest) ends at once links are followed."""
    name = _member_path(path)
    for _ in range(_LINK_HOPS):
        if name not in saved.links:
            return name
        name = saved.links[name]
    raise UnreadableImage(image, f"has links from {path} that do not end (a loop?)")


def _document(saved: _Saved, path: str, what: str, image: str) -> Any:
    name = _resolve(saved, path, image)
    if name in saved.documents:
        try:
            return json.loads(saved.documents[name])
        except (ValueError, RecursionError) as err:
            raise UnreadableImage(image, f"has a {what} {path} that is not JSON ({_why(err)})") from None
    if name in saved.problems:
        raise UnreadableImage(image, f"has a {what} {path} that {saved.problems[name]}")
    if name in saved.layers:
        raise UnreadableImage(image, f"has a {what} {path} that is a tar, not JSON")
    if name in saved.not_tars:
        raise UnreadableImage(image, f"has a {what} {path} that is not JSON")
    raise UnreadableImage(image, f"names a {what} {path} that it does not carry")


def _layer(saved: _Saved, path: str, image: str) -> list[tarfile.TarInfo]:
    name = _resolve(saved, path, image)
    if name in saved.layers:
        return saved.layers[name]
    if name in saved.problems:
        raise UnreadableImage(image, f"has a layer {path} that {saved.problems[name]}")
    if name in saved.not_tars:
        raise UnreadableImage(image, f"has a layer {path} that is not a tar ({saved.not_tars[name]})")
    if name in saved.documents:
        raise UnreadableImage(image, f"has a layer {path} that is a JSON document, not a tar")
    raise UnreadableImage(image, f"names a layer {path} that it does not carry")


@dataclass
class _Layout:
    config: str  # the config's member name
    layers: list[str]  # the layers' member names, bottom first
    blobs: list[Blob]  # the layers as an OCI manifest names them; empty when the save has none


def _layout(saved: _Saved, image: str) -> _Layout:
    """Where the config and the layers are, from ``manifest.json`` (every engine writes one) or
    else from the OCI ``index.json``."""
    if saved.holds("manifest.json"):
        images = _document(saved, "manifest.json", "manifest", image)
        entry = images[0] if isinstance(images, list) and images else None
        config = entry.get("Config") if isinstance(entry, dict) else None
        layers = entry.get("Layers") if isinstance(entry, dict) else None
        if not (isinstance(config, str) and isinstance(layers, list) and _strings(layers)):
            raise UnreadableImage(image, "has a manifest.json without an image's Config and Layers")
        return _Layout(config, layers, _oci_blobs(saved, layers, image))
    if saved.holds("index.json"):
        manifest = _oci_manifest(saved, image)
        descriptors = manifest.get("layers")
        if not isinstance(descriptors, list):
            raise UnreadableImage(image, "has an OCI manifest without layers")
        blobs = [_descriptor_blob(descriptor, image) for descriptor in descriptors]
        return _Layout(_blob(manifest.get("config"), image), [_blob_path(b.digest) for b in blobs], blobs)
    raise UnreadableImage(image, "has no manifest.json or index.json")


def _strings(values: list[Any]) -> bool:
    return all(isinstance(value, str) for value in values)


def _oci_blobs(saved: _Saved, layers: list[str], image: str) -> list[Blob]:
    """The layers as the OCI manifest beside ``manifest.json`` names them (digest, size, media
    type: a child's manifest names the same blobs), if it names the same members; else none."""
    if not saved.holds("index.json"):
        return []
    try:
        descriptors = _oci_manifest(saved, image).get("layers")
        blobs = [_descriptor_blob(d, image) for d in descriptors] if isinstance(descriptors, list) else []
        same = len(blobs) == len(layers) and all(
            _resolve(saved, _blob_path(blob.digest), image) == _resolve(saved, path, image)
            for blob, path in zip(blobs, layers, strict=True)
        )
    except UnreadableImage:
        return []  # manifest.json is enough for the facts; the blobs stay unknown
    return blobs if same else []


def _oci_manifest(saved: _Saved, image: str) -> dict[str, Any]:
    """The image manifest that ``index.json`` leads to, through nested indexes if need be."""
    index = _document(saved, "index.json", "index", image)
    for _ in range(_INDEX_DEPTH):
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise UnreadableImage(image, "has an OCI index that lists no manifests")
        path = _blob(_choose(saved, manifests, image), image)
        found = _document(saved, path, "manifest", image)
        if not isinstance(found, dict):
            raise UnreadableImage(image, f"has a manifest {path} that is not a JSON object")
        if "manifests" not in found:
            return found
        index = found  # an image index (one manifest per platform, attestations)
    raise UnreadableImage(image, f"nests OCI indexes more than {_INDEX_DEPTH} deep")


def _choose(saved: _Saved, manifests: list[Any], image: str) -> Any:
    """The only manifest, or the first for Linux (not an attestation). Those the save carries are
    looked at first: an engine saves one platform of a multi-platform image."""
    carried = [m for m in manifests if saved.holds(_resolve(saved, _blob(m, image), image))]
    candidates = carried or manifests
    if len(candidates) == 1:
        return candidates[0]
    for descriptor in candidates:
        platform = descriptor.get("platform")
        if isinstance(platform, dict) and platform.get("os") == "linux":
            return descriptor
    raise UnreadableImage(image, f"has an OCI index of {len(candidates)} manifests, none for Linux")


def _blob(descriptor: Any, image: str) -> str:
    """The member name of the blob an OCI descriptor points at: ``blobs/<algorithm>/<hex>``."""
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    if not (isinstance(digest, str) and _DIGEST.fullmatch(digest)):
        raise UnreadableImage(image, f"has an OCI descriptor without a usable digest: {descriptor!r:.200}")
    return _blob_path(digest)


def _blob_path(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def _descriptor_blob(descriptor: Any, image: str) -> Blob:
    _blob(descriptor, image)  # the digest is checked there
    size, media_type = descriptor.get("size"), descriptor.get("mediaType")
    if not (isinstance(size, int) and size >= 0 and isinstance(media_type, str)):
        raise UnreadableImage(image, f"has an OCI layer descriptor without size or type: {descriptor!r:.200}")
    return Blob(descriptor["digest"], size, media_type)
