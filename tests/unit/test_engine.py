"""The Docker boundary against a scripted engine on a Unix socket: one error translator, bounded
calls, every response closed, streams decoded.

The engine here is a small HTTP/1.1 server (keep-alive, like dockerd) whose answers each test
scripts; it counts the connections a client leaves open.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import pickle
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from envkit.docker.engine import Daemon, _demux, _progress_line
from envkit.docker.transport import Endpoint
from envkit.errors import DaemonError, DockerUnavailable, EngineStreamError

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
        self.stream: list[bytes] | None = None  # a chunked answer for the path below
        self.stream_path = "build"
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
            if engine.stream is not None and path == engine.stream_path:
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


def stream_of(*messages: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\r\n" for m in messages)


def build_with(daemon: Daemon, tmp_path: Path, lines: list[str], images: list[str]) -> str | None:
    context = tmp_path / "ctx.tar"
    context.write_bytes(b"\0" * 1024)
    with context.open("rb") as f:
        return daemon.build(
            f,
            1024,
            dockerfile="Dockerfile",
            buildargs={},
            target=None,
            platform=None,
            stall=5,
            on_line=lines.append,
            on_image=images.append,
        )


def test_a_build_stream_is_decoded_across_chunk_boundaries(engine: Engine, tmp_path: Path) -> None:
    raw = stream_of(
        {"stream": "Step 1/2 : FROM x\n"}, {"stream": " ---> abc\n"}, {"aux": {"ID": "sha256:f00"}}
    )
    engine.stream = [raw[:7], raw[7:30], raw[30:31], raw[31:]]
    lines: list[str] = []
    images: list[str] = []
    assert build_with(daemon_for(engine), tmp_path, lines, images) == "sha256:f00"
    assert lines == ["Step 1/2 : FROM x", " ---> abc"]
    assert images == ["sha256:f00"]


def test_a_build_gives_its_log_lines_and_names_its_image_as_soon_as_the_engine_does(
    engine: Engine, tmp_path: Path
) -> None:
    lines: list[str] = []
    images: list[str] = []

    def line(text: str) -> None:
        lines.append(text)
        if text == "Successfully built f00":
            assert images == ["sha256:f00"]  # named before the stream went on

    raw = stream_of(
        {"stream": "Step 1/2 : FROM x\n ---> abc\n\n"},
        {"status": "Pulling fs layer", "id": "ab"},
        {"stream": "   \n"},
        {"aux": {"ID": "sha256:f00"}},
        {"stream": "Successfully built f00\n"},
    )
    engine.stream = [raw]
    context = tmp_path / "ctx.tar"
    context.write_bytes(b"\0" * 1024)
    with context.open("rb") as f:
        made = daemon_for(engine).build(
            f,
            1024,
            dockerfile="Dockerfile",
            buildargs={},
            target=None,
            platform=None,
            stall=5,
            on_line=line,
            on_image=images.append,
        )
    assert made == "sha256:f00"
    assert lines == ["Step 1/2 : FROM x", " ---> abc", "Pulling fs layer", "Successfully built f00"]


def test_a_build_that_names_no_image_returns_none(engine: Engine, tmp_path: Path) -> None:
    engine.stream = [stream_of({"stream": "Step 1/1 : FROM x\n"})]
    images: list[str] = []
    assert build_with(daemon_for(engine), tmp_path, [], images) is None
    assert images == []


def test_a_build_that_fails_in_its_stream_is_an_error_once_the_stream_has_ended(
    engine: Engine, tmp_path: Path
) -> None:
    raw = stream_of(
        {"stream": "Step 1/2 : RUN false\n"},
        {"aux": {"ID": "sha256:f00"}},
        {"errorDetail": {"code": 1, "message": "The command '/bin/sh -c false' returned a non-zero code: 1"}},
        {"error": "The command '/bin/sh -c false' returned a non-zero code: 1"},
        {"stream": "after the error\n"},
    )
    engine.stream = [raw[:40], raw[40:]]
    daemon = daemon_for(engine)
    lines: list[str] = []
    images: list[str] = []
    with pytest.raises(EngineStreamError) as caught:
        build_with(daemon, tmp_path, lines, images)
    assert caught.value.detail == "The command '/bin/sh -c false' returned a non-zero code: 1"
    assert lines == ["Step 1/2 : RUN false", "after the error"]  # read to its end
    assert images == ["sha256:f00"]  # the image the failed build made, for its caller to remove
    assert wait_for(lambda: engine.open == 0), f"{engine.open} connection(s) left open"


def test_byte_counts_are_not_progress_lines() -> None:
    assert _progress_line({"status": "Pushing", "id": "ab", "progressDetail": {"current": 5}}) == ""
    assert _progress_line({"status": "Pushed", "id": "ab", "progressDetail": {}}) == "ab: Pushed"
    assert _progress_line({"status": "Digest: sha256:x"}) == "Digest: sha256:x"
    assert _progress_line({"aux": {"Tag": "x"}}) == ""


def test_a_pull_gives_its_progress_lines_without_byte_counts(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    engine.stream_path = "images/create"
    engine.stream = [
        stream_of(
            {"status": "Pulling from c/a", "id": "1"},
            {"status": "Pulling fs layer", "id": "ab", "progressDetail": {}},
            {"status": "Downloading", "id": "ab", "progressDetail": {"current": 512, "total": 1024}},
            {"status": "Download complete", "id": "ab", "progressDetail": {}},
            {"status": "Status: Downloaded newer image for r.example/c/a:1"},
        )
    ]
    lines: list[str] = []
    daemon_for(engine).pull("r.example/c/a:1", stall=5, on_progress=lines.append)
    assert lines == [
        "1: Pulling from c/a",
        "ab: Pulling fs layer",
        "ab: Download complete",
        "Status: Downloaded newer image for r.example/c/a:1",
    ]
    assert ("POST", "/images/create") in engine.requests


def test_a_pull_that_fails_in_its_stream_is_an_error_once_the_whole_stream_is_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    engine.stream_path = "images/create"
    raw = stream_of(
        {"status": "Pulling from c/a", "id": "1"},
        {"errorDetail": {"message": "manifest unknown"}, "error": "manifest unknown"},
        {"status": "after the error"},
    )
    engine.stream = [raw[:50], raw[50:]]
    daemon = daemon_for(engine)
    lines: list[str] = []
    with pytest.raises(EngineStreamError) as caught:
        daemon.pull("r.example/c/a:1", stall=5, on_progress=lines.append)
    assert lines == ["1: Pulling from c/a", "after the error"]  # the stream was read to its end
    assert caught.value.reason == "manifest unknown"
    assert "pulling r.example/c/a:1 failed: manifest unknown" in str(caught.value)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.__dict__ == caught.value.__dict__
    assert wait_for(lambda: engine.open == 0), f"{engine.open} connection(s) left open"


def test_a_multiplexed_stream_is_demultiplexed() -> None:
    def frame(kind: int, data: bytes) -> bytes:
        return bytes([kind, 0, 0, 0]) + struct.pack(">I", len(data)) + data

    assert _demux(frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"more")) == b"out\nerr\nmore"
    assert _demux(b"plain tty output\n") == b"plain tty output\n"
    assert _demux(b"") == b""


@pytest.mark.parametrize(
    ("messages", "loaded", "failure"),
    [
        ([{"stream": "Loaded image ID: sha256:" + "a" * 64 + "\n"}], "sha256:" + "a" * 64, None),  # Docker
        ([{"stream": "Loaded image: sha256:" + "b" * 64}], "sha256:" + "b" * 64, None),  # Podman
        ([{"stream": "Loaded image: app:1\n"}], None, None),  # names no ID
        (  # the containerd store says a failed unpack as text, after reporting the load
            [
                {"stream": "Loaded image ID: sha256:" + "c" * 64 + "\n"},
                {"stream": "Error unpacking image sha256:" + "c" * 64 + ": layer not found\n"},
            ],
            None,
            "Error unpacking image sha256:" + "c" * 64 + ": layer not found",
        ),
        ([{"errorDetail": {"message": "bad archive"}, "error": "bad archive"}], None, "bad archive"),
    ],
)
def test_a_load_reports_the_id_the_engine_names_or_its_failure(
    engine: Engine, tmp_path: Path, messages: list[dict[str, Any]], loaded: str | None, failure: str | None
) -> None:
    engine.stream_path = "images/load"
    engine.stream = [stream_of(*messages)]
    daemon = daemon_for(engine)
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"\0" * 1024)
    with archive.open("rb") as f:
        if failure is None:
            assert daemon.load(f, 1024, stall=5) == loaded
        else:
            with pytest.raises(EngineStreamError) as caught:
                daemon.load(f, 1024, stall=5)
            assert caught.value.reason == failure
    assert wait_for(lambda: engine.open == 0), f"{engine.open} connection(s) left open"
