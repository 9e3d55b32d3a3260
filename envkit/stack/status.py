"""``envkit status``: what runs, who holds it, and for how long it stays (changes nothing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from envkit.config.model import StackConfig
from envkit.docker.engine import Container, Daemon
from envkit.errors import StateCorrupt
from envkit.fsutil import check_state_dir
from envkit.remote import ServiceHost, network_address
from envkit.stack import lease, reaper
from envkit.stack.objects import StackObjects, refuse_another
from envkit.stack.state import StateFile


def status(
    config: StackConfig,
    daemon: Daemon,
    reach: ServiceHost,
    *,
    revive: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """The stack's status as a JSON-ready dict. ``revive`` starts a reaper for a stack that is
    up with none watching it (a killed reaper), and says whether it did. The service host and
    publish address are those the stack's last acquire recorded, else ``reach``'s; how this
    process reaches the services (``reach``: ports or network, and its container) is its own,
    and so are the endpoints shown: over the network, each container's name at the container port.

    A state directory that holds another stack, which runs, is :class:`StateDirInUse`: its
    holders and services are not this stack's to show."""
    now = time.time()
    problem = None
    check_state_dir(config.state_dir)  # one others may write to is not even read
    try:
        state = StateFile(config.state_dir).read()
    except StateCorrupt as err:
        state, problem = None, str(err).splitlines()[0]
    found = lease.read_holders(config.state_dir)
    if state is not None and state.stack != config.id:  # the directory holds another stack
        refuse_another(
            config.state_dir, state, config.id, any(lease.is_alive(h, p) for h, p in found), daemon
        )
        where = f" (the project at {state.root})" if state.root else ""
        problem = f"{config.state_dir} holds stack {state.stack!r}{where}, which no longer runs, not this one"
        state, found = None, []  # what is left of it is not this stack's
    reached = _reached(reach, state.host if state else None, state.publish if state else None)
    host = f"[{reached['host']}]" if ":" in reached["host"] else reached["host"]
    objects = StackObjects(daemon, config.id)
    containers = {c.id: c for c in objects.containers()}
    wardens = objects.wardens()  # the stack's warden (envkit.stack.warden): not a service
    services = {}
    for name in sorted(set(config.services) | set(state.services if state else ())):
        svc = state.services.get(name) if state else None
        c = containers.get(svc.container or "") if svc else None
        services[name] = {
            "status": _now(svc.status, c, state.network if state else None) if svc else "stopped",
            "container": c.status if c else None,
            "image": svc.image if svc else None,
            "inputs": svc.inputs if svc else None,
            "endpoints": _endpoints(reach, config.id, name, host, svc.ports) if svc else {},
            "error": svc.error.get("reason") if svc and svc.error else None,
        }
    holders = []
    for holder, path in found:
        holders.append(
            {
                "id": holder.id,
                "kind": holder.kind,
                "pid": holder.pid,
                "host": holder.host,
                "command": holder.command,
                "services": list(holder.services),
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
    return {
        "stack": config.id,
        "project": config.name,
        "state_dir": str(config.state_dir),
        "engine": {**daemon.endpoint.to_json(), **daemon.engine.to_json()},
        "running": any(c.running for c in containers.values()),  # not a stack of exited containers
        "up_for": round(now - state.created, 1) if state else None,
        "network": state.network if state else None,
        **reached,  # host, host_source, publish, publish_source
        **reach.reach_json(),  # reach, reach_source, client_container
        # containers without the stack's labels on its network: clients that joined it (envkit.reach)
        "network_clients": (
            _clients(daemon, objects, set(containers) | {w.id for w in wardens})
            if state and state.network
            else []
        ),
        # the warden on the engine that removes the stack if this machine's reaper is gone
        "warden": (
            {"endpoint": state.warden if state else None, "container": wardens[0].status} if wardens else None
        ),
        "services": services,
        "holders": holders,
        "idle": idle,
        "lock": lease.lock_holder(config.state_dir),  # who holds the state lock, or None
        "reaper_started": bool(containers) and revive is not None and revive(),  # before "reaper"
        "reaper": reaper.running(config.state_dir),
        "state_error": problem,
    }


def _reached(reach: ServiceHost, host: str | None, publish: str | None) -> dict[str, str]:
    """The service host and publish address to show: what the stack recorded, else ``reach``."""
    out = reach.to_json()
    recorded = "recorded by the acquire that started or last joined the stack"
    if host is not None and host != reach.host:
        out.update(host=host, host_source=recorded)
    if publish is not None and publish != reach.publish:
        out.update(publish=publish, publish_source=recorded)
    return out


def _endpoints(
    reach: ServiceHost, stack_id: str, service: str, host: str, ports: dict[str, int]
) -> dict[str, str]:
    """Container port -> where this process reaches it: the published port at the service host,
    or, over the stack's network, the container's name at the container port."""
    if reach.network:
        return {p: f"{network_address(stack_id, service)}:{p}" for p in sorted(ports)}
    return {p: f"{host}:{hp}" for p, hp in sorted(ports.items())}


def _clients(daemon: Daemon, objects: StackObjects, own: set[str]) -> list[str]:
    """The names of the containers on the stack's network that are not the stack's."""
    members: dict[str, str] = {}
    for net in objects.networks():
        members.update(daemon.network_members(net.id))
    return sorted(name or cid[:12] for cid, name in members.items() if cid not in own)


def _now(recorded: str, container: Container | None, network: str | None) -> str:
    """A service's status as Docker has it now: what was recorded healthy may have gone since."""
    if recorded != "healthy":
        return recorded
    if container is None:
        return "gone"
    if not container.running:
        return "exited"
    if container.unhealthy:
        return "unhealthy"
    if not container.attached(network):
        return "disconnected"
    return "healthy"
