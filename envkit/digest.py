"""Content keys: what goes into an image, reduced to one SHA-256.

An image's key covers the key-schema version and the builder's identity, the
Dockerfile's bytes, every file of the build context that Docker's ignore rules
let through (path, type, executable bit, content digest or symlink target), the
effective build args, target and platform, the identity of each external base
image and the keys of its parent images in the stack. It leaves out mtimes,
owners and where the checkout lives, so two clones give the same keys.

Hashing is the expensive part, so file digests are cached by stat in the state
directory, and a file whose mtime is not older than the cache's own write time
is hashed again (git's "racy clean" rule): a same-size edit within the mtime
granularity can never be mistaken for unchanged. ctime is part of the stat key,
which also catches ``touch -r`` style edits that restore an old mtime.
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

from envkit import recipe as recipe_mod
from envkit.config import ImageSpec
from envkit.errors import ConfigError
from envkit.fsutil import atomic_write_text, ensure_private_dir

KEY_SCHEMA = 1
# The builder decides what an image is made of; a switch of builder must change every key.
BUILDER = "docker-classic-via-docker-py/1"
RECIPE_BUILDER = recipe_mod.BUILDER  # images made from a Debian recipe (mmdebstrap + docker import)
TAG_KEY_LENGTH = 16
_CHUNK = 1 << 20
_PARALLEL_MIN_BYTES = 256 << 10


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


def ignore_patterns(spec: ImageSpec) -> list[str]:
    """The ignore rules Docker applies: ``<Dockerfile>.dockerignore`` first, else the context's."""
    for candidate in (Path(f"{spec.dockerfile}.dockerignore"), spec.context / ".dockerignore"):
        if candidate.is_file():
            try:
                lines = candidate.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise ConfigError(candidate, "", "not UTF-8 text", "save the ignore file as UTF-8") from None
            return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return []


def context_entries(
    spec: ImageSpec, skip: Iterable[Path] = (), cache: StatCache | None = None
) -> list[tuple[str, os.stat_result]]:
    """The context's paths after the ignore rules, sorted, with their lstat.

    The rules are docker-py's ``PatternMatcher`` (Docker's own semantics,
    negations included); the walk is one ``scandir`` pass that prunes excluded
    directories unless a negation may re-include something below them, as
    docker-py's walk does. ``.dockerignore`` itself never reaches the image (the
    builder drops it), and directories in ``skip`` (envkit's state directory)
    are never sent.

    With a ``cache``, a context whose rules and directories are unchanged since
    the last walk is not walked nor matched again: its recorded paths are only
    lstat'ed (see :meth:`StatCache.listing`).
    """
    patterns = ignore_patterns(spec)
    skipped = set()
    for skip_dir in skip:
        try:
            skipped.add(Path(skip_dir).resolve().relative_to(spec.context).as_posix())
        except ValueError:
            continue
    context = str(spec.context)
    rules = hashlib.sha256(json.dumps([patterns, sorted(skipped)]).encode()).hexdigest()
    if cache is not None:
        listed = cache.listing(context, rules)
        if listed is not None:
            return listed
    entries, directories = _walk(context, patterns, skipped)
    if cache is not None:
        cache.store_listing(context, rules, directories, [path for path, _ in entries])
    return entries


def _walk(
    context: str, patterns: list[str], skipped: set[str]
) -> tuple[list[tuple[str, os.stat_result]], dict[str, list[int]]]:
    """Included entries, and the signature of every directory that was listed."""
    matcher = None
    if patterns:
        from docker.utils.build import PatternMatcher  # imported only when there are rules to match

        matcher = PatternMatcher(patterns)
    negations = [p.cleaned_pattern for p in matcher.patterns if p.exclusion] if matcher else []
    entries: list[tuple[str, os.stat_result]] = []
    directories = {"": StatCache.dir_signature(os.lstat(context))}
    pending = [("", context)]
    while pending:
        parent, directory = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                path = f"{parent}{entry.name}"
                if path in skipped:
                    continue
                # (docker-py's stub says PathLike; the matcher works on str paths)
                excluded = matcher is not None and matcher.matches(path)  # type: ignore[arg-type]
                st = entry.stat(follow_symlinks=False)
                if not excluded and path != ".dockerignore" and _sendable(st.st_mode):
                    entries.append((path, st))
                if stat.S_ISDIR(st.st_mode) and (not excluded or any(n.startswith(path) for n in negations)):
                    directories[path] = StatCache.dir_signature(st)
                    pending.append((path + "/", entry.path))
    entries.sort(key=lambda item: item[0])
    return entries, directories


def _sendable(mode: int) -> bool:
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)


def normalised_mode(st: os.stat_result) -> int:
    """Permission bits as envkit sends them: like git, only the executable bit survives."""
    if stat.S_ISDIR(st.st_mode):
        return 0o755
    if stat.S_ISLNK(st.st_mode):
        return 0o777
    return 0o755 if st.st_mode & stat.S_IXUSR else 0o644


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class StatCache:
    """What was learnt about the files last time, persisted in the state dir.

    ``entries`` maps a file's path and stat signature to its content digest.
    ``listings`` keeps, per context, the signature of every directory walked
    and the paths the ignore rules let through: a directory's mtime and ctime
    change whenever an entry is added, removed or renamed in it, so while none
    of them changed, neither did the list of paths (git's untracked cache).
    Both obey the racy rule against the cache's write time.
    """

    VERSION = 2

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written_ns = 0
        self.entries: dict[str, list[Any]] = {}
        self.listings: dict[str, dict[str, Any]] = {}
        self.seen: set[str] = set()
        self.dirty = False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") == self.VERSION:
                self.written_ns = int(data["written_ns"])
                self.entries = dict(data["entries"])
                self.listings = dict(data["listings"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            # Missing or unreadable: start empty; every file is hashed again.
            self.entries, self.listings = {}, {}

    @staticmethod
    def dir_signature(st: os.stat_result) -> list[int]:
        return [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]

    def _racy(self, st: os.stat_result) -> bool:
        return st.st_mtime_ns >= self.written_ns or st.st_ctime_ns >= self.written_ns

    def listing(self, context: str, rules: str) -> list[tuple[str, os.stat_result]] | None:
        """The context's entries as recorded, if no directory of it changed since; else None."""
        self.seen.add(context)
        recorded = self.listings.get(context)
        if recorded is None or recorded.get("rules") != rules:
            return None
        try:
            for directory, signature in recorded["dirs"].items():
                st = os.lstat(os.path.join(context, directory))
                if self.dir_signature(st) != signature or self._racy(st):
                    return None
            return [(path, os.lstat(os.path.join(context, path))) for path in recorded["paths"]]
        except (OSError, KeyError, TypeError, AttributeError):
            return None  # something went away since: walk again

    def store_listing(self, context: str, rules: str, dirs: dict[str, list[int]], paths: list[str]) -> None:
        self.seen.add(context)
        self.listings[context] = {"rules": rules, "dirs": dirs, "paths": paths}
        self.dirty = True

    @staticmethod
    def signature(st: os.stat_result) -> list[int]:
        return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        self.seen.add(path)
        entry = self.entries.get(path)
        if entry is None or entry[:-1] != self.signature(st):
            return None
        if self._racy(st):
            return None  # could have changed within the timestamp granularity
        return str(entry[-1])

    def store(self, path: str, st: os.stat_result, digest: str) -> None:
        self.seen.add(path)
        self.entries[path] = [*self.signature(st), digest]
        self.dirty = True

    def save(self, started_ns: int, *, prune: bool) -> None:
        """Write the cache, stamped with the time the hashing started."""
        if prune:
            for table in (self.entries, self.listings):
                stale = set(table) - self.seen
                for path in stale:
                    del table[path]
                self.dirty = self.dirty or bool(stale)
        if not self.dirty:
            return
        ensure_private_dir(self.path.parent)
        payload = {
            "version": self.VERSION,
            "written_ns": started_ns,
            "entries": self.entries,
            "listings": self.listings,
        }
        atomic_write_text(self.path, json.dumps(payload, separators=(",", ":")))
        self.written_ns = started_ns
        self.dirty = False


class Hasher:
    """Digests files through a :class:`StatCache`, hashing misses in parallel."""

    def __init__(self, cache: StatCache, workers: int | None = None) -> None:
        self.cache = cache
        self.started_ns = time.time_ns()
        self.workers = workers or min(8, (os.cpu_count() or 2) * 2)
        self.hashed_files = 0
        self.hashed_bytes = 0

    def context_files(self, spec: ImageSpec, skip: Iterable[Path] = ()) -> dict[str, str]:
        """Path -> :func:`file_entry` for every entry of the context, sorted by path."""
        out: dict[str, str] = {}
        misses: list[tuple[str, str, os.stat_result]] = []
        lookup = self.cache.lookup
        root = str(spec.context)
        for path, st in context_entries(spec, skip, self.cache):
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
) -> Inputs:
    return Inputs(
        builder=RECIPE_BUILDER if spec.recipe is not None else BUILDER,
        dockerfile=hashlib.sha256(spec.dockerfile_text.encode("utf-8")).hexdigest(),
        args=dict(spec.args),
        target=spec.target,
        platform=spec.platform or platform,
        bases=dict(bases),
        parents=dict(parents),
        files=files,
    )


def explain(old: Inputs | None, new: Inputs, *, limit: int = 10) -> list[str]:
    """Why ``new`` is not ``old``: one short phrase per changed input."""
    if old is None:
        return ["no earlier build of this image is recorded here"]
    if old.key == new.key:
        return ["the image was removed locally; its inputs are unchanged"]
    reasons: list[str] = []
    if (old.schema, old.builder) != (new.schema, new.builder):
        reasons.append(f"the key schema or builder changed ({old.builder} -> {new.builder})")
    if old.dockerfile != new.dockerfile:
        reasons.append("the recipe changed" if new.builder == RECIPE_BUILDER else "the Dockerfile changed")
    reasons += _diff_map("build arg", old.args, new.args)
    if old.target != new.target:
        reasons.append(f"target changed: {old.target} -> {new.target}")
    if old.platform != new.platform:
        reasons.append(f"platform changed: {old.platform} -> {new.platform}")
    reasons += _diff_map("base image", old.bases, new.bases, short=True)
    for name in sorted(set(old.parents) | set(new.parents)):
        before, after = old.parents.get(name), new.parents.get(name)
        if before != after:
            if before and after:
                reasons.append(f"parent {name} changed ({short_key(before)} -> {short_key(after)})")
            else:
                reasons.append(f"parent {name} {'added' if after else 'removed'}")
    files: list[str] = []
    for path in sorted(set(old.files) | set(new.files)):
        before, after = old.files.get(path), new.files.get(path)
        if before == after:
            continue
        if before is None:
            files.append(f"file added: {path}")
        elif after is None:
            files.append(f"file removed: {path}")
        else:
            files.append(f"file changed: {path} ({_file_change(before, after)})")
    if len(files) > limit:
        files = [*files[:limit], f"... and {len(files) - limit} more file changes"]
    return reasons + files


def _file_change(before: str, after: str) -> str:
    kind_a, mode_a, digest_a = split_entry(before)
    kind_b, mode_b, digest_b = split_entry(after)
    if kind_a != kind_b:
        names = {"f": "file", "d": "directory", "l": "symlink"}
        return f"{names[kind_a]} -> {names[kind_b]}"
    parts = []
    if mode_a != mode_b:
        parts.append(f"mode {mode_a:o} -> {mode_b:o}")
    if digest_a != digest_b:
        parts.append(f"link target {digest_a} -> {digest_b}" if kind_b == "l" else "content")
    return ", ".join(parts)


def _diff_map(what: str, old: Mapping[str, str], new: Mapping[str, str], *, short: bool = False) -> list[str]:
    def show(value: str) -> str:
        return value[:19] + "..." if short and len(value) > 22 else value

    out = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            out.append(f"{what} added: {name}={show(after or '')}")
        elif after is None:
            out.append(f"{what} removed: {name}")
        else:
            out.append(f"{what} changed: {name}: {show(before)} -> {show(after)}")
    return out
