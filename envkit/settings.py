"""Every ``ENVKIT_*`` environment variable, read in one place into a frozen :class:`Settings`.

Nothing else in envkit reads these variables: a module that needs one takes
a :class:`Settings` (``Settings.from_env()`` when the caller has none). A bad
value is a :class:`~envkit.errors.ConfigError` naming the variable and the fix.

=========================  =====================================================================
``ENVKIT_ROOT``            the project root (default: searched upward from the working directory)
``ENVKIT_CONFIG``          the stack file's name at the root (default ``envkit.toml``)
``ENVKIT_STATE_DIR``       the stack's state directory (default ``<root>/.envkit``)
``ENVKIT_LOCK_DIR``        the per-tag build locks (default ``~/.cache/envkit/locks``)
``ENVKIT_LOCK_TIMEOUT``    seconds to wait for a stack's state lock (default 120)
``ENVKIT_GRACE``           seconds a stack outlives its last holder (default 3)
``ENVKIT_KEEP``            keep the stack up after the last holder, until ``envkit down``
``ENVKIT_TTL``             keep it up that many seconds after the last holder
``ENVKIT_BUILD_STALL``     seconds a build, pull or import may print nothing before it is an error
                           (default 600)
``ENVKIT_CACHE``           a registry path as the images' remote cache (``REGISTRY/PATH``); it wins
                           over ``[stack] cache``, and set empty it turns the cache off
``ENVKIT_CACHE_PUSH``      ``1``: push every image a build made (and any the cache lacks) to it (CI)
``ENVKIT_HOST``            the service host: where clients reach the stack's published ports (a host
                           name or IP address); it wins over ``[stack] host`` and the engine's address
``ENVKIT_PUBLISH``         the IP address the engine publishes ports on; it wins over ``[stack] publish``
                           (default 127.0.0.1 for a local engine, every interface for a remote one)
``ENVKIT_REACH``           how this process reaches the services: ``ports`` (published ports at the
                           service host), ``network`` (its own container joins the stack's network:
                           a client in a container of the engine), or ``auto`` (default: ``network``
                           when envkit finds its own container on the engine and no service host is
                           set, else ``ports``)
``ENVKIT_WARDEN``          ``1``: a warden on the engine removes the stack when this machine's reaper
                           is gone; ``0``: none; ``auto`` (default): on when the engine may outlive
                           this machine (a remote engine, or this process runs in a container of it)
``ENVKIT_WARDEN_GRACE``    seconds the warden waits, once no client holds its lease, before it
                           removes the stack (default 10)
``ENVKIT_WARDEN_SOCKET``   the engine's socket on the engine's host, mounted into the warden
                           (default /var/run/docker.sock)
``ENVKIT_FAULT``           for envkit's own fault tests only: ``PHASE`` or ``PHASE:stop`` makes the
                           process kill (or stop) itself at that phase (see :mod:`envkit.faults`)
=========================  =====================================================================
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from envkit.errors import ConfigError

PREFIX = "ENVKIT_"  # also the prefix of a stack handle's variables (ENVKIT_<SERVICE>_HOST)
ROOT = "ENVKIT_ROOT"
CONFIG = "ENVKIT_CONFIG"
STATE_DIR = "ENVKIT_STATE_DIR"
LOCK_DIR = "ENVKIT_LOCK_DIR"
LOCK_TIMEOUT = "ENVKIT_LOCK_TIMEOUT"
GRACE = "ENVKIT_GRACE"
KEEP = "ENVKIT_KEEP"
TTL = "ENVKIT_TTL"
BUILD_STALL = "ENVKIT_BUILD_STALL"
FAULT = "ENVKIT_FAULT"
CACHE = "ENVKIT_CACHE"
CACHE_PUSH = "ENVKIT_CACHE_PUSH"
HOST = "ENVKIT_HOST"
PUBLISH = "ENVKIT_PUBLISH"
REACH = "ENVKIT_REACH"
REACHES = ("auto", "ports", "network")  # ENVKIT_REACH's values (envkit.reach)
WARDEN = "ENVKIT_WARDEN"
WARDEN_GRACE = "ENVKIT_WARDEN_GRACE"
WARDEN_SOCKET = "ENVKIT_WARDEN_SOCKET"

DEFAULT_LOCK_TIMEOUT = 120.0  # seconds; the lock is held while containers are created or removed
DEFAULT_GRACE = 3.0  # seconds a stack outlives its last holder, so a late joiner finds it up
DEFAULT_BUILD_STALL = 600.0  # seconds of silence after which a build is stuck, not slow
DEFAULT_WARDEN_GRACE = 10.0  # seconds the warden waits with no client before it removes the stack
DEFAULT_WARDEN_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class Settings:
    """envkit's settings from the environment; every field has a default that needs no config."""

    root: Path | None = None
    config_name: str | None = None  # None: envkit.toml (or [tool.envkit] in pyproject.toml)
    state_dir: Path | None = None
    lock_dir: Path = Path.home() / ".cache" / "envkit" / "locks"
    cache_dir: Path = Path.home() / ".cache" / "envkit"  # the daemons' platforms (daemons.json)
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    grace: float = DEFAULT_GRACE
    keep: bool = False
    ttl: float | None = None
    build_stall: float = DEFAULT_BUILD_STALL
    fault: str | None = None  # a fault test's phase (envkit.faults)
    cache: str | None = None  # ENVKIT_CACHE as set: None when unset, "" (turned off) when empty
    cache_push: bool = False
    host: str | None = None  # ENVKIT_HOST: the service host (None: unset)
    publish: str | None = None  # ENVKIT_PUBLISH: the address ports are published on (None: unset)
    reach: str = "auto"  # ENVKIT_REACH: auto, ports or network (envkit.reach)
    warden: bool | None = None  # ENVKIT_WARDEN: None (auto), True, False (envkit.stack.warden)
    warden_grace: float = DEFAULT_WARDEN_GRACE
    warden_socket: str = DEFAULT_WARDEN_SOCKET

    def stay(self, keep: bool, ttl: float | None) -> tuple[bool, float | None]:
        """How long a holder wants the stack kept after it leaves: ``keep`` or ``ttl`` as
        asked (by an argument or an option), else as ``ENVKIT_KEEP``/``ENVKIT_TTL`` say."""
        if keep or ttl is not None:
            return keep, ttl
        return self.keep, self.ttl

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "envkit"
        root = env.get(ROOT, "").strip()
        state_dir = env.get(STATE_DIR, "").strip()
        lock_dir = env.get(LOCK_DIR, "").strip()
        return cls(
            root=Path(root) if root else None,
            config_name=_config_name(env.get(CONFIG, "")),
            state_dir=Path(state_dir) if state_dir else None,
            lock_dir=Path(lock_dir) if lock_dir else cache / "locks",
            cache_dir=cache,
            lock_timeout=_env_seconds(env, LOCK_TIMEOUT, DEFAULT_LOCK_TIMEOUT),
            grace=_env_seconds(env, GRACE, DEFAULT_GRACE),
            keep=_env_flag(env, KEEP),
            ttl=_env_seconds(env, TTL),
            build_stall=_env_seconds(env, BUILD_STALL, DEFAULT_BUILD_STALL),
            fault=env.get(FAULT, "").strip() or None,
            cache=env[CACHE].strip() if CACHE in env else None,
            cache_push=_env_flag(env, CACHE_PUSH),
            host=_env_checked(env, HOST, host_problem, f"set {HOST}=192.168.1.20 or {HOST}=docker-host"),
            publish=_env_checked(
                env, PUBLISH, publish_problem, f"set {PUBLISH}=0.0.0.0 or {PUBLISH}=10.0.0.5"
            ),
            reach=_env_reach(env),
            warden=_env_warden(env),
            warden_grace=_env_seconds(env, WARDEN_GRACE, DEFAULT_WARDEN_GRACE),
            warden_socket=_env_socket(env),
        )


def seconds(raw: str) -> float:
    """A finite, non-negative number of seconds (``ValueError`` otherwise): the one parser of
    durations that users type (environment variables, ``--ttl``, ``--envkit-ttl``)."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{raw!r} is not a number of seconds (>= 0)")
    return value


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")


def host_problem(raw: str) -> str | None:
    """What is wrong with ``raw`` as a service host (a host name or an IP address, with no
    scheme, port or path), or None when it is one."""
    value = raw.strip()
    if not value:
        return "it is empty"
    if "://" in value:
        return f"{value!r} has a scheme: give the host alone"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if ":" in value:
        return f"{value!r} is not a host name or IP address (a port or brackets? give the host alone)"
    if not _HOST_NAME.match(value):
        return f"{value!r} is not a host name or IP address"
    return None


def publish_problem(raw: str) -> str | None:
    """What is wrong with ``raw`` as the address to publish ports on (an IP address), or None."""
    value = raw.strip()
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address" if value else "it is empty"
    return None


def _env_checked(
    env: Mapping[str, str], name: str, problem_of: Callable[[str], str | None], fix: str
) -> str | None:
    """The variable's value (stripped), None when unset; ConfigError when ``problem_of`` finds fault."""
    if name not in env:
        return None
    problem = problem_of(env[name])
    if problem:
        raise ConfigError("environment", name, problem, f"{fix}, or unset it")
    return env[name].strip()


@overload
def _env_seconds(env: Mapping[str, str], name: str) -> float | None: ...


@overload
def _env_seconds(env: Mapping[str, str], name: str, default: float) -> float: ...


def _env_seconds(env: Mapping[str, str], name: str, default: float | None = None) -> float | None:
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        return seconds(raw)
    except ValueError:
        raise ConfigError(
            "environment", name, f"{raw!r} is not a number of seconds", f"set {name}=60, or unset it"
        ) from None


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError("environment", name, f"{raw!r} is not a yes or no", f"set {name}=1 or {name}=0")


def _env_reach(env: Mapping[str, str]) -> str:
    raw = env.get(REACH, "").strip().lower()
    if not raw:
        return "auto"
    if raw not in REACHES:
        raise ConfigError(
            "environment",
            REACH,
            f"{raw!r} is not one of {', '.join(REACHES)}",
            f"set {REACH}=ports (published ports) or {REACH}=network (join the stack's network), or unset it",
        )
    return raw


def _env_warden(env: Mapping[str, str]) -> bool | None:
    raw = env.get(WARDEN, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(
        "environment",
        WARDEN,
        f"{raw!r} is not 1, 0 or auto",
        f"set {WARDEN}=1 (a warden on the engine), {WARDEN}=0 (none), or unset it (auto)",
    )


def _env_socket(env: Mapping[str, str]) -> str:
    raw = env.get(WARDEN_SOCKET, "").strip()
    if not raw:
        return DEFAULT_WARDEN_SOCKET
    if not raw.startswith("/"):
        raise ConfigError(
            "environment",
            WARDEN_SOCKET,
            f"{raw!r} is not an absolute path",
            f"set {WARDEN_SOCKET}=/run/podman/podman.sock (the engine's socket on its host), or unset it",
        )
    return raw


def _config_name(raw: str) -> str | None:
    name = raw.strip()
    if not name:
        return None
    if "/" in name or not name.endswith(".toml"):
        raise ConfigError(
            "environment",
            CONFIG,
            f"{name!r} is not the name of a .toml file",
            f"set it to a stack file's name at the project root, e.g. {CONFIG}=envkit.alpine.toml",
        )
    return name
