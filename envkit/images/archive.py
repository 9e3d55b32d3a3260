"""Images envkit writes itself: deterministic layer tars, a config, a manifest, an archive to load.

An engine names a layer by the sha256 of its uncompressed tar (the config's
``diff_ids``) and an image by the sha256 of its config bytes (Docker's classic
store, Podman) or of its manifest's bytes (Docker's containerd store). So an
image whose layers, config and manifest are written the same way from the same
inputs has the same ID on every machine: layers hold their entries in a fixed
order with fixed times and owners (:class:`LayerWriter`), and the config and
the manifest are JSON with sorted keys and no spaces (:func:`config_bytes`,
:func:`manifest_bytes`). The archive :func:`load` sends is an OCI image layout
and a docker-archive at once, so each engine reads the half it knows; it
carries only the new layers and names a parent's by the blobs the engine holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from envkit.docker.engine import Daemon
from envkit.errors import BuildError, DaemonError

EPOCH = "1970-01-01T00:00:00Z"


def platform_fields(platform: str) -> dict[str, str]:
    """An image config's ``architecture``, ``os`` and (when the platform names one) ``variant``
    for ``os/arch[/variant]`` (``linux/arm64/v8``: architecture arm64, variant v8)."""
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    fields = {"architecture": arch or "amd64", "os": os_name or "linux"}
    if variant:
        fields["variant"] = variant
    return fields


def timestamp(seconds: int) -> str:
    """An image config's ``created``: RFC 3339 in UTC, whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def config_bytes(config: Mapping[str, Any]) -> bytes:
    """The config as the archive carries it, written the one same way everywhere."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def image_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class _Hashing(io.RawIOBase):
    """A writer that hashes what passes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self._out.write(view)
        return len(view)


class CheckedReader(io.RawIOBase):
    """Reads at most ``size`` bytes of a file, hashing what passes through."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f = f
        self._left = size
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        if self._f.read(1):  # grew since it was measured
            self._hash.update(b"\0")
        return self._hash.hexdigest()


class LayerWriter:
    """A layer tar being written, hashed as it goes: :attr:`diff_id` once closed.

    Entries are added in the order the caller gives (it sorts them); every header
    is PAX with the caller's mtime, numeric owners and no user or group names.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("wb")
        self._hashing = _Hashing(self._file)
        self._tar = tarfile.open(  # noqa: SIM115 - closed by close()
            fileobj=self._hashing, mode="w|", format=tarfile.PAX_FORMAT
        )
        self.diff_id = ""

    def add(self, info: tarfile.TarInfo, data: IO[bytes] | io.RawIOBase | None = None) -> None:
        info.uname = info.gname = ""
        self._tar.addfile(info, data)

    def close(self) -> str:
        self._tar.close()
        self._file.close()
        self.diff_id = "sha256:" + self._hashing.digest.hexdigest()
        return self.diff_id

    def abandon(self) -> None:
        self._file.close()

    def __enter__(self) -> LayerWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()


LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Blob:
    """A layer as a manifest names it: the digest of the blob the engine keeps (the diff id for
    an uncompressed layer; on the containerd store a pulled or imported layer is kept gzipped),
    its size and media type."""

    digest: str
    size: int
    media_type: str = LAYER_TAR

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "mediaType": self.media_type, "size": self.size}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Blob:
        return cls(str(data["digest"]), int(data["size"]), str(data.get("mediaType") or LAYER_TAR))


def manifest_bytes(raw_config: bytes, layers: Sequence[Blob]) -> bytes:
    """The OCI manifest of an image, written the one same way everywhere: on the containerd
    store its digest is the image's ID."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": image_id(raw_config), "size": len(raw_config)},
        "layers": [blob.to_json() for blob in layers],
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def write_archive(
    out: IO[bytes], raw_config: bytes, layers: Sequence[Blob], new_layers: Mapping[str, Path]
) -> bytes:
    """Write an image archive that every engine loads: an OCI image layout (``oci-layout``,
    ``index.json``, ``blobs/sha256/...``: what Docker's containerd store and Podman read) that is
    also a docker-archive (``manifest.json`` naming the same blobs: what Docker's classic store
    reads). Only ``new_layers`` (by digest) are carried: the others are a parent's, which the
    engine has (by diff id, or on the containerd store by the digest a :class:`Blob` names).
    Entries are written in a fixed order with fixed headers. The manifest's bytes are returned."""
    manifest = manifest_bytes(raw_config, layers)
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": image_id(manifest), "size": len(manifest)}],
    }

    def blob_name(digest: str) -> str:
        return "blobs/sha256/" + digest.removeprefix("sha256:")

    legacy = [
        {
            "Config": blob_name(image_id(raw_config)),
            "RepoTags": None,
            "Layers": [blob_name(blob.digest) for blob in layers],
        }
    ]
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(blob_name(image_id(raw_config)), raw_config)
        add(blob_name(image_id(manifest)), manifest)
        for digest, path in new_layers.items():
            info = tarfile.TarInfo(blob_name(digest))
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)
        add("index.json", json.dumps(index, sort_keys=True, separators=(",", ":")).encode())
        add("manifest.json", json.dumps(legacy, sort_keys=True, separators=(",", ":")).encode())
    return manifest


def load(
    daemon: Daemon,
    image: str,
    raw_config: bytes,
    *,
    layers: Sequence[Blob],
    new_layers: Mapping[str, Path],
    workdir: Path,
    stall: float | None,
) -> str:
    """Load the image of ``raw_config`` (untagged) from an archive :func:`write_archive` writes;
    its ID, as the engine reports it.

    ``layers`` are all the image's layers in order; ``new_layers`` the files of those (by
    digest) the engine may not have yet. The ID is the config's digest on Docker's classic store
    and on Podman, the manifest's digest on the containerd store: either way a function of the
    bytes envkit wrote, so the same inputs give the same ID. A load that fails leaves no image.
    """
    archive = workdir / "image.tar"
    with archive.open("wb") as out:
        manifest = write_archive(out, raw_config, layers, new_layers)
    candidates = (image_id(raw_config), image_id(manifest))
    # The same inputs give the same image: one already here (under another tag) is never removed.
    existed = {c for c in candidates if daemon.inspect_image(c) is not None}
    ours = dict((json.loads(raw_config).get("config") or {}).get("Labels") or {})

    def clean() -> None:
        for candidate in candidates:
            if candidate not in existed:
                discard(daemon, candidate, ours)

    try:
        with archive.open("rb") as f:
            reported = daemon.load(f, archive.stat().st_size, stall=stall)
    except DaemonError as err:
        clean()
        if err.timed_out:
            raise BuildError(image, f"docker load did not finish: {err.detail}", fix=_STUCK) from None
        raise BuildError(image, f"docker load of the image envkit wrote was refused: {err.detail}") from None
    finally:
        archive.unlink(missing_ok=True)
    if reported is not None and reported not in candidates:
        clean()
        raise BuildError(
            image,
            f"the engine reports it loaded {reported}, which is neither the config's digest "
            f"({candidates[0]}) nor the manifest's ({candidates[1]})",
        )
    for candidate in [reported] if reported else candidates:
        if daemon.inspect_image(candidate) is not None:
            return candidate
    clean()
    raise BuildError(image, f"the load reported success, but the engine has no image {candidates[0]}")


CLEANUP_BOUND = 10.0  # seconds each call that removes a failed build's image may wait
_STUCK = "check the daemon (`docker info`, its logs), then build again"


def discard(daemon: Daemon, image: str, labels: Mapping[str, str]) -> bool:
    """Remove ``image``, made by a build or a load that failed, if it is still untagged and
    carries every one of ``labels`` (that build's); whether it was removed. Each call waits at most
    :data:`CLEANUP_BOUND` seconds, and any failure leaves the image to ``envkit gc``."""
    with contextlib.suppress(DaemonError), daemon.bounded(CLEANUP_BOUND):
        found = daemon.inspect_image(image)
        if found is None or found.get("RepoTags"):
            return False
        have = (found.get("Config") or {}).get("Labels") or {}
        if not labels or any(have.get(name) != value for name, value in labels.items()):
            return False
        daemon.remove_image(str(found.get("Id") or image))
        return True
    return False
