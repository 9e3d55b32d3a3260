"""Bringing an acquire's services up, without the state lock held.

Each service starts as soon as what it depends on is ready by its condition
(independent ones in parallel): started (its container runs), healthy, or,
for a one-shot service, completed (it exited 0). A service this holder claimed is created, started and
probed until healthy, and its container, ports and status are recorded under
the lock; a service another holder is starting is waited for by reading the
state file, and taken over if that holder dies. A failure is recorded with
its logs, so every waiter raises the same :class:`ServiceUnhealthy`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from envkit import faults, graph
from envkit.config.model import COMPLETED, STARTED, StackConfig
from envkit.docker import labels
from envkit.docker.engine import ContainerSpec, Daemon
from envkit.errors import EnvkitError, ServiceUnhealthy, StackStopped
from envkit.progress import Progress, State
from envkit.remote import LOCAL, ServiceHost, container_name, network_address
from envkit.stack import health, lease
from envkit.stack.objects import StackObjects
from envkit.stack.state import ServiceState, StackState, StateFile
from envkit.stack.wanted import Wanted

POLL = 0.05  # seconds between looks at a service another process is starting
WAIT_SLACK = 30.0  # a waiter's own deadline beyond the service's start_timeout
READY = ("healthy", "completed")  # a service that is up, or a one-shot that exited 0


class Launcher:
    """Brings up the services one acquire wants, as the holder ``me``."""

    def __init__(
        self,
        config: StackConfig,
        daemon: Daemon,
        *,
        me: str,
        wanted: Mapping[str, Wanted],
        locked: Callable[[], contextlib.AbstractContextManager[None]],
        progress: Progress,
        fault: str | None = None,
        reach: ServiceHost = LOCAL,
    ) -> None:
        self.config = config
        self.reach = reach  # where ports are published, and where the health checks reach them
        self.daemon = daemon
        self.me = me
        self.wanted = wanted
        self.locked = locked
        self.progress = progress
        self.fault = fault  # a fault test's phase (envkit.faults)
        self.objects = StackObjects(daemon, config.id, fault=fault)
        self.state_file = StateFile(config.state_dir)
        self._cancelled = threading.Event()

    def run(self, names: Sequence[str]) -> None:
        """Return once every one of ``names`` is healthy (or, a one-shot, completed).

        A service starts once its dependencies are healthy or completed, except
        those it only needs started (``service_started``): it waits for their
        containers inside :meth:`settle`. On Ctrl-C the starts under way stop
        at their next look and are waited for, so that nothing is created after
        the caller tears the stack down.
        """
        services = self.config.services
        order: graph.Graph = {
            name: tuple(d for d in spec.depends_on if spec.condition(d) != STARTED)
            for name, spec in services.items()
        }
        graph.run(
            order,
            names,
            self.settle,
            jobs=max(1, len(names)),
            thread_name="envkit-up",
            on_interrupt=self._cancelled.set,
        )

    def _sleep(self, seconds: float) -> None:
        if self._cancelled.wait(seconds):
            raise _Cancelled

    def settle(self, name: str) -> None:
        """Return once ``name`` is healthy: start it if it is ours to start, else wait for its starter."""
        spec = self.config.services[name]
        started = time.monotonic()
        deadline = started + spec.start_timeout + WAIT_SLACK
        self._wait_started([d for d in spec.depends_on if spec.condition(d) == STARTED], deadline)
        noted = False
        while True:
            svc = self._service(self.state_file.read(), name)
            if svc.status in READY:
                return
            if svc.status == "failed":
                if svc.error:
                    raise ServiceUnhealthy(**svc.error)
                raise ServiceUnhealthy(
                    name, spec.healthcheck.describe(), 0.0, "another process failed to start it"
                )
            if svc.owner == self.me:
                self._start(name)
                return
            if svc.owner is None or not lease.holder_alive(self.config.state_dir, svc.owner):
                self._take_over(name, svc.owner)
                continue
            if not noted:
                self.progress.note(name, "waiting for another process that is starting it", State.WAITING)
                noted = True
            if time.monotonic() > deadline:
                raise ServiceUnhealthy(
                    name,
                    spec.healthcheck.describe(),
                    time.monotonic() - started,
                    "another process has been starting it for too long",
                    self.objects.logs(svc.container),
                )
            self._sleep(POLL)

    def _wait_started(self, names: Sequence[str], deadline: float) -> None:
        """Return once each of ``names`` has a container (or is up already)."""
        for name in names:
            while True:
                svc = self._service(self.state_file.read(), name)
                if svc.container or svc.status in READY:
                    break
                if svc.status == "failed":
                    error = svc.error or {}
                    raise ServiceUnhealthy(
                        name, self.config.services[name].healthcheck.describe(), 0.0,
                        str(error.get("reason") or "it failed to start"), list(error.get("logs") or []),
                    )  # fmt: skip
                if time.monotonic() > deadline:
                    raise ServiceUnhealthy(name, "started", 0.0, "its container was not started in time")
                self._sleep(POLL)

    def _service(self, state: StackState | None, name: str) -> ServiceState:
        svc = state.services.get(name) if state else None
        if svc is None:
            raise StackStopped(self.config.id)
        return svc

    def _take_over(self, name: str, previous: str | None) -> None:
        with self.locked():
            state = self.state_file.read()
            svc = self._service(state, name)
            if svc.status == "starting" and svc.owner == previous:
                svc.owner = self.me
                assert state is not None
                self.state_file.save(state)

    def _update(self, name: str, **changes: Any) -> None:
        """Record a change to a service this holder is starting (under the lock)."""
        with self.locked():
            state = self.state_file.read()
            svc = self._service(state, name)
            if svc.owner != self.me:
                raise StackStopped(self.config.id)
            for key, value in changes.items():
                setattr(svc, key, value)
            svc.since = time.time()
            assert state is not None
            self.state_file.save(state)

    def _raise_if_stopped(self, name: str) -> None:
        """StackStopped if the stack went (or the service stopped being this holder's to start)
        while it was being started: a failure then is the stop's doing, and says so."""
        try:
            state = self.state_file.read()
        except EnvkitError:
            return
        svc = state.services.get(name) if state else None
        if svc is None or svc.owner != self.me:
            raise StackStopped(self.config.id) from None

    def _start(self, name: str) -> None:
        spec = self.config.services[name]
        want = self.wanted[name]
        started = time.monotonic()
        self.progress.note(name, f"starting ({want.image})", State.WORKING)
        container = ContainerSpec(
            name=container_name(self.config.id, name),
            image=want.image,
            command=spec.command,
            environment=spec.environment,
            labels={
                **spec.labels,
                labels.STACK: self.config.id,
                labels.PROJECT: self.config.name,
                labels.SERVICE: name,
                labels.INPUTS: want.inputs,
                labels.ROOT: str(self.config.root),
            },
            ports=spec.ports,
            network=self.config.id,
            aliases=[name, *spec.aliases],
            host=self.reach.publish,
            entrypoint=spec.entrypoint,
            user=spec.user,
            working_dir=spec.working_dir,
            mounts=self._mounts(name),
            stop_signal=spec.stop_signal,
            tty=spec.tty,
            stdin_open=spec.stdin_open,
            no_healthcheck=spec.healthcheck.kind == "none",
        )
        if self._cancelled.is_set():
            raise _Cancelled
        try:
            cid = self.objects.run(
                container, service=name, check=spec.healthcheck.describe(), inputs=want.inputs
            )
        except EnvkitError:
            self._raise_if_stopped(name)  # its network went with the stack: that is the news
            raise
        faults.reach(self.fault, "launch.started")
        try:
            self._update(name, container=cid)
        except StackStopped:
            self.objects.remove([cid])  # torn down meanwhile: this container is nobody's
            raise
        faults.reach(self.fault, "launch.recorded")
        try:
            if self._oneshot(name):
                health.wait_completed(
                    self.daemon, spec, cid, started, logs=self.objects.logs, sleep=self._sleep
                )
                ports: Mapping[str, int] = {}
            else:
                ports = health.wait_healthy(
                    self.daemon,
                    spec,
                    cid,
                    started,
                    logs=self.objects.logs,
                    sleep=self._sleep,
                    reach=self.reach,
                    address=network_address(self.config.id, name) if self.reach.network else None,
                )
        except ServiceUnhealthy as err:
            self._raise_if_stopped(name)  # killed by `envkit down --all`, not unhealthy
            self.progress.note(name, f"unhealthy: {err.reason}", State.FAILED)
            with contextlib.suppress(EnvkitError):
                self.objects.remove([cid])
            error = {
                "service": err.service,
                "check": err.check,
                "seconds": err.seconds,
                "reason": err.reason,
                "logs": err.logs,
                **({"fix": err.fix} if err.fix else {}),
            }
            with contextlib.suppress(StackStopped):
                self._update(name, status="failed", error=error, owner=None)
            raise
        done = "completed" if self._oneshot(name) else "healthy"
        self._update(name, status=done, ports=dict(ports), owner=None)
        faults.reach(self.fault, "launch.healthy")
        self.progress.note(name, f"{done} in {time.monotonic() - started:.1f}s", State.DONE)

    def _oneshot(self, name: str) -> bool:
        """Whether ``name`` runs to completion: marked so, or a dependent waits for it to complete."""
        services = self.config.services
        return services[name].oneshot or any(
            name in s.depends_on and s.condition(name) == COMPLETED for s in services.values()
        )

    def _mounts(self, name: str) -> list[tuple[str, str, str, bool]]:
        """The service's mounts as the engine takes them: a stack volume by its Docker name (created
        now if missing), a bind's missing source folder created (as compose does)."""
        spec = self.config.services[name]
        volumes = [m.source for m in spec.mounts if m.kind == "volume" and m.source]
        if volumes:
            self.objects.ensure_volumes(self.config.name, volumes)
        out = []
        for m in spec.mounts:
            source = m.source
            if m.kind == "volume" and source:
                source = self.objects.volume_name(source)
            elif m.kind == "bind" and not os.path.exists(source):
                try:
                    os.makedirs(source, exist_ok=True)
                except OSError as err:
                    raise EnvkitError(
                        f"service {name!r}: its bind mount source {source} is missing and cannot be "
                        f"created ({err.strerror or err})\n  fix: create it, or correct the path"
                    ) from None
            out.append((m.kind, source, m.target, m.read_only))
        return out


class _Cancelled(Exception):
    """The acquire was interrupted: a start under way stops here."""
