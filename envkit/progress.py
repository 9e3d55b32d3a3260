"""How long-running work reports what it is doing, without knowing where it goes.

Builds and stack starts report to a :class:`Progress`: ``log`` for a line of
an image's build output, ``note`` for an event worth a line of its own, with
the :class:`State` it puts its subject in. Where it goes is the caller's
choice (:func:`for_terminal`): nothing (``--quiet``), plain prefixed lines
(``api | ...``, ``api: ...``; CI and any output that is not a terminal), or on
a terminal a live view with one line per image and service: its state, the
time it has taken, and its last log line; whatever fails gets its whole log
printed above the view.
"""

from __future__ import annotations

import enum
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, TextIO


class State(enum.Enum):
    """What a note says of its subject."""

    INFO = "info"  # no change of state (why an image is rebuilt, a warning)
    WORKING = "working"  # building, pulling, starting
    WAITING = "waiting"  # on another envkit process doing the same work
    DONE = "done"  # built, cached, healthy
    FAILED = "failed"


class Progress(Protocol):
    def log(self, subject: str, line: str) -> None:
        """One line of an image's build output."""

    def note(self, subject: str, message: str, state: State = State.INFO) -> None:
        """One event worth a line of its own."""


class _NoSetup:
    """A progress that needs no setup; a context manager like :class:`Live`, so callers treat
    every kind alike."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Silent(_NoSetup):
    """Reports nothing (``--quiet``)."""

    def log(self, subject: str, line: str) -> None:
        pass

    def note(self, subject: str, message: str, state: State = State.INFO) -> None:
        pass


class Lines(_NoSetup):
    """Plain prefixed lines (``image | log line``, ``image: event``), safe from several threads."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def log(self, subject: str, line: str) -> None:
        self._write(f"{subject} | {line}")

    def note(self, subject: str, message: str, state: State = State.INFO) -> None:
        self._write(f"{subject}: {message}")

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text.rstrip("\n") + "\n")
            self.stream.flush()


_SYMBOLS = {
    State.INFO: ("·", "dim"),
    State.WORKING: ("…", "yellow"),
    State.WAITING: ("~", "cyan"),
    State.DONE: ("✓", "green"),
    State.FAILED: ("✗", "bold red"),
}
_LOG_KEPT = 5000  # lines of a subject's log kept to print if it fails


@dataclass
class _Row:
    state: State = State.INFO
    message: str = ""
    last: str = ""
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=_LOG_KEPT))


class Live:
    """A live view on a terminal (rich): one line per subject, redrawn in place.

    Use it as a context manager; what it last showed stays on the terminal.
    Nothing is drawn (and rich is not even imported) until there is something
    to show: a no-op build prints nothing but its result. A note that changes
    no state (why an image is rebuilt) is printed above the view as a line of
    its own, so it stays readable.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()  # the rows; never held while calling into rich
        self._start_lock = threading.Lock()  # starting and stopping the view
        self._live: Any = None
        self._closed = False

    @property
    def console(self) -> Any:
        return self._start().console

    def _start(self) -> Any:
        """The rich view, started on first use."""
        with self._start_lock:
            if self._live is None:
                from rich.console import Console
                from rich.live import Live as RichLive

                self._live = RichLive(
                    console=Console(file=self._stream),
                    refresh_per_second=8,
                    transient=False,
                    redirect_stdout=False,
                    redirect_stderr=False,
                    get_renderable=self._render,
                )
                if not self._closed:
                    self._live.start()
            return self._live

    def __enter__(self) -> Live:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._start_lock:
            self._closed = True
            live = self._live
        if live is not None:
            live.stop()  # draws the view a last time

    def log(self, subject: str, line: str) -> None:
        with self._lock:
            row = self._row(subject)
            row.log.append(line)
            row.last = line
        self._start()

    def note(self, subject: str, message: str, state: State = State.INFO) -> None:
        from rich.text import Text

        lines: list[Text] = []
        with self._lock:
            row = self._row(subject)
            if state is State.INFO:
                lines.append(Text(f"{subject}: {message}", style="dim"))
            else:
                if row.state in (State.INFO, State.DONE, State.FAILED) and state in (
                    State.WORKING,
                    State.WAITING,
                ):
                    row.started, row.ended = time.monotonic(), None
                row.state, row.message = state, message
                if state in (State.DONE, State.FAILED):
                    row.ended = time.monotonic()
                if state is State.FAILED:
                    lines.append(Text(f"{subject}: {message}; its log:", style="bold red"))
                    lines += [Text(f"  | {line}") for line in row.log]
        live = self._start()
        # Printed without holding the lock: rich redraws the view (which takes it) as it prints.
        for line in lines:
            live.console.print(line, highlight=False)

    def _row(self, subject: str) -> _Row:
        if subject not in self._rows:
            self._rows[subject] = _Row()
        return self._rows[subject]

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            rows = list(self._rows.items())
        width = max((len(s) for s, _ in rows), default=0)
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(no_wrap=True, width=1)
        table.add_column(no_wrap=True, min_width=width)
        table.add_column(no_wrap=True, min_width=min(48, max((len(r.message) for _, r in rows), default=0)))
        table.add_column(no_wrap=True, justify="right", width=7)
        table.add_column(no_wrap=True, overflow="ellipsis", style="dim", ratio=1)
        now = time.monotonic()
        for subject, row in rows:
            symbol, style = _SYMBOLS[row.state]
            seconds = (row.ended or now) - row.started
            table.add_row(
                Text(symbol, style=style),
                Text(subject.ljust(width), style="bold"),
                Text(_cut(row.message or "...", 48), style=style),
                Text(f"{seconds:5.1f}s"),
                Text(_cut(row.last, 200)),
            )
        return table


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def for_terminal(quiet: bool = False, stream: TextIO | None = None) -> Silent | Lines | Live:
    """Nothing with ``quiet``; a :class:`Live` view when both stdout and ``stream`` (stderr by
    default) are terminals; plain :class:`Lines` otherwise (CI, a pipe, a file). Use the
    result as a context manager."""
    stream = stream or sys.stderr
    if quiet:
        return Silent()
    if _is_terminal(stream) and _is_terminal(sys.stdout) and os.environ.get("TERM", "") != "dumb":
        return Live(stream)
    return Lines(stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
