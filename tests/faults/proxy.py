"""A Unix socket between envkit and the real engine that misbehaves on the requests a test picks.

The real engine is the one the tests use (tests/engine_client.py): its Unix socket, or TCP
without TLS.

Every other request goes through to the engine untouched. Actions:

- ``refuse``: close the connection at once;
- ``hang``: keep the connection and never answer;
- ``garbage``: answer 200 with a body that is not JSON;
- ``shape``: answer 200 with JSON of another shape than the Engine API's;
- ``error``: answer 500 with Docker's error body.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from engine_client import engine_connector


def _answer(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


ANSWERS = {
    "garbage": _answer("200 OK", b"<garbage>"),
    "shape": _answer("200 OK", b'{"unexpected": 1}'),
    "error": _answer("500 Internal Server Error", b'{"message": "the engine is broken"}'),
}


class EngineProxy:
    def __init__(self, path: Path, upstream: Callable[[], socket.socket] | None = None) -> None:
        """``upstream`` opens a connection to the real engine (by default, the tests' engine)."""
        connector = upstream or engine_connector()
        if connector is None:
            raise RuntimeError("the engine is behind TLS or SSH: a proxy cannot forward its bytes")
        self._upstream = connector
        self.path = path
        self.rules: list[tuple[re.Pattern[str], str]] = []
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._held: list[socket.socket] = []

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def on(self, pattern: str, action: str) -> None:
        """``action`` on requests whose ``METHOD /path`` (no API version, no query) matches."""
        self.rules.append((re.compile(pattern), action))

    def __enter__(self) -> EngineProxy:
        self._server.bind(str(self.path))
        self._server.listen(64)
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.close()
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    conn.close()
                    return
                head += data
        line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        method, _, rest = line.partition(" ")
        path = re.sub(r"^/v[0-9.]+", "", rest.split(" ")[0].split("?")[0])
        request = f"{method} {path}"
        self.seen.append(request)
        action = next((a for pattern, a in self.rules if pattern.search(request)), None)
        if action == "refuse":
            conn.close()
        elif action == "hang":
            self._held.append(conn)
        elif action in ANSWERS:
            with contextlib.suppress(OSError):
                conn.sendall(ANSWERS[action])
            conn.close()
        else:
            self._forward(conn, head)

    def _forward(self, conn: socket.socket, head: bytes) -> None:
        try:
            upstream = self._upstream()
        except OSError:
            conn.close()
            return
        try:
            upstream.sendall(head)
        except OSError:
            conn.close()
            upstream.close()
            return

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(conn, upstream), daemon=True).start()
        pump(upstream, conn)
        conn.close()
        upstream.close()
