"""Where a value of a compose file is: its path of keys, its file and line, for error messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envkit.errors import ConfigError

# The keys (and list indices) from the top of a compose file down to a value.
Key = tuple[str | int, ...]


def dotted(path: Key) -> str:
    """``("services", "web", "ports", 0)`` -> ``services.web.ports[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Located:
    """One compose file's values with where each came from."""

    file: Path
    data: dict[str, Any]
    lines: dict[Key, int] = field(default_factory=dict)  # a value's 1-based line
    resets: set[Key] = field(default_factory=set)  # values tagged !reset
    overrides: set[Key] = field(default_factory=set)  # values tagged !override
    unset: dict[Key, tuple[str, ...]] = field(default_factory=dict)  # a value's variables not set

    def line(self, path: Key) -> int | None:
        """The line of ``path``, else of the nearest value above it that has one."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def error(self, path: Key, problem: str, fix: str) -> ConfigError:
        problem, fix = _unset_said(self.unset, path, problem, fix)
        return ConfigError(self.file, dotted(path), problem, fix, line=self.line(path))


@dataclass
class Origins:
    """Which file (and line) last set each service's keys and each top-level entry, across the
    merged files: resolution errors name the file and line that said it."""

    places: dict[Key, tuple[Path, int | None]] = field(default_factory=dict)
    unset: dict[Key, tuple[str, ...]] = field(default_factory=dict)  # as Located.unset, merged

    def record(self, doc: Located, *, indices: bool) -> None:
        """Remember where ``doc`` sets each value (the later file wins), and the variables
        that were not set in it. Paths through a list index only when ``indices`` (the first
        file): a merge appends to lists, so the index of an entry of a later file is not its
        index in the merged list."""
        for path, line in doc.lines.items():
            if path and (indices or not any(isinstance(part, int) for part in path)):
                self.places[path] = (doc.file, line)
                self.unset.pop(path, None)
                if path in doc.unset:
                    self.unset[path] = doc.unset[path]

    def error(self, path: Key, problem: str, fix: str) -> ConfigError:
        problem, fix = _unset_said(self.unset, path, problem, fix)
        for end in range(len(path), 0, -1):
            if path[:end] in self.places:
                file, line = self.places[path[:end]]
                return ConfigError(file, dotted(path), problem, fix, line=line)
        first = next(iter(self.places.values()), (Path("compose.yaml"), None))
        return ConfigError(first[0], dotted(path), problem, fix)


def _unset_said(unset: dict[Key, tuple[str, ...]], path: Key, problem: str, fix: str) -> tuple[str, str]:
    """``problem`` and ``fix`` of an error at ``path``, saying which variables that were not set
    (and so became empty strings) made the value there, or above it, what it is."""
    names = sorted({n for end in range(len(path), 0, -1) for n in unset.get(path[:end], ())})
    if not names:
        return problem, fix
    listed = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    said = f"the variable{'s' if len(names) > 1 else ''} {listed} {'are' if len(names) > 1 else 'is'} not set"
    return (
        f"{problem} ({said}: an empty string is used, as compose does)",
        f"set {listed} in the environment or in the .env file beside the compose file, or {fix}",
    )
