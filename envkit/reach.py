"""Whether this process runs in a container of the engine it talks to, and so how it reaches the
stack's services: at the published ports (``ports``), or over the stack's network (``network``).

A client in a container of the engine (a devcontainer, Docker-outside-of-Docker, a CI job
container with the engine's socket mounted) cannot use ports published on 127.0.0.1: that is the
loopback of the engine's host, not its own. Its container joins the stack's network instead, and
it connects to each service's container name at the container port.

Finding its own container costs nothing outside a container: the clues are files (:func:`clues`:
``/.dockerenv``, ``/run/.containerenv``, the container ID in the sources of the mounts at
``/etc/hostname`` and ``/etc/resolv.conf``, in ``/proc/self/cgroup``, or a hostname that is a
short ID), and the engine is asked about the IDs they name only when there are some. The engine
must know the ID: a client inside an engine's own container (docker:dind) talking to that engine
finds its container unknown there, and uses the ports on 127.0.0.1, which are its own.

``ENVKIT_REACH`` decides instead of the clues (``ports`` or ``network``); a service host that was
set (``ENVKIT_HOST``, ``[stack] host``) means ports at that host.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envkit import settings as settings_mod
from envkit.docker.engine import Daemon
from envkit.errors import ConfigError
from envkit.remote import NETWORK_REACH, PORTS_REACH, ClientContainer, ServiceHost
from envkit.settings import Settings

_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
_SHORT_ID = re.compile(r"^[0-9a-f]{12}$")
# Mount points an engine fills from its own per-container directory (Docker's
# /var/lib/docker/containers/<id>/, Podman's .../overlay-containers/<id>/userdata/).
_ENGINE_MOUNTS = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/run/.containerenv")
_MAX_ASKED = 4  # the engine is asked about at most this many candidate IDs
# Network modes whose container cannot join another network (host: it has the host's own).
_UNJOINABLE = ("host", "none", "slirp4netns", "pasta", "private")


@dataclass(frozen=True)
class Clues:
    """What the files say about the container this process may run in."""

    marker: bool  # /.dockerenv or /run/.containerenv exists
    mountinfo: str = ""  # /proc/self/mountinfo
    cgroup: str = ""  # /proc/self/cgroup
    containerenv: str = ""  # /run/.containerenv (Podman: id="..." in a privileged container)
    hostname: str = ""


def clues(root: Path = Path("/"), hostname: str | None = None) -> Clues:
    """Read the clues under ``root`` (``/``; a test's directory)."""

    def text(relative: str) -> str:
        try:
            return (root / relative).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    marker = (root / ".dockerenv").exists() or (root / "run/.containerenv").exists()
    return Clues(
        marker=marker,
        mountinfo=text("proc/self/mountinfo"),
        cgroup=text("proc/self/cgroup"),
        containerenv=text("run/.containerenv"),
        hostname=socket.gethostname() if hostname is None else hostname,
    )


def mountinfo_ids(mountinfo: str) -> list[str]:
    """Container IDs in the sources of the files an engine mounts into its containers."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in _ENGINE_MOUNTS:
            found += _ID.findall(fields[3].replace("\\040", " "))
    return found


def cgroup_ids(cgroup: str) -> list[str]:
    """Container IDs in this process's cgroup paths (``/docker/<id>``, ``docker-<id>.scope``,
    ``libpod-<id>.scope``): the last one of each line. A private cgroup namespace shows ``/``."""
    found = []
    for line in cgroup.splitlines():
        ids = _ID.findall(line.split(":", 2)[-1])
        found += ids[-1:]
    return found


def containerenv_id(containerenv: str) -> str | None:
    """The ``id="..."`` Podman writes into /run/.containerenv (of a privileged container)."""
    for line in containerenv.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "id":
            value = value.strip().strip('"')
            return value if _ID.fullmatch(value) else None
    return None


def candidates(found: Clues) -> list[str]:
    """The IDs (or, from a hostname, a 12-hex ID prefix) of the container this process may run
    in, the most telling first; none when nothing says it runs in a container."""
    ids = [containerenv_id(found.containerenv), *mountinfo_ids(found.mountinfo), *cgroup_ids(found.cgroup)]
    out = list(dict.fromkeys(i for i in ids if i))
    if (
        (found.marker or out)
        and _SHORT_ID.match(found.hostname)
        and not any(i.startswith(found.hostname) for i in out)
    ):
        out.append(found.hostname)  # an engine's default hostname: the short ID
    return out


def own_container(daemon: Daemon, ids: Sequence[str]) -> tuple[ClientContainer | None, str]:
    """The container of ``ids`` that the engine knows, if it can join a network, and why not."""
    for candidate in ids[:_MAX_ASKED]:
        info = daemon.container_info(candidate)
        if info is not None and str(info.get("Id", "")).startswith(candidate):
            return joinable(daemon, info)
    return None, (
        f"in a container ({ids[0][:12]}) that the engine at {daemon.endpoint.host} does not know: "
        "the engine runs beside this process (as in docker:dind), so its ports are this machine's"
    )


def joinable(daemon: Daemon, info: dict[str, Any]) -> tuple[ClientContainer | None, str]:
    """The container that joins the stack's network for the one ``info`` describes (the one
    whose network it shares, for ``--network container:X``), or None and why it cannot."""
    name = str(info.get("Name") or "").lstrip("/") or str(info["Id"])[:12]
    mode = str((info.get("HostConfig") or {}).get("NetworkMode") or "default")
    if mode.startswith("container:"):
        owner = daemon.container_info(mode.partition(":")[2])
        if owner is None:
            return None, f"in the container {name}, whose network is that of a container that is gone"
        return joinable(daemon, owner)
    if mode in _UNJOINABLE or mode.startswith("ns:"):
        why = "the published ports on the host's loopback are its own" if mode == "host" else "it cannot join"
        return None, f"in the container {name}, of network mode {mode}: {why}"
    return ClientContainer(str(info["Id"]), name), f"this process runs in the container {name} of the engine"


def detect(host: ServiceHost, daemon: Daemon, settings: Settings, found: Clues | None = None) -> ServiceHost:
    """``host`` with how this process reaches the services: ``client`` set when over the stack's
    network. ``found`` replaces the clues read from this machine's files (tests)."""
    setting = settings.reach
    if setting == PORTS_REACH:
        return dataclasses.replace(host, reach_source=f"{settings_mod.REACH}={PORTS_REACH}")
    if setting != NETWORK_REACH and host.explicit:
        return dataclasses.replace(host, reach_source=f"the service host is set ({host.source})")
    found = clues() if found is None else found
    ids = candidates(found)
    if ids:
        client, why = own_container(daemon, ids)
    else:
        client = None
        why = "in a container that names no ID of its own" if found.marker else "outside any container"
    if client is None and setting == NETWORK_REACH:
        raise ConfigError(
            "environment",
            settings_mod.REACH,
            f"{NETWORK_REACH} needs this process to run in a container of the engine; it runs {why}",
            f"unset it (or set {settings_mod.REACH}={PORTS_REACH})",
        )
    if client is not None:
        why = f"{settings_mod.REACH}={NETWORK_REACH}: {why}" if setting == NETWORK_REACH else why
    return dataclasses.replace(host, client=client, reach_source=why)
