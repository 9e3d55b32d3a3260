"""The health checks and their one wait loop, with a fake engine and a fake clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from envkit.config.model import HealthCheck, ServiceSpec
from envkit.docker.engine import ContainerDetails, ExecResult
from envkit.errors import DaemonError, ServiceUnhealthy
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
