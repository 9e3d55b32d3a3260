"""Where a stack's services are reached from this process: :class:`StackHandle`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from envkit.config.model import env_name
from envkit.errors import EndpointError
from envkit.remote import LOOPBACK, ServiceHost, network_address
from envkit.settings import PREFIX
from envkit.stack.state import StackState


@dataclass(frozen=True)
class StackHandle:
    """Where the stack's services are reached from this process: the published ports at the
    service host, or (``network``: this process's container joined the stack's network) each
    service's container name at the container port."""

    stack: str
    ports: Mapping[str, Mapping[int, int]]  # service -> container port -> host port
    host: str = LOOPBACK  # the service host (envkit.remote): where every published port is reached
    network: bool = False  # reached over the stack's network (envkit.reach)

    def endpoint(self, service: str, port: int) -> tuple[str, int]:
        """``(host, port)`` at which ``service``'s container port ``port`` is reached."""
        published = self.ports.get(service)
        if published is None or port not in published:
            known = (
                ", ".join(f"{s}:{p}" for s, ps in sorted(self.ports.items()) for p in sorted(ps)) or "none"
            )
            raise EndpointError(service, port if published is not None else None, known)
        if self.network:
            return network_address(self.stack, service), port
        return self.host, published[port]

    def url(self, service: str, port: int, scheme: str = "http") -> str:
        """``scheme://host:port`` of a published port (no trailing slash)."""
        return f"{scheme}://{_address(*self.endpoint(service, port))}"

    def env(self) -> dict[str, str]:
        """``ENVKIT_<SERVICE>_HOST`` and ``ENVKIT_<SERVICE>_PORT_<N>`` for every published port."""
        out = {}
        for service, ports in sorted(self.ports.items()):
            name = PREFIX + env_name(service)
            out[f"{name}_HOST"] = network_address(self.stack, service) if self.network else self.host
            for port in sorted(ports):
                out[f"{name}_PORT_{port}"] = str(self.endpoint(service, port)[1])
        return out

    def endpoints(self) -> dict[str, dict[str, str]]:
        """Service -> container port -> ``host:port``, for people and JSON."""
        return {
            name: {str(p): _address(*self.endpoint(name, p)) for p in sorted(ports)}
            for name, ports in sorted(self.ports.items())
        }


def _bracketed(host: str) -> str:
    """``host`` as it goes before ``:port``: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _address(host: str, port: int) -> str:
    return f"{_bracketed(host)}:{port}"


def handle(stack_id: str, state: StackState | None, reach: ServiceHost | None = None) -> StackHandle:
    """The handle of what ``state`` records as healthy, as this process reaches it (``reach``)."""
    ports: dict[str, dict[int, int]] = {}
    for name, svc in state.services.items() if state else ():
        if svc.status == "healthy":
            ports[name] = {int(p): hp for p, hp in svc.ports.items()}
    host = (state.host if state else None) or LOOPBACK
    return StackHandle(stack=stack_id, ports=ports, host=host, network=reach is not None and reach.network)
