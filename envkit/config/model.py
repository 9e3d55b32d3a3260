"""A stack as envkit understands it: frozen specs, whatever file they were read from.

The loaders (:mod:`envkit.config.toml` for envkit.toml, :mod:`envkit.config.compose`
for compose files) validate a stack file and build these; everything after config
reads only these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from envkit import graph
from envkit.config.recipe import Recipe

PULL_POLICIES = ("missing", "always", "never")
# What a service waits for in a service it depends on (compose's names).
STARTED, HEALTHY, COMPLETED = "service_started", "service_healthy", "service_completed_successfully"
CONDITIONS = (STARTED, HEALTHY, COMPLETED)
DEFAULT_START_TIMEOUT = 60.0  # seconds a service may take to become healthy


@dataclass(frozen=True)
class ImageSpec:
    """One image of the stack: built from a Dockerfile, or made from a Debian :class:`Recipe`."""

    name: str
    context: Path
    dockerfile: Path | None  # None for an image made from a recipe
    dockerfile_text: str  # "" for an image made from a recipe
    args: Mapping[str, str]
    target: str | None
    platform: str | None
    parents: tuple[str, ...]  # other images of this stack it builds on
    externals: tuple[str, ...]  # image references from outside the stack
    recipe: Recipe | None = None
    also_tags: tuple[str, ...] = ()  # references the image is tagged with too (compose's build + image)

    @property
    def definition(self) -> str:
        """The text that defines the image (the Dockerfile's, or the recipe's): part of its key."""
        return self.recipe.text if self.recipe is not None else self.dockerfile_text


@dataclass(frozen=True)
class HealthCheck:
    """How envkit decides that a service is up.

    ``kind`` is ``cmd`` (run ``cmd`` in the container; exit 0 is healthy),
    ``http`` (GET ``path`` on the published ``port``; a 2xx or 3xx answer),
    ``tcp`` (the published ``port`` is served), ``image`` (the image's own
    Docker HEALTHCHECK, or "running" when it has none) or ``none`` (running is
    enough: compose's ``disable: true`` or ``test: [NONE]``).
    """

    kind: str
    cmd: tuple[str, ...] = ()
    path: str = ""
    port: int = 0

    def describe(self) -> str:
        if self.kind == "cmd":
            return f"command {list(self.cmd)!r}"
        if self.kind == "http":
            return f"HTTP GET {self.path} on port {self.port}"
        if self.kind == "tcp":
            return f"TCP port {self.port}"
        if self.kind == "none":
            return "running (no health check)"
        return "the image's HEALTHCHECK (or running, when it has none)"


@dataclass(frozen=True)
class Mount:
    """A filesystem mounted into a service's container.

    ``kind`` is ``volume`` (``source``: a volume of the stack, see
    :attr:`StackConfig.volumes`, or "" for an anonymous one), ``bind``
    (``source``: an absolute host path) or ``tmpfs`` (no source).
    """

    kind: str
    target: str
    source: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the stack."""

    name: str
    image: str  # an image of this stack, or an external reference
    ports: tuple[int, ...]  # container ports, each published on 127.0.0.1 at a port the engine picks
    environment: Mapping[str, str]
    command: tuple[str, ...] | None
    depends_on: tuple[str, ...]
    healthcheck: HealthCheck
    start_timeout: float
    # What it waits for in each of depends_on (one of CONDITIONS); missing: HEALTHY.
    conditions: Mapping[str, str] = field(default_factory=dict)
    oneshot: bool = False  # runs to completion (exit 0) instead of staying up; not rerun once done
    entrypoint: tuple[str, ...] | None = None
    user: str | None = None
    working_dir: str | None = None
    mounts: tuple[Mount, ...] = ()
    aliases: tuple[str, ...] = ()  # more names it is reached by on the stack's network
    labels: Mapping[str, str] = field(default_factory=dict)  # the user's own container labels
    stop_signal: str | None = None
    tty: bool = False
    stdin_open: bool = False
    pull_policy: str | None = None  # for an external image; None: the stack's pull policy

    def condition(self, dependency: str) -> str:
        """What this service waits for in ``dependency``."""
        return self.conditions.get(dependency, HEALTHY)


@dataclass(frozen=True)
class StackConfig:
    name: str
    root: Path
    file: Path
    pull: str
    state_dir: Path
    images: Mapping[str, ImageSpec]
    services: Mapping[str, ServiceSpec] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()  # named volumes of the stack (created with it, removed with it)
    files: tuple[Path, ...] = ()  # every file the stack was read from (compose: in merge order)
    notes: tuple[str, ...] = ()  # what the loader left out or changed, and why
    cache: str | None = None  # [stack] cache: a registry path as the images' remote cache
    host: str | None = None  # [stack] host: where clients reach published ports (envkit.remote)
    publish: str | None = None  # [stack] publish: the IP address the engine publishes ports on

    @property
    def id(self) -> str:
        """The id of this checkout's stack: its name plus a hash of its state directory, so two
        checkouts (or two stack files of one checkout) run side by side."""
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:8]
        return f"{self.name}-{digest}"

    def image_graph(self) -> graph.Graph:
        return {name: spec.parents for name, spec in self.images.items()}

    def service_graph(self) -> graph.Graph:
        return {name: spec.depends_on for name, spec in self.services.items()}

    def dependents(self) -> dict[str, tuple[str, ...]]:
        """Each service -> the services that depend on it directly."""
        return {
            name: tuple(other for other, spec in self.services.items() if name in spec.depends_on)
            for name in self.services
        }

    def order(self, names: list[str] | None = None) -> list[str]:
        """Image names with every parent before its children (``names`` plus their parents)."""
        return graph.order(self.image_graph(), names)

    def service_order(self, names: list[str] | None = None) -> list[str]:
        """Service names with every dependency before its dependents (``names`` plus depends_on)."""
        return graph.order(self.service_graph(), names)


def env_name(service: str) -> str:
    """The service's part of the handle's variable names: non-alphanumerics become '_', upper case."""
    return "".join(ch if ch.isalnum() else "_" for ch in service).upper()
