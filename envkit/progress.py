"""How long-running work reports what it is doing, without knowing where it goes."""

from __future__ import annotations

import sys
import threading
from typing import Protocol, TextIO


class Progress(Protocol):
    def log(self, image: str, line: str) -> None:
        """One line of an image's build output."""

    def note(self, image: str, message: str) -> None:
        """One event worth a line of its own (waiting, rebuilding because ...)."""


class Silent:
    """Reports nothing (``--quiet``)."""

    def log(self, image: str, line: str) -> None:
        pass

    def note(self, image: str, message: str) -> None:
        pass


class Lines:
    """Plain prefixed lines (``image | log line``, ``image: event``), safe from several threads."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def log(self, image: str, line: str) -> None:
        self._write(f"{image} | {line}")

    def note(self, image: str, message: str) -> None:
        self._write(f"{image}: {message}")

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text.rstrip("\n") + "\n")
            self.stream.flush()
