"""A stack's objects in Docker: its containers, network and volumes, found by the stack id's label.

Everything here is scoped to one stack id: a removal never reaches an object
without ``envkit.stack=<this id>``, so other checkouts' stacks, and anything
envkit did not create, are never touched. This knows nothing of the stack
file, so the detached reaper can use it with only a stack id. The one thing
done to a container without the stack's labels: a client's container that
joined the stack's network (envkit.reach) is disconnected from it before the
network goes, never stopped or removed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from envkit import faults
from envkit import settings as settings_mod
from envkit.docker import labels
from envkit.docker.engine import Container, ContainerSpec, Daemon, Network, Volume
from envkit.errors import DaemonError, EngineUnreachable, EnvkitError, ServiceUnhealthy, StateDirInUse
from envkit.stack.state import StackState, StateFile

LOG_LINES = 50  # of a service's log, in its ServiceUnhealthy


class StackObjects:
    """The containers and network of the stack ``stack_id``."""

    def __init__(self, daemon: Daemon, stack_id: str, *, fault: str | None = None) -> None:
        self.daemon = daemon
        self.stack_id = stack_id
        self.selector = labels.selector(labels.STACK, stack_id)
        self.fault = fault  # a fault test's phase (envkit.faults)

    def containers(self, service: str | None = None) -> list[Container]:
        """This stack's services' containers (all states), or one service's: not its warden."""
        found = [c for c in self._all() if labels.ROLE not in c.labels]
        if service is not None:
            found = [c for c in found if c.labels.get(labels.SERVICE) == service]
        return found

    def _all(self) -> list[Container]:
        listed = self.daemon.containers(self.selector)
        return [c for c in listed if c.labels.get(labels.STACK) == self.stack_id]

    def wardens(self) -> list[Container]:
        """The stack's warden's container (envkit.stack.warden): one, or none."""
        return [c for c in self._all() if labels.ROLE in c.labels]

    def networks(self) -> list[Network]:
        return [n for n in self.daemon.networks(self.selector) if n.labels.get(labels.STACK) == self.stack_id]

    def volumes(self) -> list[Volume]:
        return [v for v in self.daemon.volumes(self.selector) if v.labels.get(labels.STACK) == self.stack_id]

    def volume_name(self, volume: str) -> str:
        """The Docker name of the stack's volume ``volume``: one per stack id, like its network."""
        return f"{self.stack_id}_{volume}"

    def ensure_volumes(self, project: str, names: Sequence[str]) -> None:
        """The stack's named volumes, created where missing (labelled: removed with the stack)."""
        present = {v.name for v in self.volumes()}
        for name in names:
            docker_name = self.volume_name(name)
            if docker_name in present:
                continue
            try:
                self.daemon.create_volume(docker_name, {labels.STACK: self.stack_id, labels.PROJECT: project})
            except DaemonError as err:
                raise EnvkitError(f"cannot create volume {docker_name!r}: {err.detail}") from None
            if docker_name not in {v.name for v in self.volumes()}:  # one of that name was there
                raise EnvkitError(
                    f"cannot create volume {docker_name!r}: a volume of that name without envkit's "
                    f"labels exists\n  fix: remove it (`docker volume rm {docker_name}`) if it is not in use"
                )

    def ensure_network(self, project: str) -> str:
        """The stack's network (named after the stack id), created if it is missing."""
        if any(n.name == self.stack_id for n in self.networks()):
            return self.stack_id
        try:
            self.daemon.create_network(self.stack_id, {labels.STACK: self.stack_id, labels.PROJECT: project})
        except DaemonError as err:
            raise EnvkitError(
                f"cannot create network {self.stack_id!r}: {err.detail}\n"
                "  fix: a network of that name without envkit's labels exists; remove it "
                f"(`docker network rm {self.stack_id}`) if it is not in use"
            ) from None
        return self.stack_id

    def join(self, cid: str, name: str) -> None:
        """Attach a client's own container (``cid``, called ``name``) to the stack's network (one
        attached already stays), so that it reaches the services by their containers' names."""
        if cid in self.daemon.network_members(self.stack_id):
            return
        try:
            self.daemon.connect_network(self.stack_id, cid)
        except DaemonError as err:
            if cid in self.daemon.network_members(self.stack_id):
                return  # another process of this container attached it meanwhile
            raise EnvkitError(
                f"cannot attach the container {name}, where this process runs, to the stack's "
                f"network {self.stack_id}: {err.detail}\n"
                f"  fix: set {settings_mod.REACH}=ports to reach the services at their published ports"
            ) from None

    def _disconnect_clients(self, network: Network, removed: Sequence[str]) -> None:
        """Disconnect the containers on the network that are not this stack's (clients that
        joined it): a network with endpoints cannot be removed. Only disconnected, nothing else.
        ``removed``: the stack's containers just removed (their endpoints may linger a moment)."""
        own = {*removed, *(c.id for c in self.containers())}
        for cid in self.daemon.network_members(network.id):
            if cid not in own:
                self.daemon.disconnect_network(network.id, cid)

    def run(self, spec: ContainerSpec, *, service: str, check: str, inputs: str) -> str:
        """A running container for ``service``: one left by a starter that died, or a new one."""
        existing = self.containers(service)
        for c in existing:
            if c.running and c.labels.get(labels.INPUTS) == inputs:
                return c.id
        self.remove([c.id for c in existing])
        try:
            cid = self.daemon.create_container(spec)
        except DaemonError as err:
            raise EnvkitError(
                f"cannot create the container of service {service!r}: {err.detail}\n"
                f"  fix: if a container named {spec.name} exists without envkit's labels, "
                "remove it; otherwise check the service's settings"
            ) from None
        faults.reach(self.fault, "launch.created")
        try:
            self.daemon.start_container(cid)
        except DaemonError as err:
            self.remove([cid])
            raise ServiceUnhealthy(
                service, check, 0.0, f"its container did not start: {err.detail}"
            ) from None
        return cid

    def remove(self, ids: Sequence[str]) -> None:
        """Remove these containers (each must be this stack's), in parallel."""
        if not ids:
            return
        bound = self.daemon.current_bound()  # the caller's, under the lock: the helpers keep it

        def remove(cid: str) -> None:
            with self.daemon.bounded(bound) if bound is not None else contextlib.nullcontext():
                self.daemon.remove_container(cid)

        with ThreadPoolExecutor(max_workers=min(8, len(ids))) as pool:
            list(pool.map(remove, ids))

    def teardown(self) -> int:
        """Remove every container (its warden's too), the volumes and the network of this stack;
        the number of its services' containers removed."""
        found = self._all()
        containers = [c.id for c in found]
        self.remove(containers)
        faults.reach(self.fault, "teardown.containers")
        for volume in self.volumes():
            self.daemon.remove_volume(volume.name)
        for net in self.networks():
            for attempt in range(10):  # endpoints of just-removed containers linger briefly
                try:
                    self._disconnect_clients(net, containers)
                    self.daemon.remove_network(net.id)
                    break
                except DaemonError as err:
                    # an engine that does not answer: no retry
                    if isinstance(err, EngineUnreachable) or attempt == 9:
                        raise
                    time.sleep(0.2)
        return sum(1 for c in found if labels.ROLE not in c.labels)

    def stop(self, state_file: StateFile) -> int:
        """Tear the stack down: its containers, its network, then its state file."""
        removed = self.teardown()
        faults.reach(self.fault, "teardown.network")
        state_file.remove()
        return removed

    def logs(self, cid: str | None, lines: int = LOG_LINES) -> list[str]:
        """The last ``lines`` lines of a container's log (empty when it cannot be read)."""
        if not cid:
            return []
        try:
            return self.daemon.logs(cid, lines)
        except EnvkitError:
            return []


def refuse_another(
    state_dir: Path, state: StackState | None, stack_id: str, live: bool, daemon: Daemon
) -> None:
    """One state directory holds one stack: :class:`StateDirInUse` when ``state`` describes
    another stack than ``stack_id`` that still runs (``live`` holders, or containers of its
    own), so that nothing of it is touched."""
    if state is None or state.stack == stack_id:
        return
    if live or StackObjects(daemon, state.stack).containers():
        raise StateDirInUse(state_dir, state.stack, state.root, stack_id)
