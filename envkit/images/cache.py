"""A registry as envkit's remote cache: every machine pulls by key what any machine built.

envkit knows every image's key before it builds anything (:func:`envkit.images.build.plan`),
so the cache needs no index of its own: the image ``api`` of key K lives at
``<cache>/api:<K>`` (the full 64-hex key). The scheduler
(:func:`envkit.images.build.ensure`) calls this module between the local hit and a build:

- :func:`lookup` asks for the references of all the misses at once, in parallel, one engine
  request each (``GET /distribution/<ref>/json``: the engine asks the registry, with the
  docker CLI's credentials, so envkit has no registry client of its own), each bounded by
  :data:`LOOKUP_TIMEOUT`;
- :func:`pull` pulls a hit, checks that its ``envkit.key`` label is the key (an entry without
  it, or with another, is refused: removed here, and the image is built instead), and tags it
  as a build would;
- :func:`push` uploads an image (the scheduler pushes what it built and any current image the
  cache lacks), after :func:`secrets` and :func:`leaked` have said what its build args may
  have left in it.

The cache is an optimisation, never a single point of failure: a registry that does not
answer costs one warning naming it, and what is missing is built here.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envkit import settings as settings_mod
from envkit.config.model import StackConfig
from envkit.config.toml import repository_problem
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import ConfigError, DaemonError, EngineStreamError
from envkit.images.manifests import SECRET_ARG
from envkit.progress import Progress, State
from envkit.settings import Settings

log = logging.getLogger("envkit")

LOOKUP_TIMEOUT = 5.0  # seconds a lookup may take: a registry that does not answer costs this, once
MAX_LOOKUPS = 16  # lookups at once

PRESENT = "present"
ABSENT = "absent"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Remote:
    """The remote cache in use, and what set it."""

    repository: str  # "ghcr.io/team/envkit", "127.0.0.1:5000/envkit"
    source: str  # the variable that set it (settings.CACHE), or "[stack] cache in <its file>"

    def ref(self, image: str, key: str) -> str:
        """The reference of ``image``'s entry of ``key``: ``<cache>/<image>:<full key>``."""
        return f"{self.repository}/{image}:{key}"

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, "source": self.source}


def resolve(config: StackConfig, settings: Settings) -> Remote | None:
    """The cache in use: ``ENVKIT_CACHE`` when set (set empty, none), else ``[stack] cache``."""
    if settings.cache is not None:
        if not settings.cache:
            return None
        problem = repository_problem(settings.cache)
        if problem:
            raise ConfigError(
                "environment",
                settings_mod.CACHE,
                problem,
                f"set {settings_mod.CACHE}=REGISTRY/PATH (e.g. ghcr.io/team/envkit), "
                "or set it empty for no cache",
            )
        return Remote(settings.cache, settings_mod.CACHE)
    if config.cache:
        return Remote(config.cache, f"[stack] cache in {config.file}")
    return None


@dataclass(frozen=True)
class Lookup:
    """What the cache holds under one reference."""

    ref: str
    state: str  # PRESENT, ABSENT or UNREACHABLE
    detail: str = ""  # UNREACHABLE: what went wrong

    @property
    def present(self) -> bool:
        return self.state == PRESENT

    def why_not(self, remote: Remote) -> str:
        """Why the image was not pulled (for --explain)."""
        if self.state == ABSENT:
            return f"{self.ref} is not in the cache"
        return f"the cache {remote.repository} did not answer ({self.detail})"


def lookup(daemon: Daemon, remote: Remote, keys: Mapping[str, str]) -> dict[str, Lookup]:
    """Image -> what the cache holds under its key (``keys``: image -> key), asked for all at
    once: one engine request each, in parallel. A registry that does not answer (or refuses)
    is one warning naming the cache, and its lookups are UNREACHABLE."""

    def one(image: str) -> Lookup:
        ref = remote.ref(image, keys[image])
        try:
            found = daemon.distribution(ref, timeout=LOOKUP_TIMEOUT)
        except DaemonError as err:
            return Lookup(
                ref, UNREACHABLE, f"no answer within {LOOKUP_TIMEOUT:g}s" if err.timed_out else _why(err)
            )
        return Lookup(ref, ABSENT if found is None else PRESENT)

    if not keys:
        return {}
    workers = min(len(keys), MAX_LOOKUPS)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="envkit-lookup") as pool:
        found = dict(zip(keys, pool.map(one, keys), strict=True))
    failed = [f for f in found.values() if f.state == UNREACHABLE]
    if failed:
        warn(
            f"the cache {remote.repository} (from {remote.source}) did not answer "
            f"({failed[0].detail}): building locally"
        )
    return found


class Unusable(Exception):
    """The cache's entry of an image cannot be used (the pull failed, or it was refused): the
    image is built here instead. ``str()`` says why."""


def pull(
    daemon: Daemon,
    remote: Remote,
    image: str,
    key: str,
    tag: str,
    *,
    progress: Progress,
    stall: float | None,
) -> dict[str, str]:
    """Pull ``image``'s entry of ``key`` and tag it ``tag``; the pulled image's labels.

    An entry whose ``envkit.key`` label is not ``key`` (or that has none) is never used: it
    is removed again, a warning names it, and :class:`Unusable` says why.
    """
    ref = remote.ref(image, key)
    progress.note(image, f"pulling {ref}", State.WORKING)
    failure = ""
    try:
        daemon.pull(ref, stall=stall, on_progress=lambda line: progress.log(image, line))
    except EngineStreamError as err:  # the registry, through the engine, said why
        failure = err.reason
    except DaemonError as err:
        failure = _why(err)
    if failure:
        raise _unusable(image, f"pulling {ref} failed ({failure})")
    found = daemon.image_labels(ref) or {}
    label = found.get(labels.KEY)
    if label != key:
        _untag(daemon, ref)
        why = f"it has no {labels.KEY} label" if not label else f"its {labels.KEY} label is {label!r}"
        raise _unusable(image, f"refused {ref}: {why}, not the image's key")
    daemon.tag(ref, tag)
    _untag(daemon, ref)  # the image stays, under its own tag
    return found


def push(
    daemon: Daemon,
    remote: Remote,
    image: str,
    key: str,
    tag: str,
    *,
    progress: Progress,
    stall: float | None,
) -> None:
    """Push the image tagged ``tag`` to its entry in the cache (a DaemonError if that fails)."""
    ref = remote.ref(image, key)
    started = time.monotonic()
    progress.note(image, f"pushing to {ref}", State.WORKING)
    daemon.tag(tag, ref)
    try:
        daemon.push(ref, stall=stall, on_progress=lambda line: progress.log(image, line))
    except DaemonError as err:
        progress.note(image, f"push failed: {_why(err)}", State.FAILED)
        raise
    finally:
        _untag(daemon, ref)
    progress.note(image, f"pushed {ref} in {time.monotonic() - started:.1f}s", State.DONE)


def is_there(daemon: Daemon, ref: str) -> bool:
    """Whether the cache holds ``ref`` now (a registry that does not answer: it does not)."""
    try:
        return daemon.distribution(ref, timeout=LOOKUP_TIMEOUT) is not None
    except DaemonError:
        return False


def secrets(config: StackConfig, image: str) -> dict[str, tuple[str, str]]:
    """The build args that look like secrets by their names (``*TOKEN*``, ``*SECRET*``,
    ``*PASSWORD*``, ``*_KEY``...) of ``image`` and of the stack images it builds on, whose
    history it carries: arg -> (the image that sets it, its value)."""
    found: dict[str, tuple[str, str]] = {}
    for name in config.order([image]):
        for arg, value in config.images[name].args.items():
            if SECRET_ARG.search(arg):
                found[arg] = (name, value)
    return found


def leaked(daemon: Daemon, tag: str, args: Mapping[str, str]) -> list[str]:
    """The ones of ``args`` (name -> value) whose value the image ``tag`` carries where anyone
    who pulls it reads it: its history (the classic builder records ``NAME=value`` for each
    RUN), its environment or its labels."""
    info = daemon.inspect_image(tag) or {}
    config = info.get("Config") or {}
    values = {str(e).partition("=")[2] for e in config.get("Env") or []}
    values |= {str(v) for v in (config.get("Labels") or {}).values()}
    history = "\n".join(daemon.history(tag))
    return [
        name
        for name, value in args.items()
        if value
        and (
            value in values
            or f"{name}={value}" in history
            or (len(value) >= 8 and value in history)  # a short value may be anything's part
        )
    ]


def warn(message: str) -> None:
    """A warning on stderr (also under --quiet): the cache never fails a build."""
    log.warning("envkit: %s", message)


def _unusable(image: str, why: str) -> Unusable:
    warn(f"{image}: {why}; building it here")
    return Unusable(why)


def _untag(daemon: Daemon, ref: str) -> None:
    try:
        daemon.remove_image(ref)
    except DaemonError as err:  # only the remote name was to go: an image still in use stays
        log.debug("envkit: could not remove the tag %s: %s", ref, err.detail)


def _why(err: DaemonError) -> str:
    """What went wrong, without the request that envkit made (which names the reference)."""
    answered = re.search(r" answered \d+: (.*)", err.detail)
    return answered.group(1) if answered else err.detail
