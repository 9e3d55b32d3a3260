"""An in-memory Docker engine with the operations the shared stack uses, for unit tests.

It is a fake of envkit's own boundary (:class:`envkit.docker.engine.Daemon`), not of
Docker's API: it keeps containers and networks as plain data, publishes each container
port at a made-up host port, and lets a test break or observe any operation.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from envkit.docker import labels
from envkit.docker.engine import (
    Container,
    ContainerDetails,
    ContainerSpec,
    EngineInfo,
    ExecResult,
    Network,
    Volume,
)
from envkit.docker.transport import Endpoint
from envkit.errors import DaemonError


@dataclass
class FakeContainer:
    spec: ContainerSpec
    id: str
    running: bool = False
    status: str = "Created"
    ports: dict[str, int] = field(default_factory=dict)


class FakeDaemon:
    """Containers and networks in dicts; ``calls`` records every operation by name."""

    def __init__(self) -> None:
        self.endpoint = Endpoint("unix:///fake.sock", "a test")
        self.timeout = 60.0
        self.platform = "linux/amd64"
        self.engine = EngineInfo("docker", "0.0-fake", "1.41", "classic")  # what `status` names
        self.containers_by_id: dict[str, FakeContainer] = {}
        self.networks_by_id: dict[str, Network] = {}
        self.volumes_by_name: dict[str, Volume] = {}
        self.calls: list[str] = []
        self.bounds: list[tuple[str, float | None]] = []  # each operation, and the bound it ran under
        self._local = threading.local()
        self.on_start: Callable[[str], None] | None = None  # runs when a container starts
        self._ids = itertools.count(1)
        self._ports = itertools.count(40000)
        self.infos: dict[str, dict[str, Any]] = {}  # container_info's answers: other containers
        self.clients: dict[str, set[str]] = {}  # network id -> containers attached without its labels

    @contextlib.contextmanager
    def bounded(self, seconds: float) -> Iterator[None]:
        outer = getattr(self._local, "bound", None)
        self._local.bound = seconds
        try:
            yield
        finally:
            self._local.bound = outer

    def current_bound(self) -> float | None:
        bound: float | None = getattr(self._local, "bound", None)
        return bound

    def _record(self, name: str) -> None:
        self.calls.append(name)
        self.bounds.append((name, getattr(self._local, "bound", None)))

    # -- what the stack reads -----------------------------------------------------------------

    def containers(self, label: str) -> list[Container]:
        self._record("containers")
        key, _, value = label.partition("=")
        return [
            Container(
                id=c.id,
                name=c.spec.name,
                labels=dict(c.spec.labels),
                state="running" if c.running else "exited",
                status=c.status,
                image=c.spec.image,
                ports=dict(c.ports),
                networks=(c.spec.network,),
            )
            for c in self.containers_by_id.values()
            if c.spec.labels.get(key) == value
        ]

    def networks(self, label: str) -> list[Network]:
        self._record("networks")
        key, _, value = label.partition("=")
        return [n for n in self.networks_by_id.values() if n.labels.get(key) == value]

    def inspect_image(self, ref: str) -> dict[str, Any] | None:
        return {"Id": f"sha256:{ref}", "Config": {"Labels": {}}}

    def inspect_container(self, cid: str) -> ContainerDetails | None:
        c = self.containers_by_id.get(cid)
        if c is None:
            return None
        return ContainerDetails(
            id=cid,
            running=c.running,
            exit_code=None if c.running else 1,
            error="",
            health=None,
            health_output="",
            ports=dict(c.ports),
        )

    def logs(self, cid: str, tail: int) -> list[str]:
        return [f"log of {cid}"]

    def exec_run(self, cid: str, cmd: Any, *, timeout: float) -> ExecResult:
        return ExecResult(0, "")

    # -- what the stack changes ---------------------------------------------------------------

    def create_network(self, name: str, network_labels: dict[str, str]) -> str:
        self._record("create_network")
        nid = f"net{next(self._ids)}"
        self.networks_by_id[nid] = Network(nid, name, dict(network_labels))
        return nid

    def remove_network(self, network_id: str) -> None:
        self._record("remove_network")
        if self.clients.get(network_id):
            raise DaemonError(f"error while removing network: network {network_id} has active endpoints")
        self.networks_by_id.pop(network_id, None)

    def container_info(self, ref: str) -> dict[str, Any] | None:
        self._record("container_info")
        return next((info for cid, info in self.infos.items() if cid.startswith(ref)), None)

    def _network_id(self, network: str) -> str | None:
        return next((n.id for n in self.networks_by_id.values() if network in (n.id, n.name)), None)

    def network_members(self, network: str) -> dict[str, str]:
        nid = self._network_id(network)
        if nid is None:
            return {}
        own = {c.id: c.spec.name for c in self.containers_by_id.values() if c.spec.network == nid}
        own |= {c.id: c.spec.name for c in self.containers_by_id.values() if c.spec.network == network}
        return {**own, **{cid: cid for cid in self.clients.get(nid, ())}}

    def connect_network(self, network: str, container: str) -> None:
        self._record("connect_network")
        nid = self._network_id(network)
        if nid is None:
            raise DaemonError(f"network {network} not found", 404)
        self.clients.setdefault(nid, set()).add(container)

    def disconnect_network(self, network: str, container: str) -> None:
        self._record("disconnect_network")
        nid = self._network_id(network)
        self.clients.get(nid or "", set()).discard(container)

    def volumes(self, label: str) -> list[Volume]:
        self._record("volumes")
        key, _, value = label.partition("=")
        return [v for v in self.volumes_by_name.values() if v.labels.get(key) == value]

    def create_volume(self, name: str, volume_labels: dict[str, str]) -> str:
        self._record("create_volume")
        self.volumes_by_name.setdefault(name, Volume(name, dict(volume_labels)))
        return name

    def remove_volume(self, name: str) -> None:
        self._record("remove_volume")
        self.volumes_by_name.pop(name, None)

    def create_container(self, spec: ContainerSpec) -> str:
        self._record("create_container")
        cid = f"c{next(self._ids)}"
        self.containers_by_id[cid] = FakeContainer(spec, cid)
        return cid

    def start_container(self, cid: str) -> None:
        self._record("start_container")
        c = self.containers_by_id[cid]
        c.running, c.status = True, "Up 1 second"
        c.ports = {str(p): next(self._ports) for p in c.spec.ports}
        if self.on_start is not None:
            self.on_start(cid)

    def remove_container(self, cid: str) -> None:
        self._record("remove_container")
        self.containers_by_id.pop(cid, None)

    # -- helpers for tests --------------------------------------------------------------------

    def add(
        self, service: str, stack_id: str, *, running: bool = True, status: str = "Up", **extra: str
    ) -> str:
        """A container of ``service`` made behind envkit's back (or left by an earlier run)."""
        cid = f"c{next(self._ids)}"
        spec = ContainerSpec(
            name=f"{stack_id}-{service}",
            image="img",
            command=None,
            environment={},
            labels={labels.STACK: stack_id, labels.SERVICE: service, **extra},
            ports=(),
            network=stack_id,
            aliases=(service,),
        )
        self.containers_by_id[cid] = FakeContainer(spec, cid, running=running, status=status)
        return cid

    def running(self) -> dict[str, str]:
        """Service -> id of its running container."""
        return {c.spec.labels[labels.SERVICE]: c.id for c in self.containers_by_id.values() if c.running}

    def stop(self, cid: str) -> None:
        c = self.containers_by_id[cid]
        self.containers_by_id[cid] = replace(c, running=False, status="Exited (1)")
