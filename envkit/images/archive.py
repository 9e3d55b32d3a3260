"""Images envkit writes itself: deterministic layer tars, a config, a docker-archive, ``docker load``.

The engine names an image by the sha256 of its config bytes, and a layer by the
sha256 of its uncompressed tar (the config's ``diff_ids``). So an image whose
layers and config are written the same way from the same inputs has the same
ID everywhere: layers hold their entries in a fixed order with fixed times and
owners (:class:`LayerWriter`), and the config is JSON with sorted keys and no
spaces (:func:`config_bytes`). A docker-archive whose manifest names layers the
engine already has (a parent's) need not carry them: :func:`load` sends only
the new ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from envkit.docker.engine import Daemon
from envkit.errors import BuildError, DaemonError

EPOCH = "1970-01-01T00:00:00Z"


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


def load(
    daemon: Daemon,
    image: str,
    raw_config: bytes,
    *,
    diff_ids: Sequence[str],
    new_layers: Mapping[str, Path],
    workdir: Path,
    stall: float | None,
) -> str:
    """``docker load`` the image of ``raw_config`` (untagged); its ID.

    ``new_layers`` are the layer tars (by diff id) the engine may not have yet;
    the other ``diff_ids`` are a parent's, which it has.
    """
    expected = image_id(raw_config)
    config_name = expected.removeprefix("sha256:") + ".json"
    layer_names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": None, "Layers": layer_names}]).encode()
    archive = workdir / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in ((config_name, raw_config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for diff_id, path in new_layers.items():
            tar.add(str(path), arcname=f"{diff_id.removeprefix('sha256:')}/layer.tar")
    try:
        with archive.open("rb") as f:
            daemon.load(f, archive.stat().st_size, stall=stall)
    except DaemonError as err:
        raise BuildError(image, f"docker load of the image envkit wrote failed: {err.detail}") from None
    finally:
        archive.unlink(missing_ok=True)
    found = daemon.inspect_image(expected)
    if found is None:
        raise BuildError(image, f"docker load reported success, but the engine has no image {expected}")
    return expected
