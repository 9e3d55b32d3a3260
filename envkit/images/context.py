"""A build context as Docker sees it: the paths its ignore rules let through.

The rules are Docker's (``<Dockerfile>.dockerignore`` wins over the context's
``.dockerignore``; negations included; :mod:`envkit.images.ignore`). The walk
is one ``scandir`` pass that prunes excluded directories unless a negation may
re-include something below them. A context whose rules and directories did
not change since the last walk is not walked again (:class:`StatCache`).
Modes are normalised like git's: only the executable bit survives.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from envkit.config.model import ImageSpec
from envkit.errors import ConfigError
from envkit.images.ignore import IgnoreRules, read_patterns
from envkit.images.statcache import StatCache

TICK = 2.0  # seconds between progress notes of a long context walk


def ignore_patterns(spec: ImageSpec) -> list[str]:
    """The ignore rules Docker applies: ``<Dockerfile>.dockerignore`` first, else the context's.

    The patterns as Docker reads them (:func:`read_patterns`), checked as Docker
    checks them: one Docker would reject is a :class:`ConfigError` naming the
    file and the line.
    """
    candidates = [spec.context / ".dockerignore"]
    if spec.dockerfile is not None:
        candidates.insert(0, Path(f"{spec.dockerfile}.dockerignore"))
    for candidate in candidates:
        if candidate.is_file():
            try:  # bytes: Docker ends a line at "\n" only, where text mode would also end one at "\r"
                text = candidate.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(candidate, "", "not UTF-8 text", "save the ignore file as UTF-8") from None
            numbered = read_patterns(text, candidate)
            patterns = [pattern for _, pattern in numbered]
            IgnoreRules(patterns, candidate, [line for line, _ in numbered])
            return patterns
    return []


def context_entries(
    spec: ImageSpec,
    skip: Iterable[Path] = (),
    cache: StatCache | None = None,
    tick: Callable[[int], None] | None = None,
) -> list[tuple[str, os.stat_result]]:
    """The context's paths after the ignore rules, sorted, with their lstat.

    The rules are Docker's (negations included); the walk is one ``scandir``
    pass that prunes excluded directories unless a negation may re-include
    something below them. ``.dockerignore`` itself never reaches the image (the
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
    entries, directories = _walk(context, patterns, skipped, tick)
    if cache is not None:
        cache.store_listing(context, rules, directories, [path for path, _ in entries])
    return entries


def _walk(
    context: str, patterns: list[str], skipped: set[str], tick: Callable[[int], None] | None = None
) -> tuple[list[tuple[str, os.stat_result]], dict[str, list[int]]]:
    """Included entries, and the signature of every directory that was listed. ``tick`` hears
    the number of entries so far, every :data:`TICK` seconds of a long walk."""
    next_tick = time.monotonic() + TICK
    rules = IgnoreRules(patterns) if patterns else None
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
                excluded = rules is not None and rules.excludes(path)
                st = entry.stat(follow_symlinks=False)
                if not excluded and path != ".dockerignore" and _sendable(st.st_mode):
                    entries.append((path, st))
                if tick is not None and time.monotonic() >= next_tick:
                    tick(len(entries))
                    next_tick = time.monotonic() + TICK
                if stat.S_ISDIR(st.st_mode) and (
                    not excluded or (rules is not None and rules.may_include_below(path))
                ):
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
