"""Whether a service is up: one probe class per kind of check, one wait loop.

``cmd`` runs in the container (exit 0 is healthy), ``http`` and ``tcp`` run
from the host through the published port, ``image`` reads Docker's own
HEALTHCHECK (a container without one is healthy once it runs), ``none`` asks
only that it runs. A one-shot service is waited for until it exits
(:func:`wait_completed`): exit 0 is success. The loop
(:func:`wait_healthy`) takes its clock and its sleep as arguments, so it is
tested without waiting.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from envkit.config.model import HealthCheck, ServiceSpec
from envkit.docker.engine import ContainerDetails, Daemon
from envkit.errors import DaemonError, ServiceUnhealthy
from envkit.stack.handle import HOST

PROBE_INTERVAL = 0.2  # seconds between probes


class Probe(Protocol):
    def __call__(self, details: ContainerDetails, remaining: float) -> tuple[bool, str]:
        """Whether the service is healthy now, and a few words on why (or why not).
        ``remaining`` is how long the service has left to become healthy."""


# Seconds a container without a health check must keep running to count as up. Twice the half
# second that a service failing at start may take to exit: probes come every PROBE_INTERVAL and
# Docker's view of a container lags a little, so a shorter settle could still see it running.
SETTLE = 1.0


class ImageCheck:
    """The image's own HEALTHCHECK, as Docker reports it. With none, the container must keep
    running for :data:`SETTLE` seconds: one that exits half a second after it starts is not up."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.since: float | None = None

    def __call__(self, details: ContainerDetails, remaining: float) -> tuple[bool, str]:
        if details.health is None:
            now = self.clock()
            self.since = now if self.since is None else self.since
            if now - self.since < SETTLE:
                return False, f"running for {now - self.since:.1f}s (it must stay up {SETTLE:g}s)"
            return True, "running"
        last = f": {details.health_output}" if details.health_output else ""
        return details.health == "healthy", f"Docker health {details.health}{last}"


class CommandCheck:
    """A command run in the container; healthy when it exits 0. It may take at most 10 s
    (and no longer than the time left), after which it counts as a failed check."""

    def __init__(self, daemon: Daemon, cid: str, cmd: tuple[str, ...]) -> None:
        self.daemon = daemon
        self.cid = cid
        self.cmd = cmd

    def __call__(self, details: ContainerDetails, remaining: float) -> tuple[bool, str]:
        try:
            result = self.daemon.exec_run(self.cid, self.cmd, timeout=max(1.0, min(10.0, remaining)))
        except DaemonError as err:
            return False, err.detail
        tail = result.output.splitlines()[-1:] or [""]
        return result.exit_code == 0, f"exit code {result.exit_code}" + (f": {tail[0]}" if tail[0] else "")


class HttpCheck:
    """GET ``path`` through the published port; a 2xx or 3xx answer is healthy."""

    def __init__(self, path: str, port: int) -> None:
        self.path = path
        self.port = port

    def __call__(self, details: ContainerDetails, remaining: float) -> tuple[bool, str]:
        host_port = details.ports.get(str(self.port))
        if host_port is None:
            return False, f"port {self.port} is not published yet"
        return http_probe(host_port, self.path)


class TcpCheck:
    """The published port is served (see :func:`tcp_probe`)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __call__(self, details: ContainerDetails, remaining: float) -> tuple[bool, str]:
        host_port = details.ports.get(str(self.port))
        if host_port is None:
            return False, f"port {self.port} is not published yet"
        return tcp_probe(host_port)


def probe_for(
    check: HealthCheck, daemon: Daemon, cid: str, clock: Callable[[], float] = time.monotonic
) -> Probe:
    if check.kind == "cmd":
        return CommandCheck(daemon, cid, check.cmd)
    if check.kind == "http":
        return HttpCheck(check.path, check.port)
    if check.kind == "tcp":
        return TcpCheck(check.port)
    return ImageCheck(clock)


ONESHOT_CHECK = "runs to completion (exit code 0)"


def wait_completed(
    daemon: Daemon,
    spec: ServiceSpec,
    cid: str,
    started: float,
    *,
    logs: Callable[[str], list[str]],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait for a one-shot service's container to exit; exit code 0 is success.

    Raises :class:`ServiceUnhealthy` (with the last lines of its log) when it
    exits with another code, is removed, or still runs ``spec.start_timeout``
    seconds after ``started``.
    """
    deadline = started + spec.start_timeout
    while True:
        details = daemon.inspect_container(cid)
        if details is None:
            raise ServiceUnhealthy(
                spec.name, ONESHOT_CHECK, clock() - started, "its container was removed", logs(cid)
            )
        if not details.running:
            if details.exit_code == 0:
                return
            error = f" ({details.error})" if details.error else ""
            raise ServiceUnhealthy(
                spec.name,
                ONESHOT_CHECK,
                clock() - started,
                f"it exited with code {details.exit_code}{error}",
                logs(cid),
            )
        if clock() >= deadline:
            raise ServiceUnhealthy(
                spec.name,
                ONESHOT_CHECK,
                clock() - started,
                f"still running after its start_timeout of {spec.start_timeout:g}s",
                logs(cid),
            )
        sleep(PROBE_INTERVAL)


def wait_healthy(
    daemon: Daemon,
    spec: ServiceSpec,
    cid: str,
    started: float,
    *,
    logs: Callable[[str], list[str]],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    probe: Probe | None = None,
) -> Mapping[str, int]:
    """Probe the service's container until it is healthy; its published ports.

    Raises :class:`ServiceUnhealthy` (with the last lines of its log, read by
    ``logs(cid)``) when its container stops, or when ``spec.start_timeout``
    seconds since ``started`` pass without a healthy probe.
    """
    probe = probe or probe_for(spec.healthcheck, daemon, cid, clock)
    deadline = started + spec.start_timeout
    check = spec.healthcheck.describe()
    while True:
        details = daemon.inspect_container(cid)
        if details is None or not details.running:
            how = "was removed" if details is None else f"stopped (exit code {details.exit_code}"
            if details is not None:
                how += (f", {details.error}" if details.error else "") + ")"
            raise ServiceUnhealthy(spec.name, check, clock() - started, f"its container {how}", logs(cid))
        ok, why = probe(details, deadline - clock())
        if ok:
            return details.ports
        if clock() >= deadline:
            raise ServiceUnhealthy(
                spec.name,
                check,
                clock() - started,
                f"not healthy within its start_timeout of {spec.start_timeout:g}s (last check: {why})",
                logs(cid),
            )
        sleep(PROBE_INTERVAL)


def http_probe(port: int, path: str) -> tuple[bool, str]:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as err:
        return False, f"GET {path}: {type(err).__name__}: {err}".rstrip(": ")
    finally:
        conn.close()
    return 200 <= status < 400, f"GET {path} answered {status}"


def tcp_probe(port: int) -> tuple[bool, str]:
    """Whether something serves the port behind the published one.

    docker-proxy accepts a connection on the host port before the service
    listens, then closes it when it cannot reach the container: a connection
    that stays open (or sends data) is served, one closed at once is not.
    """
    try:
        sock = socket.create_connection((HOST, port), timeout=2)
    except OSError as err:
        return False, f"connect: {err.strerror or err}"
    try:
        sock.settimeout(0.3)
        try:
            data = sock.recv(1)
        except TimeoutError:
            return True, "connection held open"
        except OSError as err:
            return False, f"connection reset ({err.strerror or err})"
        return (True, "the service spoke first") if data else (False, "connection closed at once")
    finally:
        sock.close()
