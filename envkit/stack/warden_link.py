"""The reaper's lease on its stack's warden (:mod:`envkit.stack.warden`), over TCP.

Kept apart from :mod:`envkit.stack.warden` (which makes the warden's image): the reaper loads
nothing of the image-building side.
"""

from __future__ import annotations

import socket
import time

from envkit.stack import warden_main

BEAT = 2.0  # seconds between the reaper's bytes on its lease (the warden's silence is 15 s)
CONNECT = 2.0  # seconds a connection to the warden (and its greeting) may take
RETRY = 2.0  # seconds between a reaper's tries to reach its warden


def connect(endpoint: str, stack_id: str, timeout: float = CONNECT) -> socket.socket | None:
    """A lease on the stack's warden at ``endpoint``: a connection whose greeting names this
    stack (a port that accepts and says nothing, or names another stack, is no lease)."""
    host, _, port = endpoint.rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except (OSError, ValueError):
        return None
    try:
        sock.settimeout(timeout)
        expected = f"{warden_main.GREETING} {stack_id}\n".encode()
        got = b""
        while not got.endswith(b"\n") and len(got) < 512:
            chunk = sock.recv(512)
            if not chunk:
                break
            got += chunk
        if got != expected:
            sock.close()
            return None
        sock.setblocking(False)
        return sock
    except OSError:
        sock.close()
        return None


class Link:
    """The reaper's lease on its stack's warden: connected while the state names a warden,
    a byte written every :data:`BEAT` seconds, connected again when it drops (a restarted
    warden, a new endpoint)."""

    def __init__(self, stack_id: str) -> None:
        self.stack_id = stack_id
        self.sock: socket.socket | None = None
        self.endpoint: str | None = None
        self.next_try = 0.0
        self.last_beat = 0.0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    @property
    def held(self) -> bool:
        return self.sock is not None

    def tick(self, endpoint: str | None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if endpoint != self.endpoint:
            self.close()
            self.endpoint, self.next_try = endpoint, 0.0
        if endpoint is None:
            return
        if self.sock is not None and self._dropped():
            self.close()
        if self.sock is None:
            if now < self.next_try:
                return
            self.sock = connect(endpoint, self.stack_id)
            if self.sock is None:
                self.next_try = now + RETRY
                return
            self.last_beat = now
        if now - self.last_beat >= BEAT:
            try:
                self.sock.send(b".")
                self.last_beat = now
            except OSError:
                self.close()

    def _dropped(self) -> bool:
        """Whether the warden closed the connection (it says nothing after its greeting)."""
        assert self.sock is not None
        try:
            return self.sock.recv(64) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
