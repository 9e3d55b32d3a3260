"""The warden: a stack's engine-side cleaner, run in a container on the stack's engine.

``python3 warden_main.py --stack ID [--grace S] [--first S] [--port P] [--socket PATH]``

It holds a lease for each client connection (the client's reaper keeps one open while the stack
is up, and writes a byte every :data:`envkit.stack.warden.BEAT` seconds). A connection that
closes, or says nothing for ``--silence`` seconds (a machine that vanished sends no FIN), ends its
lease; TCP keepalive is set short too. While one lease is open it does nothing. When none has
been open for ``--grace`` seconds (``--first`` before any client came), it removes, through the
engine's API on the mounted socket, every container (forced, with its anonymous volumes), then
every network (its endpoints disconnected first), then every volume labelled
``envkit.stack=ID``, and nothing else, then itself, last.

Standard library only (it runs on the image's Debian python3, not in envkit's virtualenv), and
the engine is asked without an API version in the path, so any engine that envkit drives answers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import selectors
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

STACK = "envkit.stack"
ROLE = "envkit.role"  # the warden's own container: envkit.role=warden
WARDEN = "warden"
GREETING = "envkit-warden"  # the first line a client reads: "envkit-warden <stack id>\n"
PORT = 7070
GRACE = 10.0
FIRST = 120.0  # seconds to wait for the first client (image pulls, a slow start)
SILENCE = 15.0  # a lease that has said nothing for this long is over
KEEPALIVE = (5, 5, 3)  # TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT
TICK = 0.5


class Engine(Protocol):
    def get(self, path: str, query: dict[str, str]) -> Any: ...

    def call(self, method: str, path: str, query: dict[str, str], body: Any = None) -> int: ...


class SocketEngine:
    """The engine's API on a unix socket; one connection a request (the warden asks little)."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    def _request(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, bytes]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        conn = http.client.HTTPConnection("localhost", timeout=self.timeout)
        conn.sock = sock
        try:
            url = path + ("?" + urllib.parse.urlencode(query) if query else "")
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, url, body=payload, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()

    def get(self, path: str, query: dict[str, str]) -> Any:
        status, data = self._request("GET", path, query, None)
        if status != 200:
            raise OSError(f"GET {path}: {status} {data[:200]!r}")
        return json.loads(data)

    def call(self, method: str, path: str, query: dict[str, str], body: Any = None) -> int:
        return self._request(method, path, query, body)[0]


def _labelled(stack: str) -> dict[str, str]:
    return {"filters": json.dumps({"label": [f"{STACK}={stack}"]})}


def _ours(labels: Any, stack: str) -> bool:
    """Checked again on what the engine answered: a filter the engine ignored removes nothing."""
    return isinstance(labels, dict) and labels.get(STACK) == stack


def sweep(engine: Engine, stack: str, say: Callable[[str], None] = print) -> list[str]:
    """Remove the stack's containers, networks and volumes (only those labelled with ``stack``);
    its own container (``envkit.role=warden``) last. What it did, in order."""
    done: list[str] = []
    listed = engine.get("/containers/json", {"all": "1", **_labelled(stack)})
    containers = [c for c in listed if _ours(c.get("Labels"), stack)]
    own = [c["Id"] for c in containers if c["Labels"].get(ROLE) == WARDEN]
    for c in containers:
        if c["Id"] in own:
            continue
        engine.call("DELETE", f"/containers/{c['Id']}", {"force": "1", "v": "1"})
        done.append(f"container {c['Id'][:12]}")
    for net in engine.get("/networks", _labelled(stack)):
        if not _ours(net.get("Labels"), stack):
            continue
        details = engine.get(f"/networks/{net['Id']}", {})
        for cid in details.get("Containers") or {}:
            engine.call("POST", f"/networks/{net['Id']}/disconnect", {}, {"Container": cid, "Force": True})
        for _ in range(10):  # endpoints of just-removed containers linger briefly
            if engine.call("DELETE", f"/networks/{net['Id']}", {}) in (200, 204, 404):
                break
            time.sleep(0.2)
        done.append(f"network {net.get('Name', net['Id'])}")
    volumes = engine.get("/volumes", _labelled(stack)).get("Volumes") or []
    for vol in volumes:
        if _ours(vol.get("Labels"), stack):
            engine.call("DELETE", f"/volumes/{vol['Name']}", {"force": "1"})
            done.append(f"volume {vol['Name']}")
    for line in done:
        say(f"removed {line}")
    for cid in own:  # itself, last: the engine kills this process here
        say("removing its own container")
        done.append(f"warden {cid[:12]}")
        engine.call("DELETE", f"/containers/{cid}", {"force": "1", "v": "1"})
    return done


class Leases:
    """The open leases and when each was last heard from; when the stack's time is up."""

    def __init__(self, grace: float, first: float, silence: float, now: float) -> None:
        self.grace = grace
        self.first = first
        self.silence = silence
        self.heard: dict[int, float] = {}
        self.ever = False
        self.empty_since = now

    def opened(self, lease: int, now: float) -> None:
        self.heard[lease] = now
        self.ever = True

    def spoke(self, lease: int, now: float) -> None:
        if lease in self.heard:
            self.heard[lease] = now

    def closed(self, lease: int, now: float) -> None:
        if self.heard.pop(lease, None) is not None and not self.heard:
            self.empty_since = now

    def silent(self, now: float) -> list[int]:
        """The leases that said nothing for too long (their peer vanished)."""
        return [lease for lease, at in self.heard.items() if now - at >= self.silence]

    def due(self, now: float) -> bool:
        """No lease open for the grace (the first wait, before any client came)."""
        if self.heard:
            return False
        return now - self.empty_since >= (self.grace if self.ever else max(self.first, self.grace))


def _keepalive(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = KEEPALIVE
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, name):
            conn.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def serve(
    listener: socket.socket, stack: str, leases: Leases, clock: Callable[[], float] = time.monotonic
) -> None:
    """Hold leases until the stack's time is up; returns then (the caller sweeps)."""
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    conns: dict[int, socket.socket] = {}
    greeting = f"{GREETING} {stack}\n".encode()
    try:
        while not leases.due(clock()):
            for key, _ in sel.select(TICK):
                now = clock()
                if key.fileobj is listener:
                    try:
                        conn, _addr = listener.accept()
                    except OSError:
                        continue
                    _keepalive(conn)
                    try:
                        conn.sendall(greeting)
                    except OSError:
                        conn.close()
                        continue
                    conn.setblocking(False)
                    conns[conn.fileno()] = conn
                    sel.register(conn, selectors.EVENT_READ)
                    leases.opened(conn.fileno(), now)
                    _log(f"lease {conn.fileno()} opened ({len(conns)} open)")
                    continue
                conn = conns[key.fd]
                try:
                    data = conn.recv(256)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    leases.spoke(key.fd, now)
                else:
                    _drop(sel, conns, leases, key.fd, (now, "closed"))
            now = clock()
            for fd in leases.silent(now):
                _drop(sel, conns, leases, fd, (now, f"silent for {leases.silence:.0f}s"))
    finally:
        for conn in conns.values():
            conn.close()
        sel.close()


def _drop(
    sel: selectors.BaseSelector,
    conns: dict[int, socket.socket],
    leases: Leases,
    fd: int,
    when: tuple[float, str],
) -> None:
    now, why = when
    conn = conns.pop(fd)
    sel.unregister(conn)
    conn.close()
    leases.closed(fd, now)
    _log(f"lease {fd} {why} ({len(conns)} open)")


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} warden: {message}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="envkit-warden", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--grace", type=float, default=GRACE)
    parser.add_argument("--first", type=float, default=FIRST)
    parser.add_argument("--silence", type=float, default=SILENCE)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--socket", default="/var/run/docker.sock")
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", args.port))
    listener.listen(16)
    _log(f"watching stack {args.stack} (grace {args.grace:g}s)")
    serve(listener, args.stack, Leases(args.grace, args.first, args.silence, time.monotonic()))
    listener.close()
    _log(f"no client for {args.grace:g}s: removing stack {args.stack}")
    engine = SocketEngine(args.socket)
    for attempt in range(30):  # an engine that restarts: try again for a minute
        try:
            sweep(engine, args.stack, _log)
            return 0
        except OSError as err:
            _log(f"cannot remove the stack yet ({err}); attempt {attempt + 1}")
            time.sleep(2)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
