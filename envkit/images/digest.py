"""Content keys: what goes into an image, reduced to one SHA-256.

An image's key covers the key-schema version and the builder's identity, the
Dockerfile's (or recipe's) bytes, every file of the build context that
Docker's ignore rules let through (path, type, executable bit, content digest
or symlink target), the effective build args, target and platform, the
identity of each external base image and the keys of its parent images in the
stack. It leaves out mtimes, owners and where the checkout lives, so two
clones give the same keys. Hashing is the expensive part: :class:`Hasher`
reads a file only when the stat cache does not know it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envkit.config.model import ImageSpec
from envkit.images.context import context_entries, normalised_mode
from envkit.images.statcache import StatCache
from envkit.progress import Progress, State

KEY_SCHEMA = 3  # 2: the builder is chosen per image; 3: an external base is known by its content, not its ID
# The builders' identities. A switch of builder must change the key; these values are fixed,
# since changing one changes every key of its images (and rebuilds them) too.
BUILDER = "docker-classic-via-docker-py/1"  # the classic builder (any RUN)
ASSEMBLER = "envkit-assembler/1"  # envkit's own assembler (no RUN: see envkit.images.assemble)
RECIPE_BUILDER = "envkit-recipe/2"  # a Debian recipe: mmdebstrap, loaded as one layer with a fixed config
TAG_KEY_LENGTH = 16
_CHUNK = 1 << 20
_PARALLEL_MIN_BYTES = 256 << 10
LARGE_CONTEXT = 50_000  # entries: more is likely a context that is not the folder meant
LARGE_HASH = 200 << 20  # bytes to hash, past which hashing is worth a note


def file_entry(kind: str, mode: int, digest: str) -> str:
    """How one context entry enters the key and the manifest: ``"<kind> <mode> <digest>"``.

    ``kind`` is ``f`` (file: digest of its content), ``d`` (directory: no
    digest) or ``l`` (symlink: its target); ``mode`` is octal, normalised.
    """
    return f"{kind} {mode:o} {digest}"


def split_entry(entry: str) -> tuple[str, int, str]:
    kind, mode, digest = entry.split(" ", 2)
    return kind, int(mode, 8), digest


@dataclass(frozen=True)
class Inputs:
    """Everything that makes one image; :attr:`key` is their digest."""

    dockerfile: str
    args: Mapping[str, str]
    target: str | None
    platform: str
    bases: Mapping[str, str]
    parents: Mapping[str, str]
    files: Mapping[str, str]  # path relative to the context -> file_entry()
    schema: int = KEY_SCHEMA
    builder: str = BUILDER
    key: str = field(init=False)

    def __post_init__(self) -> None:
        h = hashlib.sha256(json.dumps(self.head(), sort_keys=True).encode())
        h.update(b"\0")
        for path in sorted(self.files):
            h.update(f"{path}\0{self.files[path]}\n".encode("utf-8", "surrogateescape"))
        object.__setattr__(self, "key", h.hexdigest())

    def head(self) -> dict[str, Any]:
        """The inputs without the file list (small enough for an image label)."""
        return {
            "schema": self.schema,
            "builder": self.builder,
            "dockerfile": self.dockerfile,
            "args": dict(sorted(self.args.items())),
            "target": self.target,
            "platform": self.platform,
            "bases": dict(sorted(self.bases.items())),
            "parents": dict(sorted(self.parents.items())),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.head(), "key": self.key, "files": dict(sorted(self.files.items()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Inputs:
        """Inputs as recorded (ValueError for a record of the wrong shape)."""
        for name in ("args", "bases", "parents", "files"):
            value = data[name]
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ValueError(f"{name} is not a map of strings")
        if not isinstance(data["dockerfile"], str) or not isinstance(data["platform"], str):
            raise ValueError("dockerfile or platform is not a string")
        if data["target"] is not None and not isinstance(data["target"], str):
            raise ValueError("target is not a string")
        return cls(
            dockerfile=data["dockerfile"],
            args=data["args"],
            target=data["target"],
            platform=data["platform"],
            bases=data["bases"],
            parents=data["parents"],
            files=data["files"],
            schema=data["schema"],
            builder=data["builder"],
        )


def short_key(key: str) -> str:
    return key[:TAG_KEY_LENGTH]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Hasher:
    """Digests files through a :class:`StatCache`, hashing misses in parallel."""

    def __init__(self, cache: StatCache, workers: int | None = None) -> None:
        self.cache = cache
        self.started_ns = time.time_ns()
        self.workers = workers or min(8, (os.cpu_count() or 2) * 2)
        self.hashed_files = 0
        self.hashed_bytes = 0

    def context_files(
        self, spec: ImageSpec, skip: Iterable[Path] = (), progress: Progress | None = None
    ) -> dict[str, str]:
        """Path -> :func:`file_entry` for every entry of the context, sorted by path.

        A long walk or a large context is said on ``progress``: a context of a whole system
        tree (``context = "/usr"``) is a mistake better named than hashed in silence.
        """
        out: dict[str, str] = {}
        misses: list[tuple[str, str, os.stat_result]] = []
        lookup = self.cache.lookup
        root = str(spec.context)

        def tick(count: int) -> None:
            if progress is not None:
                progress.note(
                    spec.name, f"reading its context {root}: {count:,} entries so far", State.WORKING
                )

        entries = context_entries(spec, skip, self.cache, tick)
        if progress is not None and len(entries) > LARGE_CONTEXT:
            progress.note(
                spec.name,
                f"its context {root} holds {len(entries):,} entries: is that the folder you meant? "
                "A .dockerignore there leaves out what the image does not need",
            )
        for path, st in entries:
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                out[path] = "d 755 "
            elif stat.S_ISLNK(mode):
                out[path] = "l 777 " + os.readlink(os.path.join(root, path))
            else:
                absolute = os.path.join(root, path)
                digest = lookup(absolute, st)
                if digest is None:
                    out[path] = ""  # keeps the sorted order; filled in below
                    misses.append((path, absolute, st))
                else:
                    out[path] = file_entry("f", normalised_mode(st), digest)
        if progress is not None and sum(m[2].st_size for m in misses) > LARGE_HASH:
            size = sum(m[2].st_size for m in misses)
            progress.note(spec.name, f"hashing {len(misses):,} files ({size / 1e6:,.0f} MB)", State.WORKING)
        digests = self._hash_all([m[1] for m in misses])
        for (path, absolute, st), digest in zip(misses, digests, strict=True):
            self.cache.store(absolute, st, digest)
            out[path] = file_entry("f", normalised_mode(st), digest)
        return out

    def _hash_all(self, paths: list[str]) -> list[str]:
        sizes = [os.path.getsize(p) for p in paths]
        self.hashed_files += len(paths)
        self.hashed_bytes += sum(sizes)
        if len(paths) < 2 or sum(sizes) < _PARALLEL_MIN_BYTES:
            return [file_digest(p) for p in paths]
        # hashlib releases the GIL on large buffers, so threads use every core.
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(file_digest, paths))


def image_inputs(
    spec: ImageSpec,
    files: Mapping[str, str],
    *,
    platform: str,
    bases: Mapping[str, str],
    parents: Mapping[str, str],
    builder: str = BUILDER,
) -> Inputs:
    """The inputs of ``spec``; ``builder`` is the one chosen for a Dockerfile image."""
    return Inputs(
        builder=RECIPE_BUILDER if spec.recipe is not None else builder,
        dockerfile=hashlib.sha256(spec.definition.encode("utf-8")).hexdigest(),
        args=dict(spec.args),
        target=spec.target,
        platform=spec.platform or platform,
        bases=dict(bases),
        parents=dict(parents),
        files=files,
    )
