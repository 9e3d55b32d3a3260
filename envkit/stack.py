"""One shared set of services for every process of a checkout.

:func:`shared_stack` (or :func:`acquire`) gives a process a *lease* on the
stack: the first one starts it, the others attach, the last to leave tears it
down (after a short grace, or after a TTL when asked to keep it warm), and a
detached reaper (:mod:`envkit.reaper`) tears it down when every holder has
died without leaving.

acquire: images are ensured (cached by key) -> under the state lock: load the
state (rebuilt from labels if need be), prune dead holders, drop services whose
containers are gone, restart the stack if its inputs changed and nobody holds
it (or refuse, naming the holders), claim the services nobody is starting,
register this holder -> unlock -> start the claimed services layer by layer
(dependencies first, independent ones in parallel) and wait until every
wanted service is healthy, whoever started it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import http.client
import json
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envkit import build as build_mod
from envkit import config as config_mod
from envkit import lease, runtime
from envkit.config import ServiceSpec, StackConfig
from envkit.errors import (
    ConfigError,
    EndpointError,
    EnvkitError,
    ServiceUnhealthy,
    StackConflict,
    StateError,
)
from envkit.progress import Progress, Silent
from envkit.store import ServiceState, StackState, Store, inspect_ports

log = logging.getLogger("envkit")

HOST = "127.0.0.1"  # every port is published here, and only here
DEFAULT_GRACE = 3.0  # seconds a stack outlives its last holder, so a late joiner finds it up
INPUTS_SCHEMA = 1
_POLL = 0.05  # seconds between looks at a service another process is starting
_PROBE_INTERVAL = 0.2  # seconds between health probes
_WAIT_SLACK = 30.0  # a waiter's own deadline beyond the service's start_timeout


class StackStopped(EnvkitError, RuntimeError):
    """The stack was torn down (``envkit down --all``) while this process was starting it."""

    def __init__(self, stack: str) -> None:
        super().__init__(stack)
        self.stack = stack

    def __str__(self) -> str:
        return (
            f"stack {self.stack!r} was stopped (envkit down --all) while this process was starting it\n"
            "  fix: run again"
        )


def stack_id(config: StackConfig) -> str:
    """The id of this checkout's stack: its name plus a hash of its state directory."""
    digest = hashlib.sha256(str(config.state_dir).encode()).hexdigest()[:8]
    return f"{config.name}-{digest}"


@dataclass(frozen=True)
class StackHandle:
    """Where the stack's services are reached from the host."""

    stack: str
    ports: Mapping[str, Mapping[int, int]]  # service -> container port -> host port
    host: str = HOST

    def endpoint(self, service: str, port: int) -> tuple[str, int]:
        """``(host, port)`` at which ``service``'s container port ``port`` is published."""
        published = self.ports.get(service)
        if published is None or port not in published:
            known = (
                ", ".join(f"{s}:{p}" for s, ps in sorted(self.ports.items()) for p in sorted(ps)) or "none"
            )
            raise EndpointError(service, port if published is not None else None, known)
        return self.host, published[port]

    def url(self, service: str, port: int, scheme: str = "http") -> str:
        """``scheme://host:port`` of a published port (no trailing slash)."""
        host, host_port = self.endpoint(service, port)
        return f"{scheme}://{host}:{host_port}"

    def env(self) -> dict[str, str]:
        """``ENVKIT_<SERVICE>_HOST`` and ``ENVKIT_<SERVICE>_PORT_<N>`` for every published port."""
        out = {}
        for service, ports in sorted(self.ports.items()):
            name = config_mod.env_name(service)
            out[f"ENVKIT_{name}_HOST"] = self.host
            for port, host_port in sorted(ports.items()):
                out[f"ENVKIT_{name}_PORT_{port}"] = str(host_port)
        return out


def _handle(sid: str, state: StackState | None) -> StackHandle:
    ports: dict[str, dict[int, int]] = {}
    for name, svc in state.services.items() if state else ():
        if svc.status == "healthy":
            ports[name] = {int(p): hp for p, hp in svc.ports.items()}
    return StackHandle(stack=sid, ports=ports)


# --- options from the environment -----------------------------------------------------------


def env_seconds(name: str, default: float | None, environ: Mapping[str, str] | None = None) -> float | None:
    """A non-negative number of seconds from the environment variable ``name``."""
    raw = (os.environ if environ is None else environ).get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            "environment", name, f"{raw!r} is not a number of seconds", f"set {name}=60, or unset it"
        )
    return value


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    raw = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError("environment", name, f"{raw!r} is not a yes or no", f"set {name}=1 or {name}=0")


# --- leases ------------------------------------------------------------------------------------


class Lease:
    """A process's hold on the stack. :meth:`release` is idempotent and also runs at exit."""

    def __init__(self, stack: Stack, registration: lease.Registration, handle: StackHandle) -> None:
        self.stack = stack
        self.registration = registration
        self.handle = handle
        self._released = False
        self._lock = threading.Lock()
        _ACTIVE.add(self)

    @property
    def holder(self) -> lease.Holder:
        return self.registration.holder

    def release(self, *, grace: float | None = None, keep: bool = False) -> None:
        """Let go of the stack. If no one else holds it, it stays up for ``grace`` seconds
        (ENVKIT_GRACE by default), or until `envkit down` with ``keep``, or for a TTL
        asked for when it was acquired; then it goes."""
        with self._lock:
            if self._released:
                return
            self._released = True
        _ACTIVE.discard(self)
        self.stack.release(self.registration, grace=grace, keep=keep)


_ACTIVE: set[Lease] = set()
_HOOKS: list[bool] = []  # non-empty once the exit hooks are installed


def _release_all() -> None:
    for active in list(_ACTIVE):
        with contextlib.suppress(Exception):
            active.release()


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through `with shared_stack()`; atexit does the rest


def _install_exit_hooks() -> None:
    """Release leases at exit and on SIGTERM (SIGINT already raises KeyboardInterrupt)."""
    if _HOOKS:
        return
    _HOOKS.append(True)
    atexit.register(_release_all)
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)


@contextlib.contextmanager
def shared_stack(
    root: Path | str | None = None,
    services: Sequence[str] | None = None,
    keep: bool = False,
    ttl: float | None = None,
    *,
    progress: Progress | None = None,
) -> Iterator[StackHandle]:
    """Hold the shared stack for the ``with`` block; yields its :class:`StackHandle`.

    ``services=None`` starts every service; otherwise those named and what they
    depend on. ``keep`` keeps the stack up after the last holder leaves (until
    ``envkit down``), ``ttl`` keeps it up that many seconds; ENVKIT_KEEP and
    ENVKIT_TTL set them when not passed.
    """
    held = acquire(root, services, keep, ttl, progress=progress)
    try:
        yield held.handle
    finally:
        held.release()


def acquire(
    root: Path | str | None = None,
    services: Sequence[str] | None = None,
    keep: bool = False,
    ttl: float | None = None,
    *,
    progress: Progress | None = None,
) -> Lease:
    """Take a lease on the shared stack (starting what is needed); release it with ``.release()``."""
    if not keep and ttl is None:
        keep = env_flag("ENVKIT_KEEP")
        ttl = env_seconds("ENVKIT_TTL", None)
    if ttl is not None and ttl < 0:
        raise ConfigError("arguments", "ttl", f"{ttl} is negative", "pass a number of seconds >= 0")
    config = config_mod.load(None if root is None else Path(root))
    daemon = runtime.Daemon()
    stack = Stack(config, daemon, progress or Silent())
    return stack.acquire(services, keep=keep, ttl=ttl)


class Stack:
    """The shared stack of one checkout: its config, state directory, store and reaper."""

    def __init__(self, config: StackConfig, daemon: runtime.Daemon, progress: Progress | None = None) -> None:
        self.config = config
        self.daemon = daemon
        self.progress = progress or Silent()
        self.id = stack_id(config)
        self.state_dir = config.state_dir
        self.store = Store(self.state_dir, self.id, daemon)
        self.grace = env_seconds("ENVKIT_GRACE", DEFAULT_GRACE) or 0.0
        self.lock_timeout = env_seconds("ENVKIT_LOCK_TIMEOUT", lease.DEFAULT_LOCK_TIMEOUT) or 0.0
        self._inputs: dict[str, tuple[str, str, str]] = {}  # service -> (image ref, inputs, image summary)

    # -- acquire --------------------------------------------------------------------------------

    def wanted(self, services: Sequence[str] | None) -> list[str]:
        """The services to start, dependencies first: all of them, or ``services`` and their depends_on."""
        if services is None:
            return self.config.service_order()
        for name in services:
            if name not in self.config.services:
                raise ConfigError(
                    self.config.file,
                    f"services.{name}",
                    "no such service (this stack has: " + (", ".join(self.config.services) or "none") + ")",
                    "ask for a service declared under [services]",
                )
        return self.config.service_order(list(services))

    def acquire(
        self,
        services: Sequence[str] | None,
        *,
        keep: bool = False,
        ttl: float | None = None,
        session: lease.Holder | None = None,
        build: bool = True,
    ) -> Lease:
        """Hold the stack, starting what ``services`` need; see :func:`acquire`.

        ``session`` is a session pin (:func:`envkit.lease.session_holder`) to
        register along with this holder unless it already is: the stack is then
        held for as long as that process lives, or until :meth:`end_session`.
        ``build=False`` fails with ImageMissing instead of building an image.
        """
        wanted = self.wanted(services)
        self._inputs = self._service_inputs(wanted, build=build)
        holder = lease.new_holder("process", services=tuple(wanted), keep=keep, ttl=ttl)
        with self._locked():
            state = self._prepare(wanted, holder.id)
            state.hold_keep = state.hold_keep or keep
            if ttl is not None:
                state.hold_ttl = max(ttl, state.hold_ttl or 0.0)
            if session is not None and not lease.holder_alive(self.state_dir, session.id):
                lease.register(self.state_dir, session)
            registration = lease.register(self.state_dir, holder)
            try:
                state.idle_since = state.idle_until = None
                state.idle_keep = False
                self.store.save(state)
                self._ensure_reaper()
            except BaseException:
                registration.drop()
                raise
        _install_exit_hooks()
        try:
            self._bring_up(wanted, holder.id)
            held = Lease(self, registration, _handle(self.id, self.store.read()))
        except BaseException:
            self.release(registration)
            raise
        return held

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return lease.state_lock(self.state_dir, self.lock_timeout)

    def _load(self) -> StackState | None:
        return self.store.load(self.config.name, str(self.config.root))

    def _prepare(self, wanted: list[str], me: str) -> StackState:
        """Under the lock: bring the state in line with Docker and claim what must be started."""
        state = self._load()
        live, _ = lease.prune(self.state_dir)
        if state is not None:
            self._sync(state, live)
            changes = self._changes(state, wanted)
            if changes:
                if live:
                    raise StackConflict(self.id, changes, [h.describe() for h in live])
                self.progress.note("stack", "restarting: " + "; ".join(changes))
                self.store.teardown()
                state = None
        if state is None:
            state = StackState(stack=self.id, project=self.config.name, root=str(self.config.root))
        for name in wanted:
            current = state.services.get(name)
            if current is None or current.status == "failed":
                image, inputs, _ = self._inputs[name]
                state.services[name] = ServiceState(inputs=inputs, image=image, status="starting", owner=me)
            elif current.status == "starting" and current.owner is None:
                current.owner = me  # recovered from labels, or its starter died: check it again
        if any(s.status == "starting" and s.owner == me for s in state.services.values()):
            self._ensure_network(state)
        return state

    def _sync(self, state: StackState, live: list[lease.Holder]) -> None:
        """Forget services whose containers died, vanished or turned unhealthy; remove strays."""
        live_ids = {h.id for h in live}
        containers = {str(c["Id"]): c for c in self.store.containers()}
        stray = []
        for name, svc in list(state.services.items()):
            starting = svc.status == "starting" and svc.owner in live_ids
            c = containers.get(svc.container or "")
            if starting:
                continue
            if svc.status == "starting" and svc.owner is not None:
                svc.owner = None  # its starter died: the next holder to need it takes over
            # Docker's own health check says unhealthy: restart it, unless others hold the stack.
            unhealthy = c is not None and "(unhealthy)" in str(c.get("Status", "")) and not live
            if c is None or c.get("State") != "running" or unhealthy:
                if svc.status == "healthy":
                    log.warning(
                        "envkit: service %r of stack %s is %s; it will be started again",
                        name,
                        self.id,
                        "unhealthy" if unhealthy else "stopped",
                    )
                if c is not None:
                    stray.append(str(c["Id"]))
                if svc.status != "failed":
                    del state.services[name]
        known = {svc.container for svc in state.services.values()}
        for cid, c in containers.items():
            labels = c.get("Labels") or {}
            owner = state.services.get(labels.get(runtime.LABEL_SERVICE, ""))
            if cid in known or (owner is not None and owner.status == "starting" and owner.owner in live_ids):
                continue
            stray.append(cid)
        self.store.remove_containers(sorted(set(stray)))

    def _changes(self, state: StackState, wanted: list[str]) -> list[str]:
        changes = []
        for name in wanted:
            svc = state.services.get(name)
            if svc is None or svc.status == "failed":
                continue
            _, inputs, summary = self._inputs[name]
            if svc.inputs != inputs:
                changes.append(f"service {name!r} changed ({summary}; running: {svc.image})")
        return changes

    def _ensure_network(self, state: StackState) -> None:
        from docker.errors import APIError

        existing = [n for n in self.daemon.networks(self.store.label) if n.get("Name") == self.id]
        if existing:
            state.network = self.id
            return
        labels = {runtime.LABEL_STACK: self.id, runtime.LABEL_PROJECT: self.config.name}
        with runtime.daemon_errors():
            try:
                self.daemon.client.create_network(
                    self.id, driver="bridge", labels=labels, check_duplicate=True
                )
            except APIError as err:
                runtime.release(err)
                raise EnvkitError(
                    f"cannot create network {self.id!r}: {err.explanation or err}\n"
                    "  fix: a network of that name without envkit's labels exists; remove it "
                    f"(`docker network rm {self.id}`) if it is not in use"
                ) from None
        state.network = self.id

    def _service_inputs(self, wanted: list[str], build: bool = True) -> dict[str, tuple[str, str, str]]:
        """Ensure every wanted service's image (built if needed) and hash each service's inputs."""
        services = [self.config.services[n] for n in wanted]
        stack_images = sorted({s.image for s in services if s.image in self.config.images})
        tags = {}
        if stack_images:
            for result in build_mod.ensure(
                self.config, self.daemon, names=stack_images, progress=self.progress, build=build
            ):
                tags[result.image] = result.tag
        out = {}
        for spec in services:
            if spec.image in tags:
                ref = identity = tags[spec.image]
            else:
                ref = spec.image
                identity = build_mod.base_identity(
                    self.daemon, f"service {spec.name}", ref, self.config.pull, self.progress
                )
            out[spec.name] = (ref, _inputs_hash(spec, identity), f"image {ref}")
        return out

    # -- starting services --------------------------------------------------------------------

    def _bring_up(self, wanted: list[str], me: str) -> None:
        for layer in self._layers(wanted):
            if len(layer) == 1:
                self._settle(layer[0], me)
                continue
            with ThreadPoolExecutor(max_workers=len(layer)) as pool:
                futures = [pool.submit(self._settle, name, me) for name in layer]
                errors = [f.exception() for f in futures]
            for err in errors:
                if err is not None:
                    raise err

    def _layers(self, wanted: list[str]) -> list[list[str]]:
        depth: dict[str, int] = {}
        for name in wanted:  # dependencies come first in `wanted`
            deps = self.config.services[name].depends_on
            depth[name] = 1 + max((depth[d] for d in deps), default=-1)
        layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for name in wanted:
            layers[depth[name]].append(name)
        return layers

    def _settle(self, name: str, me: str) -> None:
        """Return once ``name`` is healthy: start it if it is ours to start, else wait for its starter."""
        spec = self.config.services[name]
        started = time.monotonic()
        deadline = started + spec.start_timeout + _WAIT_SLACK
        noted = False
        while True:
            state = self.store.read()
            svc = state.services.get(name) if state else None
            if svc is None:
                raise StackStopped(self.id)
            if svc.status == "healthy":
                return
            if svc.status == "failed":
                if svc.error:
                    raise ServiceUnhealthy(**svc.error)
                check = spec.healthcheck.describe()
                raise ServiceUnhealthy(name, check, 0.0, "another process failed to start it")
            if svc.owner == me:
                self._start(name, me)
                return
            if svc.owner is None or not lease.holder_alive(self.state_dir, svc.owner):
                self._take_over(name, svc.owner, me)
                continue
            if not noted:
                self.progress.note(name, "waiting for another process that is starting it")
                noted = True
            if time.monotonic() > deadline:
                raise ServiceUnhealthy(
                    name,
                    spec.healthcheck.describe(),
                    time.monotonic() - started,
                    "another process has been starting it for too long",
                    self._logs(svc.container),
                )
            time.sleep(_POLL)

    def _take_over(self, name: str, previous: str | None, me: str) -> None:
        with self._locked():
            state = self.store.read()
            svc = state.services.get(name) if state else None
            if state is None or svc is None:
                raise StackStopped(self.id)
            if svc.status == "starting" and svc.owner == previous:
                svc.owner = me
                self.store.save(state)

    def _update(self, name: str, me: str, **changes: Any) -> None:
        """Record a change to a service this process is starting (under the lock)."""
        with self._locked():
            state = self.store.read()
            svc = state.services.get(name) if state else None
            if state is None or svc is None or svc.owner != me:
                raise StackStopped(self.id)
            for key, value in changes.items():
                setattr(svc, key, value)
            svc.since = time.time()
            self.store.save(state)

    def _start(self, name: str, me: str) -> None:
        spec = self.config.services[name]
        ref, inputs, _ = self._inputs[name]
        started = time.monotonic()
        self.progress.note(name, f"starting ({ref})")
        cid = self._container(spec, ref, inputs)
        self._update(name, me, container=cid)
        try:
            ports = self._wait_healthy(spec, cid, started)
        except ServiceUnhealthy as err:
            self.progress.note(name, f"unhealthy: {err.reason}")
            with contextlib.suppress(EnvkitError):
                self.store.remove_containers([cid])
            error = {
                "service": err.service,
                "check": err.check,
                "seconds": err.seconds,
                "reason": err.reason,
                "logs": err.logs,
            }
            with contextlib.suppress(StackStopped):
                self._update(name, me, status="failed", error=error, owner=None)
            raise
        self._update(name, me, status="healthy", ports=ports, owner=None)
        self.progress.note(name, f"healthy in {time.monotonic() - started:.1f}s")

    def _container(self, spec: ServiceSpec, ref: str, inputs: str) -> str:
        """A running container for the service: one left by a starter that died, or a new one."""
        from docker.errors import APIError

        existing = self.store.containers(spec.name)
        for c in existing:
            labels = c.get("Labels") or {}
            if c.get("State") == "running" and labels.get(runtime.LABEL_INPUTS) == inputs:
                return str(c["Id"])
        self.store.remove_containers([str(c["Id"]) for c in existing])
        client = self.daemon.client
        labels = {
            runtime.LABEL_STACK: self.id,
            runtime.LABEL_PROJECT: self.config.name,
            runtime.LABEL_SERVICE: spec.name,
            runtime.LABEL_INPUTS: inputs,
            runtime.LABEL_ROOT: str(self.config.root),
        }
        with runtime.daemon_errors():
            host_config = client.create_host_config(
                port_bindings={port: (HOST,) for port in spec.ports}, network_mode=self.id
            )
            networking = client.create_networking_config(
                {self.id: client.create_endpoint_config(aliases=[spec.name])}  # type: ignore[arg-type]
            )
            try:
                created = client.create_container(
                    ref,
                    command=list(spec.command) if spec.command else None,
                    name=f"{self.id}-{spec.name}",
                    environment=dict(spec.environment),
                    labels=labels,
                    ports=list(spec.ports),
                    host_config=host_config,
                    networking_config=networking,
                    detach=True,
                )
            except APIError as err:
                runtime.release(err)
                raise EnvkitError(
                    f"cannot create the container of service {spec.name!r}: {err.explanation or err}\n"
                    f"  fix: if a container named {self.id}-{spec.name} exists without envkit's labels, "
                    "remove it; otherwise check the service's settings"
                ) from None
            cid = str(created["Id"])
            try:
                client.start(cid)
            except APIError as err:
                runtime.release(err)
                self.store.remove_containers([cid])
                raise ServiceUnhealthy(
                    spec.name,
                    spec.healthcheck.describe(),
                    0.0,
                    f"its container did not start: {err.explanation or err}",
                ) from None
        return cid

    def _wait_healthy(self, spec: ServiceSpec, cid: str, started: float) -> dict[str, int]:
        client = self.daemon.client
        deadline = started + spec.start_timeout
        why = "no check has run yet"
        while True:
            with runtime.daemon_errors():
                info = client.inspect_container(cid)
            state = info.get("State") or {}
            if not state.get("Running"):
                raise ServiceUnhealthy(
                    spec.name,
                    spec.healthcheck.describe(),
                    time.monotonic() - started,
                    f"its container stopped (exit code {state.get('ExitCode')}"
                    + (f", {state['Error']}" if state.get("Error") else "")
                    + ")",
                    self._logs(cid),
                )
            ports = inspect_ports(info)
            ok, why = self._probe(spec, cid, info, ports, deadline)
            if ok:
                return ports
            if time.monotonic() >= deadline:
                raise ServiceUnhealthy(
                    spec.name,
                    spec.healthcheck.describe(),
                    time.monotonic() - started,
                    f"not healthy within its start_timeout of {spec.start_timeout:g}s (last check: {why})",
                    self._logs(cid),
                )
            time.sleep(_PROBE_INTERVAL)

    def _probe(
        self, spec: ServiceSpec, cid: str, info: dict[str, Any], ports: dict[str, int], deadline: float
    ) -> tuple[bool, str]:
        check = spec.healthcheck
        if check.kind == "image":
            health = (info.get("State") or {}).get("Health")
            if not health:
                return True, "running"
            logs = health.get("Log") or []
            last = (logs[-1].get("Output") or "").strip() if logs else ""
            return health.get("Status") == "healthy", f"Docker health {health.get('Status')}" + (
                f": {last}" if last else ""
            )
        if check.kind == "cmd":
            return self._exec_probe(cid, check.cmd, max(1.0, min(10.0, deadline - time.monotonic())))
        host_port = ports.get(str(check.port))
        if host_port is None:
            return False, f"port {check.port} is not published yet"
        if check.kind == "http":
            return _http_probe(host_port, check.path)
        return _tcp_probe(host_port)

    def _exec_probe(self, cid: str, cmd: tuple[str, ...], timeout: float) -> tuple[bool, str]:
        from docker.errors import APIError

        client = self.daemon.client
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                exec_id = client.exec_create(cid, list(cmd), stdout=True, stderr=True)["Id"]
                output = client.exec_start(exec_id)
                result["code"] = client.exec_inspect(exec_id).get("ExitCode")
                result["output"] = (
                    output.decode(errors="replace").strip() if isinstance(output, bytes) else ""
                )
            except APIError as err:
                runtime.release(err)
                result["error"] = str(err.explanation or err)
            except Exception as err:
                result["error"] = str(err)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            return False, f"the command did not finish within {timeout:.0f}s"
        if "error" in result:
            return False, result["error"]
        code = result.get("code")
        tail = (result.get("output") or "").splitlines()[-1:] or [""]
        return code == 0, f"exit code {code}" + (f": {tail[0]}" if tail[0] else "")

    def _logs(self, cid: str | None, lines: int = 50) -> list[str]:
        if not cid:
            return []
        try:
            with runtime.daemon_errors():
                raw = self.daemon.client.logs(cid, stdout=True, stderr=True, tail=lines)
        except EnvkitError:
            return []
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return text.splitlines()[-lines:]

    # -- the reaper ---------------------------------------------------------------------------

    def _ensure_reaper(self) -> None:
        """Start the detached reaper unless one watches this stack. Under the lock."""
        from envkit import reaper

        if reaper.running(self.state_dir):
            return
        try:
            reaper.spawn(self.state_dir, self.id)
        except OSError as err:
            raise StateError(self.state_dir / reaper.LOG_FILE, f"cannot start the reaper: {err}") from None

    # -- release, down, status ------------------------------------------------------------------

    def release(
        self, registration: lease.Registration, *, grace: float | None = None, keep: bool = False
    ) -> None:
        """Drop a holder; the last one out starts the grace (or TTL) after which the stack goes."""
        try:
            with self._locked():
                registration.drop()
                state = self._load()
                live, removed = lease.prune(self.state_dir)
                if state is None or live:
                    return
                leaver = dataclasses.replace(registration.holder, keep=registration.holder.keep or keep)
                wait = self.grace if grace is None else grace
                if self.store.go_idle(state, [leaver, *removed], wait) is None:
                    self._ensure_reaper()
        finally:
            registration.drop()

    def end_session(self, holder_id: str, *, keep: bool = False) -> tuple[str, list[lease.Holder]]:
        """Remove a session pin at the end of its session: the stack goes now unless others hold
        it, or ``keep`` (or a keep or TTL asked for while it ran) keeps it up.

        Returns what happened (``"absent"``, ``"held"``, ``"stopped"`` or ``"kept"``) and the
        holders still holding.
        """
        path = self.state_dir / lease.HOLDERS / f"{holder_id}.json"
        if not path.exists():
            return "absent", []
        with self._locked():
            found = [h for h, p in lease.read_holders(self.state_dir) if h.id == holder_id]
            path.unlink(missing_ok=True)
            state = self._load()
            live, removed = lease.prune(self.state_dir)
            if not found or state is None:
                return "absent", live
            if live:
                return "held", live
            leaver = dataclasses.replace(found[0], keep=found[0].keep or keep)
            if self.store.go_idle(state, [leaver, *removed], 0.0) is None:
                self._ensure_reaper()
                return "kept", []
            return "stopped", []

    def service_logs(self, name: str, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of a running service's log (empty when it has no container)."""
        containers = [c for c in self.store.containers(name) if c.get("State") == "running"]
        return self._logs(str(containers[0]["Id"]), lines) if containers else []

    def pin(self, ttl: float | None) -> lease.Holder:
        """Add an ``envkit up`` pin: holds the stack until ``envkit down`` (or for ``ttl`` seconds)."""
        holder = lease.new_holder("pin", expires=None if ttl is None else time.time() + ttl)
        with self._locked():
            lease.register(self.state_dir, holder)
        return holder

    def down(self, force: bool = False) -> tuple[int, list[lease.Holder]]:
        """Remove ``envkit up`` pins, then stop the stack unless other holders remain (or ``force``).

        Returns (containers removed, holders still holding).
        """
        with self._locked():
            lease.remove_pins(self.state_dir)
            live, _ = lease.prune(self.state_dir)
            if live and not force:
                return 0, live
            if force:
                lease.remove_all(self.state_dir)
            removed = self.store.teardown()
            return removed, live

    def status(self) -> dict[str, Any]:
        """What runs, who holds it and for how long it stays: a JSON-ready dict (changes nothing)."""
        now = time.time()
        state = self.store.read()
        containers = {str(c["Id"]): c for c in self.store.containers()}
        services = {}
        for name in sorted(set(self.config.services) | set(state.services if state else ())):
            svc = state.services.get(name) if state else None
            c = containers.get(svc.container or "") if svc else None
            services[name] = {
                "status": svc.status if svc else "stopped",
                "container": (c.get("Status") if c else None),
                "image": svc.image if svc else None,
                "inputs": svc.inputs if svc else None,
                "endpoints": {p: f"{HOST}:{hp}" for p, hp in sorted(svc.ports.items())} if svc else {},
                "error": svc.error.get("reason") if svc and svc.error else None,
            }
        holders = []
        for holder, path in lease.read_holders(self.state_dir):
            holders.append(
                {
                    "id": holder.id,
                    "kind": holder.kind,
                    "pid": holder.pid,
                    "host": holder.host,
                    "command": holder.command,
                    "age": round(now - holder.since, 1),
                    "alive": lease.is_alive(holder, path, now),
                    "expires_in": None if holder.expires is None else round(holder.expires - now, 1),
                }
            )
        idle: dict[str, Any] | None = None
        if state and state.idle_since is not None:
            idle = {
                "since": round(now - state.idle_since, 1),
                "keep": state.idle_keep,
                "ttl_left": None if state.idle_until is None else max(0.0, round(state.idle_until - now, 1)),
            }
        from envkit import reaper

        return {
            "stack": self.id,
            "project": self.config.name,
            "state_dir": str(self.state_dir),
            "running": bool(containers),
            "network": state.network if state else None,
            "services": services,
            "holders": holders,
            "idle": idle,
            "reaper": reaper.running(self.state_dir),
        }


def _inputs_hash(spec: ServiceSpec, image_identity: str) -> str:
    data = {
        "schema": INPUTS_SCHEMA,
        "image": image_identity,
        "ports": sorted(spec.ports),
        "environment": dict(sorted(spec.environment.items())),
        "command": list(spec.command) if spec.command is not None else None,
        "healthcheck": [
            spec.healthcheck.kind,
            list(spec.healthcheck.cmd),
            spec.healthcheck.path,
            spec.healthcheck.port,
        ],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def _http_probe(port: int, path: str) -> tuple[bool, str]:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as err:
        return False, f"GET {path}: {type(err).__name__}: {err}".rstrip(": ")
    finally:
        conn.close()
    return 200 <= status < 400, f"GET {path} answered {status}"


def _tcp_probe(port: int) -> tuple[bool, str]:
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
