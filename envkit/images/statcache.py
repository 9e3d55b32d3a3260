"""What envkit learnt about a context's files last time, kept in the state directory.

File digests are cached by stat signature, and each context's listing (the
paths the ignore rules let through) by the signatures of its directories.
Both obey git's "racy clean" rule: an entry whose mtime or ctime is not older
than the cache's own write time is not trusted, so a same-size edit within the
timestamp granularity is never mistaken for unchanged; ctime also catches
edits that put an old mtime back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from envkit.fsutil import atomic_write_text, ensure_state_dir


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
        if not isinstance(entry, list) or entry[:-1] != self.signature(st) or not isinstance(entry[-1], str):
            return None  # unknown, changed, or a record of the wrong shape: hash the file
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
        ensure_state_dir(self.path.parent)
        payload = {
            "version": self.VERSION,
            "written_ns": started_ns,
            "entries": self.entries,
            "listings": self.listings,
        }
        atomic_write_text(self.path, json.dumps(payload, separators=(",", ":")))
        self.written_ns = started_ns
        self.dirty = False
