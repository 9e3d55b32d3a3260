"""Where the stack's services are reached when the engine may be on another machine.

The *service host* is the address clients connect to for a published port (the plugin's
endpoints, ``ENVKIT_<SERVICE>_HOST``, the HTTP and TCP health checks, ``envkit status``):
``ENVKIT_HOST``, else ``[stack] host``, else the engine's own address as envkit resolved it
(:func:`envkit.docker.transport.discover`): a local socket gives 127.0.0.1, ``tcp://H:P`` and
``ssh://user@H`` give ``H`` as written (nothing is resolved).

The *publish address* is where the engine binds those ports: ``ENVKIT_PUBLISH``, else
``[stack] publish``, else 127.0.0.1 when the engine is local and the service host is a
loopback address, else every interface of the engine's host (0.0.0.0), which anyone who
reaches that host can use.

:func:`loopback_cache_warning` says when a remote cache on a loopback address cannot be what
the user meant: the engine, not this machine, resolves the cache's address.

A client that runs in a container of the engine itself (a devcontainer, Docker-outside-of-Docker,
a CI job container with the socket mounted) reaches the services another way: its container
joins the stack's network, and it connects to each service's container name at the container
port (:attr:`ServiceHost.client`, found by :mod:`envkit.reach`).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from envkit import settings as settings_mod
from envkit.config.model import StackConfig
from envkit.docker.transport import Endpoint
from envkit.settings import Settings

log = logging.getLogger("envkit")

LOOPBACK = "127.0.0.1"
EVERY_INTERFACE = "0.0.0.0"  # the engine's HostIp for all of its host's IPv4 interfaces
_SOCKETS = ("unix", "npipe", "fd")  # endpoint schemes of an engine on this machine


def endpoint_address(endpoint: str) -> str | None:
    """The host part of an engine endpoint (``tcp://H:P``, ``ssh://user@H:22``, ``H:P``), as
    written; None for a local socket (``unix://``, ``npipe://``, ``fd://``)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:  # docker-py takes "host:port" as tcp
        scheme, rest = "tcp", endpoint
    if scheme.lower() in _SOCKETS:
        return None
    netloc = rest.split("/", 1)[0].rpartition("@")[2]
    if netloc.startswith("["):  # [::1]:2375
        return netloc[1:].split("]", 1)[0] or None
    if netloc.count(":") > 1:  # a bare IPv6 address
        return netloc
    return netloc.partition(":")[0] or None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback: 127.0.0.0/8, ::1 or localhost."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def engine_is_local(endpoint: Endpoint) -> bool:
    """Whether the engine is reached on this machine: a socket, or a TCP or SSH endpoint on a
    loopback address (which may still forward to another machine: ENVKIT_HOST says so then)."""
    address = endpoint_address(endpoint.host)
    return address is None or is_loopback(address)


def container_name(stack_id: str, service: str) -> str:
    """The name of a service's container (see :func:`network_address`)."""
    return f"{stack_id}-{service}"


DNS_LABEL = 63  # the longest name a resolver takes as one label


def network_address(stack_id: str, service: str) -> str:
    """Where a client on the stack's network reaches ``service``: its container's name, unique on
    the engine (a service's own name may be another network's alias too), unless that name is
    too long to resolve: then the service's name, its alias on the network."""
    name = container_name(stack_id, service)
    return name if len(name) <= DNS_LABEL else service


@dataclass(frozen=True)
class ClientContainer:
    """The container this process runs in, on the stack's engine: it joins the stack's network."""

    id: str
    name: str


PORTS_REACH = "ports"
NETWORK_REACH = "network"


@dataclass(frozen=True)
class ServiceHost:
    """Where clients reach the stack's published ports, where the engine publishes them, and why."""

    host: str  # what clients connect to: "127.0.0.1", "docker-host", "10.0.0.5"
    source: str  # what chose it: ENVKIT_HOST, [stack] host in FILE, the engine's endpoint
    publish: str  # the HostIp of every published port: "127.0.0.1", "0.0.0.0", "10.0.0.5"
    publish_source: str
    engine: str  # the engine's endpoint (tcp://10.0.0.5:2375)
    engine_local: bool  # see engine_is_local
    engine_socket: bool  # the engine is a socket on this machine
    explicit: bool = False  # the host was set (ENVKIT_HOST or [stack] host), not derived
    # How this process reaches the services (envkit.reach): through the published ports at
    # ``host``, or, with a client container, over the stack's network where it joined it.
    client: ClientContainer | None = None
    reach_source: str = "not in a container of the engine"

    @property
    def network(self) -> bool:
        """Whether this process reaches the services over the stack's network."""
        return self.client is not None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def foreign_loopback(self) -> bool:
        """The service host is this machine's loopback while the engine is on another machine:
        whatever answers there is not the engine's published port, so no probe through it counts."""
        return self.loopback and not self.engine_local

    @property
    def overridable(self) -> bool:
        """Whether a host that refuses every connection is news to report with ENVKIT_HOST's name:
        anything but the default of a local socket (its docker-proxy answers every published port).
        Over the stack's network a refused connection is a service that does not listen yet."""
        return not self.network and not (self.engine_socket and self.loopback)

    def reachable(self) -> str:
        """The advice when the service host cannot be reached, naming what sets it."""
        if self.client is not None:
            return (
                f"this process runs in the container {self.client.name}, which joined the stack's network "
                f"({self.reach_source}) to reach each service by its container's name: set "
                f"{settings_mod.REACH}=ports to use the published ports at {self.host} instead"
            )
        return (
            f"the service host {self.host} (from {self.source}) is where envkit reaches the ports the "
            f"engine at {self.engine} publishes on {self.publish}: set {settings_mod.HOST} to an address "
            f"of the engine's host that this machine reaches (or [stack] host)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "host_source": self.source,
            "publish": self.publish,
            "publish_source": self.publish_source,
        }

    def reach_json(self) -> dict[str, Any]:
        """How this process reaches the services: ``reach`` (ports or network), why, and its container."""
        client = None if self.client is None else {"id": self.client.id, "name": self.client.name}
        mode = NETWORK_REACH if self.network else PORTS_REACH
        return {"reach": mode, "reach_source": self.reach_source, "client_container": client}


def service_host(endpoint: Endpoint, config: StackConfig | None, settings: Settings) -> ServiceHost:
    """The service host and publish address for ``endpoint``: the environment wins over the
    stack file, which wins over what the endpoint implies."""
    address = endpoint_address(endpoint.host)
    if settings.host is not None:
        host, source = settings.host, settings_mod.HOST
    elif config is not None and config.host is not None:
        host, source = config.host, f"[stack] host in {config.file}"
    elif address is None:
        host, source = LOOPBACK, f"a local engine socket ({endpoint.source})"
    else:
        host, source = address, f"the engine's address ({endpoint.source})"
    local = address is None or is_loopback(address)
    if settings.publish is not None:
        publish, publish_source = settings.publish, settings_mod.PUBLISH
    elif config is not None and config.publish is not None:
        publish, publish_source = config.publish, f"[stack] publish in {config.file}"
    elif local and is_loopback(host):
        publish, publish_source = LOOPBACK, "a local engine: this machine's loopback only"
    else:
        why = "a remote engine" if not local else "a service host off this machine's loopback"
        publish, publish_source = EVERY_INTERFACE, f"{why}: every interface of the engine's host"
    return ServiceHost(
        host=host,
        source=source,
        publish=publish,
        publish_source=publish_source,
        engine=endpoint.host,
        engine_local=local,
        engine_socket=address is None,
        explicit=settings.host is not None or (config is not None and config.host is not None),
    )


def registry_address(repository: str) -> str | None:
    """The host of the registry a repository names (``127.0.0.1:5000/envkit`` -> 127.0.0.1);
    None when it names none (Docker Hub), as Docker decides it."""
    first, sep, _ = repository.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return None
    return endpoint_address(f"tcp://{first}")


def loopback_cache_warning(repository: str, source: str, endpoint: Endpoint) -> str | None:
    """The warning to give when a remote cache on a loopback address meets an engine on another
    machine (the engine pulls and pushes, so it resolves the address on its own host); None else."""
    registry = registry_address(repository)
    address = endpoint_address(endpoint.host)
    if registry is None or not is_loopback(registry) or address is None or is_loopback(address):
        return None
    return (
        f"the remote cache {repository} (from {source}) is on a loopback address, and the engine at "
        f"{endpoint.host} is on another machine: the engine, not this machine, resolves {registry}, "
        "so the cache must be where the engine reaches it at that address (or name the registry by "
        "an address the engine reaches)"
    )


_WARNED: set[tuple[str, str]] = set()


def warn_loopback_cache(repository: str | None, source: str, endpoint: Endpoint) -> bool:
    """Give :func:`loopback_cache_warning` on stderr, once per process; whether it was given now."""
    if repository is None:
        return False
    message = loopback_cache_warning(repository, source, endpoint)
    if message is None or (repository, endpoint.host) in _WARNED:
        return False
    _WARNED.add((repository, endpoint.host))
    log.warning("envkit: %s", message)
    return True


# The default of a local engine's socket: what a caller that resolved nothing means.
LOCAL = ServiceHost(
    host=LOOPBACK,
    source="a local engine socket",
    publish=LOOPBACK,
    publish_source="a local engine: this machine's loopback only",
    engine="unix:///var/run/docker.sock",
    engine_local=True,
    engine_socket=True,
)


def warn_cache_reach(config: StackConfig, settings: Settings, endpoint: Endpoint) -> bool:
    """:func:`warn_loopback_cache` for the remote cache this stack uses (ENVKIT_CACHE or
    ``[stack] cache``), if any; called where a build starts."""
    from envkit.images.cache import resolve  # only when a build starts: the handle never needs it

    remote = resolve(config, settings)
    return remote is not None and warn_loopback_cache(remote.repository, remote.source, endpoint)
