"""What each service of an acquire should run now: its image ensured, and the hash of its inputs.

The only part of an acquire that looks at images; the decision about the running stack
(:mod:`envkit.stack.reconcile`) takes the result as plain data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from envkit.config.model import ServiceSpec, StackConfig
from envkit.docker.engine import Daemon
from envkit.images.build import base_identity, ensure
from envkit.progress import Progress
from envkit.remote import LOOPBACK, warn_cache_reach
from envkit.settings import Settings


@dataclass(frozen=True)
class Wanted:
    """A service the acquiring holder needs, as it would run now."""

    image: str  # the reference its container runs
    inputs: str  # hash of the service's settings and image identity
    summary: str  # for messages: "image demo/api:0123abcd"


INPUTS_SCHEMA = 1


def desired(
    config: StackConfig,
    daemon: Daemon,
    names: Sequence[str],
    *,
    progress: Progress,
    settings: Settings,
    build: bool = True,
    publish: str = LOOPBACK,
) -> dict[str, Wanted]:
    """Each service of ``names`` as it would run now: its image ensured (built if need be, or
    ImageMissing with ``build=False``), its inputs hashed. The only part of an acquire that
    looks at images; the decision itself (:func:`reconcile`) needs none of it. ``publish`` is
    the address its ports are published on (a change replaces its container)."""
    services = [config.services[n] for n in names]
    stack_images = sorted({s.image for s in services if s.image in config.images})
    tags = {}
    if stack_images:
        warn_cache_reach(config, settings, daemon.endpoint)  # a loopback cache, a remote engine
        results = ensure(
            config, daemon, names=stack_images, progress=progress, build=build, settings=settings
        )
        tags = {r.image: r.tag for r in results}
    for image in stack_images:  # compose's `image:` beside `build:` names the built image too
        for reference in config.images[image].also_tags:
            daemon.tag(tags[image], reference)
    out = {}
    for spec in services:
        if spec.image in tags:
            out[spec.name] = wanted(spec, tags[spec.image], tags[spec.image], publish)
        else:
            policy = spec.pull_policy or config.pull
            identity = base_identity(
                daemon,
                f"service {spec.name}",
                spec.image,
                policy,
                progress,
                stall=settings.build_stall,
            )
            out[spec.name] = wanted(spec, spec.image, identity, publish)
    return out


def wanted(spec: ServiceSpec, ref: str, identity: str, publish: str = LOOPBACK) -> Wanted:
    """The service ``spec`` running image ``ref`` (whose identity is ``identity``: a content-
    addressed tag, or an external image's ID or digest), its ports published on ``publish``."""
    return Wanted(image=ref, inputs=inputs_hash(spec, identity, publish), summary=f"image {ref}")


def inputs_hash(spec: ServiceSpec, image_identity: str, publish: str = LOOPBACK) -> str:
    """The hash of everything a service's container is made from: a change restarts it."""
    data: dict[str, Any] = {
        "schema": INPUTS_SCHEMA,
        "image": image_identity,
        "ports": sorted(spec.ports),
        "environment": dict(sorted(spec.environment.items())),
        "command": list(spec.command) if spec.command is not None else None,
        "healthcheck": [
            spec.healthcheck.kind,
            list(spec.healthcheck.cmd),
            spec.healthcheck.path,
            spec.healthcheck.port,
        ],
    }
    # What compose stacks add, only where set: a stack that sets none keeps its hash.
    more = {
        "oneshot": spec.oneshot,
        "entrypoint": list(spec.entrypoint) if spec.entrypoint is not None else None,
        "user": spec.user,
        "working_dir": spec.working_dir,
        "mounts": [[m.kind, m.source, m.target, m.read_only] for m in spec.mounts],
        "aliases": sorted(spec.aliases),
        "labels": dict(sorted(spec.labels.items())),
        "stop_signal": spec.stop_signal,
        "tty": spec.tty,
        "stdin_open": spec.stdin_open,
        "publish": publish if spec.ports and publish != LOOPBACK else None,
    }
    data.update({key: value for key, value in more.items() if value not in (None, False, [], {})})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]
