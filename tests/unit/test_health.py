"""The health checks and their one wait loop, with a fake engine and a fake clock."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from envkit.config.model import HealthCheck, ServiceSpec
from envkit.docker.engine import ContainerDetails, ExecResult
from envkit.docker.transport import Endpoint
from envkit.errors import DaemonError, ServiceUnhealthy
from envkit.remote import LOCAL, ServiceHost, service_host
from envkit.settings import Settings
from envkit.stack.health import CommandCheck, HttpCheck, ImageCheck, TcpCheck, probe_for, wait_healthy


def details(*, running: bool = True, health: str | None = None, output: str = "") -> ContainerDetails:
    return ContainerDetails(
        id="c1",
        running=running,
        exit_code=None if running else 2,
        error="",
        health=health,
        health_output=output,
        ports={"8000": 40001},
    )


def spec(check: HealthCheck, timeout: float = 10.0) -> ServiceSpec:
    return ServiceSpec(
        name="api",
        image="api",
        ports=(8000,),
        environment={},
        command=None,
        depends_on=(),
        healthcheck=check,
        start_timeout=timeout,
    )


class Engine:
    """Answers inspect with ``states`` in turn (the last one forever) and exec with ``exec_result``."""

    def __init__(self, states: Sequence[ContainerDetails], exec_result: Any = None) -> None:
        self.states = list(states)
        self.exec_result = exec_result
        self.execs: list[float] = []

    def inspect_container(self, cid: str) -> ContainerDetails:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def exec_run(self, cid: str, cmd: Any, *, timeout: float) -> ExecResult:
        self.execs.append(timeout)
        if isinstance(self.exec_result, BaseException):
            raise self.exec_result
        return self.exec_result  # type: ignore[no-any-return]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("seen_running", [2, 4], ids=["at-once", "half-a-second-later"])
def test_a_container_without_a_health_check_that_exits_at_once_is_not_up(seen_running: int) -> None:
    """Running is sampled over a short settle time, not once. A service that exits about half a
    second after it starts is seen running by the probes at 0, 0.2, 0.4 and 0.6 s (Docker's view
    lags its exit a little): it must not be up by then."""
    clock = Clock()
    engine = Engine([details()] * seen_running + [details(running=False)])
    with pytest.raises(ServiceUnhealthy, match="stopped"):
        wait_healthy(
            engine,  # type: ignore[arg-type]
            spec(HealthCheck("image")),
            "c1",
            clock.now,
            logs=lambda cid: [],
            clock=clock,
            sleep=clock.sleep,
        )


def test_each_kind_of_check_has_its_probe() -> None:
    engine: Any = Engine([details()])
    assert isinstance(probe_for(HealthCheck("image"), engine, "c1"), ImageCheck)
    assert isinstance(probe_for(HealthCheck("cmd", cmd=("true",)), engine, "c1"), CommandCheck)
    assert isinstance(probe_for(HealthCheck("http", path="/h", port=8000), engine, "c1"), HttpCheck)
    assert isinstance(probe_for(HealthCheck("tcp", port=8000), engine, "c1"), TcpCheck)


def test_the_image_check_reads_dockers_health() -> None:
    clock = Clock()
    check = ImageCheck(clock)
    assert check(details(health=None), 5)[0] is False  # just started: it must stay up a moment
    clock.now += 0.6
    assert check(details(health=None), 5)[0] is False  # a service that exits at 0.5 s is still seen
    clock.now += 0.4
    assert check(details(health=None), 5) == (True, "running")
    assert check(details(health="starting"), 5) == (False, "Docker health starting")
    assert check(details(health="unhealthy", output="pg down"), 5) == (
        False,
        "Docker health unhealthy: pg down",
    )
    assert check(details(health="healthy"), 5)[0]


def test_a_command_check_is_healthy_on_exit_zero_and_says_why_not() -> None:
    assert CommandCheck(Engine([details()], ExecResult(0, "PONG")), "c1", ("ping",))(details(), 30)[0]  # type: ignore[arg-type]
    ok, why = CommandCheck(Engine([details()], ExecResult(1, "a\nconnection refused")), "c1", ("x",))(
        details(), 30
    )  # type: ignore[arg-type]
    assert not ok and why == "exit code 1: connection refused"


def test_a_command_check_takes_at_most_ten_seconds_and_no_more_than_is_left() -> None:
    engine = Engine([details()], ExecResult(0, ""))
    check = CommandCheck(engine, "c1", ("x",))  # type: ignore[arg-type]
    check(details(), 60)
    check(details(), 3)
    check(details(), 0.1)
    assert engine.execs == [10.0, 3.0, 1.0]


def test_a_command_check_that_the_engine_fails_is_unhealthy_with_the_reason() -> None:
    engine = Engine([details()], DaemonError("POST /exec: the engine did not answer within 10s"))
    ok, why = CommandCheck(engine, "c1", ("x",))(details(), 30)  # type: ignore[arg-type]
    assert not ok and "did not answer within 10s" in why


def test_a_programming_error_in_a_check_is_not_called_unhealthy() -> None:
    engine = Engine([details()], TypeError("exec_run() got an unexpected keyword"))
    with pytest.raises(TypeError):
        CommandCheck(engine, "c1", ("x",))(details(), 30)  # type: ignore[arg-type]


def test_the_loop_returns_the_ports_once_healthy() -> None:
    clock = Clock()
    engine = Engine([details(health="starting"), details(health="starting"), details(health="healthy")])
    ports = wait_healthy(
        engine,
        spec(HealthCheck("image")),
        "c1",
        clock.now,
        logs=lambda cid: [],
        clock=clock,
        sleep=clock.sleep,  # type: ignore[arg-type]
    )
    assert ports == {"8000": 40001}
    assert len(clock.slept) == 2


def test_the_loop_gives_up_at_the_start_timeout_with_the_last_reason_and_the_log() -> None:
    clock = Clock()
    engine = Engine([details(health="unhealthy", output="pg down")])
    with pytest.raises(ServiceUnhealthy) as caught:
        wait_healthy(
            engine,  # type: ignore[arg-type]
            spec(HealthCheck("image"), timeout=5.0),
            "c1",
            clock.now,
            logs=lambda cid: [f"log of {cid}"],
            clock=clock,
            sleep=clock.sleep,
        )
    err = caught.value
    assert err.service == "api" and err.seconds == pytest.approx(5.0, abs=0.21)
    assert "start_timeout of 5s" in err.reason and "pg down" in err.reason
    assert err.logs == ["log of c1"]
    assert sum(clock.slept) == pytest.approx(5.0, abs=0.21)  # waited on the fake clock, not the real one


def test_the_loop_stops_at_once_when_the_container_stops() -> None:
    clock = Clock()
    engine = Engine([details(health="starting"), details(running=False)])
    with pytest.raises(ServiceUnhealthy, match=r"stopped \(exit code 2"):
        wait_healthy(
            engine,
            spec(HealthCheck("image")),
            "c1",
            clock.now,
            logs=lambda cid: [],
            clock=clock,
            sleep=clock.sleep,  # type: ignore[arg-type]
        )
    assert len(clock.slept) == 1


# --- probes go to the service host, and count only through the engine's port --------------------


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.asked += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def answering(host: str = "127.0.0.1") -> Iterator[http.server.ThreadingHTTPServer]:
    """An HTTP server on ``host`` answering 200 to every GET; ``.asked`` counts them."""
    server = http.server.ThreadingHTTPServer((host, 0), _Ok)
    server.asked = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def on_port(port: int | None) -> ContainerDetails:
    return ContainerDetails("c1", True, None, "", None, "", {"8000": port} if port else {})


class Counting(Engine):
    def __init__(self, states: Sequence[ContainerDetails]) -> None:
        super().__init__(states)
        self.inspects = 0

    def inspect_container(self, cid: str) -> ContainerDetails:
        self.inspects += 1
        return super().inspect_container(cid)


def wait(engine: Engine, check: HealthCheck, reach: ServiceHost = LOCAL, timeout: float = 2.0) -> Any:
    clock = Clock()
    return wait_healthy(
        engine,  # type: ignore[arg-type]
        spec(check, timeout),
        "c1",
        clock.now,
        logs=lambda cid: ["last line"],
        clock=clock,
        sleep=clock.sleep,
        reach=reach,
    )


REMOTE = service_host(Endpoint("tcp://10.0.0.5:2375", "DOCKER_HOST"), None, Settings())


def reach_at(host: str, endpoint: str = "tcp://10.0.0.5:2375") -> ServiceHost:
    return service_host(Endpoint(endpoint, "DOCKER_HOST"), None, Settings(host=host))


def test_the_http_check_probes_the_service_host_not_this_machines_127_0_0_1() -> None:
    with answering("127.0.0.2") as server:
        port = server.server_address[1]
        engine = Counting([on_port(port)])
        check = HealthCheck("http", path="/h", port=8000)
        assert wait(engine, check, reach_at("127.0.0.2", "unix:///x.sock")) == {"8000": port}
        assert server.asked == 1  # type: ignore[attr-defined]
        assert engine.inspects == 2  # the probe's, and one to confirm the port after the success
        with pytest.raises(ServiceUnhealthy):
            wait(Counting([on_port(port)]), check, LOCAL)  # nothing of it on 127.0.0.1


def test_the_tcp_check_probes_the_service_host() -> None:
    with socket.create_server(("127.0.0.3", 0)) as listener:
        port = listener.getsockname()[1]
        assert wait(
            Counting([on_port(port)]), HealthCheck("tcp", port=8000), reach_at("127.0.0.3", "unix:///x")
        )


@pytest.mark.parametrize("now", [None, 1], ids=["no-port-now", "another-port-now"])
def test_a_success_counts_only_when_the_engine_still_publishes_that_port(now: int | None) -> None:
    """Something answers at the port the engine gave first; asked again, the engine publishes the
    container port elsewhere (or nowhere): that answer was another listener, not the service."""
    with answering() as server:
        port = server.server_address[1]
        other = None if now is None else port + 1
        engine = Counting([on_port(port), on_port(other)])  # the second answer, forever after
        with pytest.raises(ServiceUnhealthy) as caught:
            wait(engine, HealthCheck("http", path="/h", port=8000), timeout=0.0)  # one attempt
        assert server.asked == 1  # type: ignore[attr-defined]
        where = "no port" if other is None else f"port {other}"
        assert f"port {port} answered, but the engine now publishes container port 8000 at {where}" in str(
            caught.value
        )


def test_a_success_is_confirmed_with_one_inspect_only() -> None:
    with answering() as server:
        port = server.server_address[1]
        engine = Counting([on_port(None), on_port(None), on_port(port)])
        assert wait(engine, HealthCheck("http", path="/", port=8000), timeout=5) == {"8000": port}
        assert engine.inspects == 4  # three probes' inspects, one confirmation


def test_a_decoy_on_this_machines_loopback_never_counts_for_a_remote_engine() -> None:
    """The issue's decoy: the engine on another machine published port P; a listener on this
    machine's 127.0.0.1:P answers 200. With ENVKIT_HOST=127.0.0.1 the probes reach it, and
    envkit must not call the service healthy; the error names ENVKIT_HOST."""
    with answering() as decoy:
        port = decoy.server_address[1]
        engine = Counting([on_port(port)])
        with pytest.raises(ServiceUnhealthy) as caught:
            wait(engine, HealthCheck("http", path="/", port=8000), reach_at("127.0.0.1"))
        assert decoy.asked > 1  # type: ignore[attr-defined]
        err = caught.value
        assert f"a listener at 127.0.0.1:{port} answered" in err.reason
        assert "tcp://10.0.0.5:2375 is on another machine" in err.reason
        assert "ENVKIT_HOST" in err.fix and "start_timeout" not in str(err).split("fix:")[1]


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_a_service_host_that_refuses_every_connection_is_named_not_the_start_timeout(kind: str) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    check = HealthCheck(kind, path="/h", port=8000)
    with pytest.raises(ServiceUnhealthy) as caught:
        wait(Counting([on_port(port)]), check, reach_at("127.0.0.1", "tcp://127.0.0.1:2375"))
    err = caught.value
    assert "the service host 127.0.0.1 could not be reached: none of" in err.reason
    assert "ENVKIT_HOST" in err.fix
    assert "raise its start_timeout" not in str(err)


def test_a_service_host_that_does_not_resolve_is_named() -> None:
    with pytest.raises(ServiceUnhealthy) as caught:
        wait(Counting([on_port(40000)]), HealthCheck("tcp", port=8000), reach_at("no-such-host.invalid"))
    assert "the service host no-such-host.invalid does not resolve" in caught.value.reason
    assert "ENVKIT_HOST" in caught.value.fix


def test_refused_connections_on_a_local_socket_are_still_a_slow_service() -> None:
    """The default local case is unchanged: its advice is the service and its start_timeout."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ServiceUnhealthy) as caught:
        wait(Counting([on_port(port)]), HealthCheck("tcp", port=8000), LOCAL)
    assert caught.value.fix == "" and "raise its start_timeout" in str(caught.value)
