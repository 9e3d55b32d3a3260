"""The Docker boundary against a scripted engine on a Unix socket: one error translator, bounded
calls, every response closed, streams decoded.

The engine here is a small HTTP/1.1 server (keep-alive, like dockerd) whose answers each test
scripts; it counts the connections a client leaves open.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from envkit.docker.engine import Daemon, _demux
from envkit.docker.transport import Endpoint
from envkit.errors import DaemonError, DockerUnavailable

Answer = tuple[int, bytes]  # status, body
Script = Callable[[str, str], "Answer | None"]  # (method, path) -> answer, or None: hang


class Engine:
    """What the scripted engine saw and holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[tuple[str, str]] = []
        self.open = 0
        self.release = threading.Event()  # ends every hanging request
        self.script: Script = lambda method, path: (404, b'{"message": "no script"}')
        self.stream: list[bytes] | None = None  # a chunked answer for POST /build
        self.trickle: int | None = (
            None  # an exec that writes this many frames, 0.3 s apart (0: none, it hangs)
        )


def _handler(engine: Engine) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            engine.open += 1

        def finish(self) -> None:
            with contextlib.suppress(OSError):
                super().finish()
            engine.open -= 1

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = self.path.split("?")[0]
            path = path.split("/", 2)[2] if path.startswith("/v1.") else path.lstrip("/")
            engine.requests.append((self.command, "/" + path))
            if path == "_ping":
                self._send(200, b"OK", {"Api-Version": "1.41", "Server": "Docker/test"})
                return
            if engine.stream is not None and path == "build":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in engine.stream:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                return
            if engine.trickle is not None and path.endswith("/start"):
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
                )
                self.wfile.flush()
                for _ in range(engine.trickle):
                    self.wfile.write(bytes([1, 0, 0, 0]) + struct.pack(">I", 2) + b"y\n")
                    self.wfile.flush()
                    if engine.release.wait(0.3):
                        break
                engine.release.wait(30)
                self.close_connection = True
                return
            answer = engine.script(self.command, "/" + path)
            if answer is None:
                engine.release.wait(30)
                return
            self._send(*answer)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _answer

    return Handler


class _Server(socketserver.ThreadingUnixStreamServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up first (a test of timeouts) is no news here


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    the_engine = Engine(tmp_path / "docker.sock")
    server = _Server(str(the_engine.path), _handler(the_engine))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield the_engine
    the_engine.release.set()
    server.shutdown()
    server.server_close()


def daemon_for(engine: Engine, timeout: float = 5.0) -> Daemon:
    return Daemon(
        endpoint=Endpoint(f"unix://{engine.path}", "a test"), cache_dir=engine.path.parent, timeout=timeout
    )


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_an_error_answer_is_one_daemon_error_with_its_status_and_message(engine: Engine) -> None:
    engine.script = lambda method, path: (500, b'{"message": "boom: the disk is full"}')
    daemon = daemon_for(engine)
    with pytest.raises(DaemonError) as caught:
        daemon.tag("sha256:abc", "demo/app:0123")
    assert caught.value.status == 500
    assert "boom: the disk is full" in str(caught.value) and "/images/sha256:abc/tag" in str(caught.value)


def test_every_response_is_closed_also_after_an_error(engine: Engine) -> None:
    """A keep-alive engine holds a connection until the client lets go: none may be left."""
    engine.script = lambda method, path: (409, b'{"message": "conflict: in use"}')
    daemon = daemon_for(engine)
    for _ in range(5):
        with pytest.raises(DaemonError):
            daemon.remove_image("demo/app:0123")
    engine.script = lambda method, path: (200, b"[]")
    assert daemon.containers("envkit.stack=x") == []
    assert wait_for(lambda: engine.open == 0), f"{engine.open} connection(s) left open"


def test_a_missing_object_is_none_or_no_error(engine: Engine) -> None:
    engine.script = lambda method, path: (404, b'{"message": "No such image"}')
    daemon = daemon_for(engine)
    assert daemon.inspect_image("nope:1") is None
    assert daemon.inspect_container("abc") is None
    daemon.remove_container("abc")  # already gone: fine
    daemon.remove_network("abc")


def test_an_engine_that_stops_answering_is_an_error_within_the_call_bound(engine: Engine) -> None:
    engine.script = lambda method, path: None  # hangs
    daemon = daemon_for(engine, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DaemonError) as caught:
        daemon.containers("envkit.stack=x")
    assert time.monotonic() - started < 3
    assert "did not answer within 0.5s" in str(caught.value)


def client_threads() -> set[threading.Thread]:
    """This process's threads, less the scripted engine's (they serve requests, some hang)."""
    return {t for t in threading.enumerate() if "process_request_thread" not in t.name}


def test_a_command_check_that_outlasts_its_time_leaves_no_thread_behind(engine: Engine) -> None:
    engine.script = lambda method, path: (201, b'{"Id": "e1"}') if path.endswith("/exec") else None
    engine.trickle = 0  # the engine starts the command, which then never ends
    daemon = daemon_for(engine)
    before = client_threads()
    started = time.monotonic()
    with pytest.raises(DaemonError, match=r"the command \['sleep', '100'\] did not finish within 1s"):
        daemon.exec_run("c1", ["sleep", "100"], timeout=1.0)
    assert time.monotonic() - started < 3
    assert client_threads() == before


def test_a_command_that_keeps_talking_past_its_time_is_stopped_too(engine: Engine, tmp_path: Path) -> None:
    """The bound is the command's whole run, not each read: output every 0.3 s does not extend it."""
    engine.trickle = 40  # frames, 0.3 s apart
    engine.script = lambda method, path: (201, b'{"Id": "e1"}') if path.endswith("/exec") else None
    daemon = daemon_for(engine)
    started = time.monotonic()
    with pytest.raises(DaemonError, match="did not finish within 1s"):
        daemon.exec_run("c1", ["yes"], timeout=1.0)
    assert time.monotonic() - started < 3


def test_a_missing_or_silent_engine_is_docker_unavailable(tmp_path: Path, engine: Engine) -> None:
    with pytest.raises(DockerUnavailable, match="a test"):
        Daemon(endpoint=Endpoint(f"unix://{tmp_path / 'none.sock'}", "a test"))


def test_a_build_stream_is_decoded_across_chunk_boundaries(engine: Engine, tmp_path: Path) -> None:
    messages = [{"stream": "Step 1/2 : FROM x\n"}, {"stream": " ---> abc\n"}, {"aux": {"ID": "sha256:f00"}}]
    raw = b"".join(json.dumps(m).encode() + b"\r\n" for m in messages)
    engine.stream = [raw[:7], raw[7:30], raw[30:31], raw[31:]]
    daemon = daemon_for(engine)
    context = tmp_path / "ctx.tar"
    context.write_bytes(b"\0" * 1024)
    with context.open("rb") as f:
        got = list(
            daemon.build(f, 1024, dockerfile="Dockerfile", buildargs={}, target=None, platform=None, stall=5)
        )
    assert got == messages


def test_a_multiplexed_stream_is_demultiplexed() -> None:
    def frame(kind: int, data: bytes) -> bytes:
        return bytes([kind, 0, 0, 0]) + struct.pack(">I", len(data)) + data

    assert _demux(frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"more")) == b"out\nerr\nmore"
    assert _demux(b"plain tty output\n") == b"plain tty output\n"
    assert _demux(b"") == b""
