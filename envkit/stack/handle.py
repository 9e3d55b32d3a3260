"""Where a stack's services are reached from the host: :class:`StackHandle`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from envkit.config.model import env_name
from envkit.errors import EndpointError
from envkit.remote import LOOPBACK
from envkit.settings import PREFIX
from envkit.stack.state import StackState


@dataclass(frozen=True)
class StackHandle:
    """Where the stack's services are reached from this machine."""

    stack: str
    ports: Mapping[str, Mapping[int, int]]  # service -> container port -> host port
    host: str = LOOPBACK  # the service host (envkit.remote): where every published port is reached

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
        return f"{scheme}://{_bracketed(host)}:{host_port}"

    def env(self) -> dict[str, str]:
        """``ENVKIT_<SERVICE>_HOST`` and ``ENVKIT_<SERVICE>_PORT_<N>`` for every published port."""
        out = {}
        for service, ports in sorted(self.ports.items()):
            name = PREFIX + env_name(service)
            out[f"{name}_HOST"] = self.host
            for port, host_port in sorted(ports.items()):
                out[f"{name}_PORT_{port}"] = str(host_port)
        return out

    def endpoints(self) -> dict[str, dict[str, str]]:
        """Service -> container port -> ``host:port``, for people and JSON."""
        return {
            name: {str(p): f"{_bracketed(self.host)}:{hp}" for p, hp in sorted(ports.items())}
            for name, ports in sorted(self.ports.items())
        }


def _bracketed(host: str) -> str:
    """``host`` as it goes before ``:port``: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def handle(stack_id: str, state: StackState | None) -> StackHandle:
    """The handle of what ``state`` records as healthy."""
    ports: dict[str, dict[int, int]] = {}
    for name, svc in state.services.items() if state else ():
        if svc.status == "healthy":
            ports[name] = {int(p): hp for p, hp in svc.ports.items()}
    return StackHandle(stack=stack_id, ports=ports, host=(state.host if state else None) or LOOPBACK)
