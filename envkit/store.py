"""A stack's state on disk, and what envkit does to its containers and network.

The state file (``state.json`` in the stack's state directory) is a cache of
what Docker knows: every container and network of a stack carries the label
``envkit.stack=<stack id>``, so a missing or corrupt state file is rebuilt
from those labels (with a warning), and a teardown removes exactly what
carries this stack's id, nothing else.

This module knows nothing of the stack file, so the detached reaper can use
it with only a state directory and a stack id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envkit import lease, runtime
from envkit.fsutil import atomic_write_text

log = logging.getLogger("envkit")

SCHEMA = 1
STATE_FILE = "state.json"


@dataclass
class ServiceState:
    """One service of a running stack."""

    inputs: str  # hash of its config and image identity (the container's envkit.inputs label)
    image: str
    status: str  # "starting", "healthy" or "failed"
    owner: str | None = None  # id of the holder starting it (None: nobody yet)
    container: str | None = None
    ports: dict[str, int] = field(default_factory=dict)  # container port -> host port (127.0.0.1)
    error: dict[str, Any] | None = None  # ServiceUnhealthy's fields, when failed
    since: float = field(default_factory=time.time)


@dataclass
class StackState:
    stack: str
    project: str
    root: str
    network: str | None = None
    services: dict[str, ServiceState] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    # Set when the last holder left: the stack stays up until idle_until (or forever with idle_keep).
    idle_since: float | None = None
    idle_until: float | None = None
    idle_keep: bool = False
    # The longest stay asked for by any holder since the stack started: keep (until
    # `envkit down`) or a TTL. It applies whoever leaves last.
    hold_keep: bool = False
    hold_ttl: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = SCHEMA
        return data

    @classmethod
    def from_json(cls, data: Any) -> StackState:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError("not an envkit state file of this version")
        data = dict(data)
        data.pop("schema")
        services = {name: ServiceState(**svc) for name, svc in data.pop("services").items()}
        return cls(**data, services=services)


class Store:
    """The state file and the Docker objects of one stack id."""

    def __init__(self, state_dir: Path, stack_id: str, daemon: runtime.Daemon) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE
        self.stack_id = stack_id
        self.daemon = daemon

    @property
    def label(self) -> str:
        return f"{runtime.LABEL_STACK}={self.stack_id}"

    def read(self) -> StackState | None:
        """The state as last written, or None when it is missing or unreadable (no repair)."""
        try:
            return StackState.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def load(self, project: str, root: str) -> StackState | None:
        """The state, rebuilt from container labels when the file is missing or corrupt.

        Returns None when there is no state and no container of this stack runs.
        Call it under the state lock.
        """
        problem = None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = None
        if text is not None:
            try:
                state = StackState.from_json(json.loads(text))
            except (ValueError, TypeError, KeyError, AttributeError) as err:
                problem = f"it is corrupt ({type(err).__name__}: {err})"
            else:
                if state.stack == self.stack_id:
                    return state
                problem = f"it describes stack {state.stack!r}, not {self.stack_id!r}"
        containers = self.containers()
        networks = self.daemon.networks(self.label)
        if not containers and not networks:
            if problem:
                log.warning(
                    "envkit: ignored the state file %s: %s; no container of the stack runs",
                    self.path,
                    problem,
                )
                self.path.unlink(missing_ok=True)
            return None
        state = self.recover(project, root, containers, networks)
        log.warning(
            "envkit: the state file %s %s; rebuilt it from the labels of %d container(s) of stack %s",
            self.path,
            problem or "was missing",
            len(containers),
            self.stack_id,
        )
        return state

    def recover(
        self, project: str, root: str, containers: list[dict[str, Any]], networks: list[dict[str, Any]]
    ) -> StackState:
        """A state describing what Docker runs for this stack. Its services are re-checked before use."""
        state = StackState(stack=self.stack_id, project=project, root=root)
        if networks:
            state.network = str(networks[0]["Name"])
        for c in containers:
            labels = c.get("Labels") or {}
            service = labels.get(runtime.LABEL_SERVICE)
            if not service or service in state.services or c.get("State") != "running":
                continue
            state.services[service] = ServiceState(
                inputs=labels.get(runtime.LABEL_INPUTS, ""),
                image=str(c.get("Image", "")),
                status="starting",  # owner None: the next holder to need it checks its health
                container=str(c["Id"]),
                ports=_list_ports(c),
            )
        return state

    def save(self, state: StackState) -> None:
        """Write the state (under the lock); a joiner that changed nothing writes nothing."""
        text = json.dumps(state.to_json(), indent=1, sort_keys=True)
        with contextlib.suppress(OSError):
            if self.path.read_text(encoding="utf-8") == text:
                return
        atomic_write_text(self.path, text)

    def go_idle(self, state: StackState, leavers: list[lease.Holder], grace: float) -> int | None:
        """No holder is left (call under the lock): leave the stack up for a while, or tear it down.

        It stays until ``envkit down`` if any holder since it started asked to
        keep it, for the longest TTL any of them asked for, or else for
        ``grace`` seconds; a stack
        with a failed service (or a grace of 0) goes at once. Returns the
        number of containers removed, or None when the stack stays up.
        """
        now = time.time()
        keep = state.hold_keep or any(h.keep for h in leavers)
        ttls = [h.ttl for h in leavers if h.ttl is not None]
        if state.hold_ttl is not None:
            ttls.append(state.hold_ttl)
        failed = any(s.status == "failed" for s in state.services.values())
        if failed or (not keep and not ttls and grace == 0):
            return self.teardown()
        state.idle_since = now
        state.idle_keep = keep
        state.idle_until = None if keep else now + (max(ttls) if ttls else grace)
        self.save(state)
        return None

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """This stack's containers (all states), or one service's."""
        found = self.daemon.containers(self.label)
        if service is not None:
            found = [c for c in found if (c.get("Labels") or {}).get(runtime.LABEL_SERVICE) == service]
        return [c for c in found if (c.get("Labels") or {}).get(runtime.LABEL_STACK) == self.stack_id]

    def remove_containers(self, ids: list[str]) -> None:
        """Remove these containers (each must be this stack's), in parallel."""
        if not ids:
            return
        from docker.errors import NotFound

        client = self.daemon.client

        def remove(cid: str) -> None:
            try:
                client.remove_container(cid, force=True, v=True)
            except NotFound as err:
                runtime.release(err)

        with runtime.daemon_errors(), ThreadPoolExecutor(max_workers=min(8, len(ids))) as pool:
            list(pool.map(remove, ids))

    def teardown(self) -> int:
        """Remove every container and network of this stack, then the state file. Under the lock."""
        from docker.errors import APIError, NotFound

        containers = [str(c["Id"]) for c in self.containers()]
        self.remove_containers(containers)
        client = self.daemon.client
        with runtime.daemon_errors():
            for net in self.daemon.networks(self.label):
                if (net.get("Labels") or {}).get(runtime.LABEL_STACK) != self.stack_id:
                    continue
                for attempt in range(10):  # endpoints of just-removed containers linger briefly
                    try:
                        client.remove_network(net["Id"])
                        break
                    except NotFound as err:
                        runtime.release(err)
                        break
                    except APIError as err:
                        runtime.release(err)
                        if attempt == 9:
                            raise
                        time.sleep(0.2)
        self.path.unlink(missing_ok=True)
        return len(containers)


def _list_ports(container: dict[str, Any]) -> dict[str, int]:
    ports = {}
    for p in container.get("Ports") or []:
        if p.get("PublicPort") and p.get("IP") in ("127.0.0.1", None):
            ports[str(p["PrivatePort"])] = int(p["PublicPort"])
    return ports


def inspect_ports(info: dict[str, Any]) -> dict[str, int]:
    """Container port -> host port, from ``docker inspect`` of a started container."""
    ports = {}
    for key, bindings in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items():
        port, _, proto = key.partition("/")
        if proto != "tcp" or not bindings:
            continue
        for binding in bindings:
            with contextlib.suppress(KeyError, ValueError):
                ports[port] = int(binding["HostPort"])
                break
    return ports
