"""Whether a service is up: one probe class per kind of check, one wait loop.

``cmd`` runs in the container (exit 0 is healthy), ``http`` and ``tcp`` run
from this machine through the published port at the service host
(:mod:`envkit.remote`), and a success counts only when the engine still
publishes the container port at the port probed (checked once, after the
first success) and the listener can be the engine's: a listener on this
machine's loopback is not a remote engine's. ``image`` reads Docker's own
HEALTHCHECK (a container without one is healthy once it runs), ``none`` asks
only that it runs. A client in a container that joined the stack's network
(:mod:`envkit.reach`) probes the service's container name at the container
port instead, where only that container answers. A one-shot service is waited for until it exits
(:func:`wait_completed`): exit 0 is success. The loop
(:func:`wait_healthy`) takes its clock and its sleep as arguments, so it is
tested without waiting.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from envkit.config.model import HealthCheck, ServiceSpec
from envkit.docker.engine import ContainerDetails, Daemon
from envkit.errors import DaemonError, ServiceUnhealthy
from envkit.remote import LOCAL, ServiceHost

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


@dataclass(frozen=True)
class Attempt:
    """One HTTP or TCP probe: healthy or not, why, and whether it reached the host at all (a
    refused or timed-out connection, or a name that does not resolve, did not)."""

    ok: bool
    why: str
    reached: bool = True
    unresolved: bool = False  # the host's name does not resolve


class NetworkCheck:
    """What the HTTP and TCP checks share: the service host they probe, and what the attempts
    so far say about it (for the error when the service never becomes healthy)."""

    def __init__(self, port: int, reach: ServiceHost = LOCAL, address: str | None = None) -> None:
        self.port = port
        self.reach = reach
        self.address = address  # the container's name on the stack's network, when reached there
        self.attempts = 0
        self.unreached = 0  # attempts that never connected
        self.unresolved = False
        self.foreign = ""  # the last answer of a listener that cannot be the engine's
        self.probed: int | None = None  # the host port of the last successful attempt

    def attempt(self, host: str, port: int) -> Attempt:
        raise NotImplementedError

    def __call__(self, details: ContainerDetails, remaining: float) -> tuple[bool, str]:
        host_port = details.ports.get(str(self.port))
        if host_port is None:
            return False, f"port {self.port} is not published yet"
        if self.address is not None:
            # Over the stack's network: the name resolves only to this container (a container
            # name is unique on the engine, and the network holds the stack's containers and
            # its clients), so no other listener can answer and there is no published port
            # to compare: ``probed`` stays None.
            result = self.attempt(self.address, self.port)
            self.attempts += 1
            self.unresolved = self.unresolved or result.unresolved
            return result.ok, result.why
        result = self.attempt(self.reach.host, host_port)
        self.attempts += 1
        self.unreached += not result.reached
        self.unresolved = self.unresolved or result.unresolved
        if result.ok and self.reach.foreign_loopback:
            self.foreign = (
                f"a listener at {self.reach.host}:{host_port} answered ({result.why}), but the engine at "
                f"{self.reach.engine} is on another machine: that listener is not the service"
            )
            return False, self.foreign
        self.probed = host_port if result.ok else None
        return result.ok, result.why

    def unreachable(self) -> tuple[str, str] | None:
        """``(reason, fix)`` when the attempts say the service host is the problem, not the
        service: its name does not resolve, no attempt ever connected (unless it is a local
        socket's loopback, where that only means a slow service), or only a listener that cannot
        be the engine's answered."""
        host = f"the service host {self.reach.host}"
        if self.address is not None:
            host = f"the service's address {self.address} on the stack's network"
        if self.unresolved:
            reason = f"{host} does not resolve"
        elif self.foreign:
            reason = self.foreign
        elif self.attempts and self.unreached == self.attempts and self.reach.overridable:
            reason = f"{host} could not be reached: none of {self.attempts} connections to it succeeded"
        else:
            return None
        return reason, self.reach.reachable()


class HttpCheck(NetworkCheck):
    """GET ``path`` through the published port; a 2xx or 3xx answer is healthy."""

    def __init__(self, path: str, port: int, reach: ServiceHost = LOCAL, address: str | None = None) -> None:
        super().__init__(port, reach, address)
        self.path = path

    def attempt(self, host: str, port: int) -> Attempt:
        return http_attempt(host, port, self.path)


class TcpCheck(NetworkCheck):
    """The published port is served (see :func:`tcp_probe`)."""

    def attempt(self, host: str, port: int) -> Attempt:
        return tcp_attempt(host, port)


def probe_for(
    check: HealthCheck,
    daemon: Daemon,
    cid: str,
    clock: Callable[[], float] = time.monotonic,
    reach: ServiceHost = LOCAL,
    *,
    address: str | None = None,
) -> Probe:
    """The probe of ``check``; ``address``: the container's name on the stack's network, where
    this process reaches it (HTTP and TCP checks go there, at the container port)."""
    if check.kind == "cmd":
        return CommandCheck(daemon, cid, check.cmd)
    if check.kind == "http":
        return HttpCheck(check.path, check.port, reach, address)
    if check.kind == "tcp":
        return TcpCheck(check.port, reach, address)
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
    reach: ServiceHost = LOCAL,
    address: str | None = None,
) -> Mapping[str, int]:
    """Probe the service's container until it is healthy; its published ports.

    Raises :class:`ServiceUnhealthy` (with the last lines of its log, read by
    ``logs(cid)``) when its container stops, or when ``spec.start_timeout``
    seconds since ``started`` pass without a healthy probe; when the attempts
    say that the service host (``reach``) is at fault, the error says so and
    how to set it. ``address``: see :func:`probe_for`.
    """
    probe = probe or probe_for(spec.healthcheck, daemon, cid, clock, reach, address=address)
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
            ports, why = _confirmed(daemon, cid, probe, details.ports)
            if ports is not None:
                return ports
        if clock() >= deadline:
            unreachable = probe.unreachable() if isinstance(probe, NetworkCheck) else None
            if unreachable is not None:
                reason, fix = unreachable
                raise ServiceUnhealthy(
                    spec.name,
                    check,
                    clock() - started,
                    f"not healthy within its start_timeout of {spec.start_timeout:g}s: {reason} "
                    f"(last check: {why})",
                    logs(cid),
                    fix=fix,
                )
            raise ServiceUnhealthy(
                spec.name,
                check,
                clock() - started,
                f"not healthy within its start_timeout of {spec.start_timeout:g}s (last check: {why})",
                logs(cid),
            )
        sleep(PROBE_INTERVAL)


def _confirmed(
    daemon: Daemon, cid: str, probe: Probe, ports: Mapping[str, int]
) -> tuple[Mapping[str, int] | None, str]:
    """The published ports once a probe succeeded, or None and why the success does not count.

    A network check's success counts only when the engine, asked again now, publishes the
    container port at the port that answered: another listener at that port (the engine gave
    the container another one, or none) is not the service. One inspect, after a success only.
    """
    if not isinstance(probe, NetworkCheck) or probe.probed is None:
        return ports, "healthy"
    now = daemon.inspect_container(cid)
    published = now.ports.get(str(probe.port)) if now is not None and now.running else None
    if published == probe.probed:
        return now.ports if now is not None else ports, "healthy"
    where = f"port {published}" if published is not None else "no port"
    return None, (
        f"port {probe.probed} answered, but the engine now publishes container port {probe.port} "
        f"at {where}: that answer was not the service"
    )


def http_probe(port: int, path: str, host: str = LOCAL.host) -> tuple[bool, str]:
    """GET ``path`` at ``host:port``: healthy on a 2xx or 3xx answer, and why."""
    result = http_attempt(host, port, path)
    return result.ok, result.why


def http_attempt(host: str, port: int, path: str) -> Attempt:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        try:
            conn.connect()
        except OSError as err:
            return _unreached(f"GET {path}", err)
        try:
            conn.request("GET", path)
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as err:
            return Attempt(False, f"GET {path}: {type(err).__name__}: {err}".rstrip(": "))
    finally:
        conn.close()
    return Attempt(200 <= status < 400, f"GET {path} answered {status}")


def tcp_probe(port: int, host: str = LOCAL.host) -> tuple[bool, str]:
    """Whether something serves the port behind the published one, and why (see :func:`tcp_attempt`)."""
    result = tcp_attempt(host, port)
    return result.ok, result.why


def tcp_attempt(host: str, port: int) -> Attempt:
    """Whether something serves the port behind the published one.

    docker-proxy accepts a connection on the host port before the service
    listens, then closes it when it cannot reach the container: a connection
    that stays open (or sends data) is served, one closed at once is not.
    """
    try:
        sock = socket.create_connection((host, port), timeout=2)
    except OSError as err:
        return _unreached("connect", err)
    try:
        sock.settimeout(0.3)
        try:
            data = sock.recv(1)
        except TimeoutError:
            return Attempt(True, "connection held open")
        except OSError as err:
            return Attempt(False, f"connection reset ({err.strerror or err})")
        return (
            Attempt(True, "the service spoke first") if data else Attempt(False, "connection closed at once")
        )
    finally:
        sock.close()


def _unreached(what: str, err: OSError) -> Attempt:
    """A connection that was never made: refused, timed out, unroutable, or a name that does not
    resolve. ``what`` starts the message: ``GET /path`` (with the error's type) or ``connect``."""
    if isinstance(err, socket.gaierror):
        return Attempt(False, f"{what}: cannot resolve the host ({err.strerror or err})", False, True)
    detail = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
    kind = "" if what == "connect" else f"{type(err).__name__}: "
    return Attempt(False, f"{what}: {kind}{detail or type(err).__name__}", reached=False)
