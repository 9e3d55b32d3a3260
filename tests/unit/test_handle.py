"""The stack handle, options from the environment, the host-side health probes and the inputs hash.

The probes run against real sockets on 127.0.0.1 (no Docker): a server that
holds a connection open is serving; one that accepts and closes at once is
docker-proxy with nothing behind it.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from envkit.config.model import HealthCheck, ServiceSpec
from envkit.errors import ConfigError, EndpointError
from envkit.remote import LOOPBACK as HOST
from envkit.settings import Settings
from envkit.stack.handle import StackHandle
from envkit.stack.handle import handle as _handle
from envkit.stack.health import http_probe as _http_probe
from envkit.stack.health import tcp_probe as _tcp_probe
from envkit.stack.state import ServiceState, StackState
from envkit.stack.wanted import inputs_hash as _inputs_hash

PORTS = {"db": {5432: 49153}, "web-api": {8000: 49200, 9000: 49201}, "cache.v2": {6379: 49300}}


@pytest.fixture
def handle() -> StackHandle:
    return StackHandle(stack="demo-1234abcd", ports=PORTS)


# --- the handle ---------------------------------------------------------------------------------


def test_endpoint_is_on_the_loopback_address(handle: StackHandle) -> None:
    assert HOST == "127.0.0.1"
    assert handle.endpoint("db", 5432) == ("127.0.0.1", 49153)
    assert handle.endpoint("web-api", 9000) == ("127.0.0.1", 49201)


def test_url_has_no_trailing_slash_and_honours_scheme(handle: StackHandle) -> None:
    assert handle.url("web-api", 8000) == "http://127.0.0.1:49200"
    assert handle.url("web-api", 8000, scheme="https") == "https://127.0.0.1:49200"
    assert handle.url("db", 5432, "postgresql") == "postgresql://127.0.0.1:49153"
    assert not handle.url("web-api", 9000).endswith("/")


def test_env_names_every_service_and_port(handle: StackHandle) -> None:
    assert handle.env() == {
        "ENVKIT_DB_HOST": "127.0.0.1",
        "ENVKIT_DB_PORT_5432": "49153",
        "ENVKIT_WEB_API_HOST": "127.0.0.1",
        "ENVKIT_WEB_API_PORT_8000": "49200",
        "ENVKIT_WEB_API_PORT_9000": "49201",
        "ENVKIT_CACHE_V2_HOST": "127.0.0.1",
        "ENVKIT_CACHE_V2_PORT_6379": "49300",
    }


def test_env_of_a_service_without_ports_names_its_host_only() -> None:
    assert StackHandle(stack="s", ports={"worker_1": {}}).env() == {"ENVKIT_WORKER_1_HOST": "127.0.0.1"}
    assert StackHandle(stack="s", ports={}).env() == {}


def test_unknown_service_names_what_is_published(handle: StackHandle) -> None:
    with pytest.raises(EndpointError) as caught:
        handle.endpoint("redis", 6379)
    err = caught.value
    assert err.service == "redis" and err.port is None
    message = str(err)
    assert "service 'redis' is not published" in message
    assert "port 6379" not in message  # the service is what is missing
    for published in ("db:5432", "web-api:8000", "web-api:9000", "cache.v2:6379"):
        assert published in message
    assert "fix:" in message


def test_unknown_port_names_what_is_published(handle: StackHandle) -> None:
    with pytest.raises(EndpointError) as caught:
        handle.url("db", 5433)
    err = caught.value
    assert err.service == "db" and err.port == 5433
    assert "service 'db' port 5433 is not published" in str(err)
    assert "db:5432" in str(err)
    assert isinstance(err, LookupError)


def test_nothing_published_says_none() -> None:
    with pytest.raises(EndpointError, match=r"published: none"):
        StackHandle(stack="s", ports={}).endpoint("db", 5432)


def test_handle_from_state_shows_healthy_services_only() -> None:
    state = StackState(stack="s", project="demo", root="/p")
    state.services["db"] = ServiceState(inputs="i", image="postgres", status="healthy", ports={"5432": 40001})
    state.services["api"] = ServiceState(inputs="i", image="app", status="starting", ports={"8000": 40002})
    state.services["bad"] = ServiceState(inputs="i", image="app", status="failed", ports={"80": 40003})
    handle = _handle("s", state)
    assert handle.stack == "s"
    assert handle.ports == {"db": {5432: 40001}}  # container ports as ints
    assert _handle("s", None).ports == {}


# --- options from the environment ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("", None), ("0", 0.0), ("30", 30.0), ("2.5", 2.5), (" 7 ", 7.0)]
)
def test_env_seconds_reads_a_number(raw: str, expected: float | None) -> None:
    assert Settings.from_env({"ENVKIT_TTL": raw}).ttl == expected


def test_env_seconds_default_when_unset() -> None:
    assert Settings.from_env({}).grace == 3.0
    assert Settings.from_env({}).ttl is None


@pytest.mark.parametrize("raw", ["soon", "-1", "1s", "nan"])
def test_env_seconds_rejects_what_is_not_seconds(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ENVKIT_TTL": raw})
    err = caught.value
    assert err.key == "ENVKIT_TTL"
    assert repr(raw) in err.problem and "seconds" in err.problem
    assert "ENVKIT_TTL=" in err.fix


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("", False), ("0", False), ("false", False), ("No", False), ("off", False)],
        *[("1", True), ("true", True), ("YES", True), (" on ", True)],
    ],
)
def test_env_flag_reads_yes_and_no(raw: str, expected: bool) -> None:
    assert Settings.from_env({"ENVKIT_KEEP": raw}).keep is expected


def test_env_flag_unset_is_false() -> None:
    assert Settings.from_env({}).keep is False


@pytest.mark.parametrize("raw", ["2", "maybe", "ja"])
def test_env_flag_rejects_other_values(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ENVKIT_KEEP": raw})
    err = caught.value
    assert err.key == "ENVKIT_KEEP"
    assert repr(raw) in err.problem
    assert "ENVKIT_KEEP=1" in err.fix


# --- the TCP probe ---------------------------------------------------------------------------------


@contextlib.contextmanager
def tcp_server(on_accept: Callable[[socket.socket], None]) -> Iterator[int]:
    """A listening socket on 127.0.0.1 whose connections go to ``on_accept``; yields its port."""
    listener = socket.create_server((HOST, 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            on_accept(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        listener.close()
        thread.join(10)
        for conn in accepted:
            conn.close()


def hold(conn: socket.socket) -> None:
    """A real service: keeps the connection open and waits for the client to speak."""


def close_at_once(conn: socket.socket) -> None:
    """docker-proxy with no backend: accepts, then hangs up."""
    conn.close()


def reset_at_once(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def greet(conn: socket.socket) -> None:
    """A service that speaks first (redis does not; SMTP, SSH and MySQL do)."""
    conn.sendall(b"220 ready\r\n")


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("server", "healthy"), [(hold, True), (greet, True)])
def test_tcp_probe_serving(server: Callable[[socket.socket], None], healthy: bool) -> None:
    with tcp_server(server) as port:
        ok, why = _tcp_probe(port)
    assert ok is healthy, why


@pytest.mark.parametrize("server", [close_at_once, reset_at_once])
def test_tcp_probe_accept_then_close_is_not_serving(server: Callable[[socket.socket], None]) -> None:
    with tcp_server(server) as port:
        ok, why = _tcp_probe(port)
    assert ok is False
    assert "closed" in why or "reset" in why


def test_tcp_probe_closed_port() -> None:
    ok, why = _tcp_probe(free_port())
    assert ok is False
    assert why.startswith("connect:")


# --- the HTTP probe --------------------------------------------------------------------------------


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers GET /status/N with status N (a 302 points at a 500, which the probe must not follow)."""

    def do_GET(self) -> None:
        status = int(self.path.rsplit("/", 1)[1])
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/status/500")  # must not be followed
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer((HOST, 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.parametrize(
    ("status", "healthy"), [(200, True), (204, True), (302, True), (404, False), (500, False), (503, False)]
)
def test_http_probe_status(http_port: int, status: int, healthy: bool) -> None:
    ok, why = _http_probe(http_port, f"/status/{status}")
    assert ok is healthy
    assert f"GET /status/{status} answered {status}" == why


def test_http_probe_closed_port() -> None:
    ok, why = _http_probe(free_port(), "/health")
    assert ok is False
    assert why.startswith("GET /health: ConnectionRefusedError")


def test_http_probe_server_that_hangs_up() -> None:
    with tcp_server(close_at_once) as port:
        ok, why = _http_probe(port, "/health")
    assert ok is False
    assert why.startswith("GET /health: ")


# --- the inputs hash -------------------------------------------------------------------------------


BASE = ServiceSpec(
    name="api",
    image="app",
    ports=(8000,),
    environment={"MODE": "test", "LEVEL": "1"},
    command=("serve",),
    depends_on=("db",),
    healthcheck=HealthCheck("http", path="/health", port=8000),
    start_timeout=60.0,
)
IDENTITY = "envkit/demo-app:3f2a1b"


def test_inputs_hash_is_stable() -> None:
    first = _inputs_hash(BASE, IDENTITY)
    assert first == _inputs_hash(replace(BASE), IDENTITY)
    assert len(first) == 32 and int(first, 16) >= 0
    # the order environment variables are written in does not matter
    swapped = replace(BASE, environment={"LEVEL": "1", "MODE": "test"})
    assert _inputs_hash(swapped, IDENTITY) == first


@pytest.mark.parametrize(
    ("spec", "identity"),
    [
        (BASE, "envkit/demo-app:9c0d4e"),  # the image was rebuilt
        (BASE, "sha256:" + "0" * 64),
        (replace(BASE, ports=(8000, 9000)), IDENTITY),
        (replace(BASE, ports=(8080,)), IDENTITY),
        (replace(BASE, environment={"MODE": "prod", "LEVEL": "1"}), IDENTITY),
        (replace(BASE, environment={"MODE": "test"}), IDENTITY),
        (replace(BASE, command=("serve", "--debug")), IDENTITY),
        (replace(BASE, command=None), IDENTITY),
        (replace(BASE, healthcheck=HealthCheck("http", path="/ready", port=8000)), IDENTITY),
        (replace(BASE, healthcheck=HealthCheck("tcp", port=8000)), IDENTITY),
        (replace(BASE, healthcheck=HealthCheck("cmd", cmd=("true",))), IDENTITY),
        (replace(BASE, healthcheck=HealthCheck("image")), IDENTITY),
    ],
    ids=[
        "image-rebuilt",
        "image-digest",
        "port-added",
        "port-changed",
        "env-value",
        "env-removed",
        "command",
        "command-default",
        "health-path",
        "health-tcp",
        "health-cmd",
        "health-image",
    ],
)
def test_inputs_hash_changes_with_what_the_container_runs(spec: ServiceSpec, identity: str) -> None:
    assert _inputs_hash(spec, identity) != _inputs_hash(BASE, IDENTITY)


@pytest.mark.parametrize(
    "spec",
    [
        replace(BASE, start_timeout=5.0),
        replace(BASE, depends_on=()),
        replace(BASE, depends_on=("db", "cache")),
        replace(BASE, ports=(9000, 8000), healthcheck=BASE.healthcheck),
    ],
    ids=["start_timeout", "no-depends_on", "more-depends_on", "ports-reordered"],
)
def test_inputs_hash_ignores_what_does_not_change_the_container(spec: ServiceSpec) -> None:
    base = replace(BASE, ports=(8000, 9000)) if len(spec.ports) == 2 else BASE
    assert _inputs_hash(spec, IDENTITY) == _inputs_hash(base, IDENTITY)


def test_inputs_hash_distinguishes_cmd_health_checks() -> None:
    one = replace(BASE, healthcheck=HealthCheck("cmd", cmd=("redis-cli", "ping")))
    other = replace(BASE, healthcheck=HealthCheck("cmd", cmd=("redis-cli", "info")))
    assert _inputs_hash(one, IDENTITY) != _inputs_hash(other, IDENTITY)
