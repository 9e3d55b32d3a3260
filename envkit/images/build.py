"""Ensure a stack's images exist: a local hit costs no build, a miss builds once.

:func:`plan` computes every selected image's key (see :mod:`envkit.images.digest`)
without building anything. :func:`ensure` asks the engine once which of those
tags already exist and builds only the misses: parents before children,
independent images in parallel (:func:`envkit.graph.run`), each under a
machine-wide lock so that concurrent runs build a key once. An image is made
by the builder its spec calls for: envkit's own assembler for a Dockerfile
without ``RUN`` (:mod:`envkit.images.assemble`: no container, a reproducible
image), the classic builder for any other (:mod:`envkit.images.classic`), or a
Debian recipe (:mod:`envkit.images.recipe`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envkit import graph
from envkit.config.model import ImageSpec, StackConfig
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import (
    BaseImageError,
    BuildError,
    ConfigError,
    DaemonError,
    EnvkitError,
    ImageMissing,
    StateError,
)
from envkit.fsutil import atomic_write_text, ensure_private_dir
from envkit.images.assemble import verdict
from envkit.images.digest import ASSEMBLER, BUILDER, Hasher, Inputs, image_inputs, short_key
from envkit.images.manifests import Manifests, explain
from envkit.images.statcache import StatCache
from envkit.progress import Progress, Silent, State
from envkit.settings import Settings

DEFAULT_JOBS = 4


@dataclass
class ImageResult:
    image: str
    key: str
    tag: str
    status: str  # "built" or "cached"
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)  # why it was (re)built
    builder: str = ""  # which builder made it: "assembler", "classic" or "recipe"
    builder_reason: str = ""  # why that one

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "key": self.key,
            "tag": self.tag,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "reasons": self.reasons,
            "builder": self.builder,
            "builder_reason": self.builder_reason,
        }


@dataclass(frozen=True)
class Plan:
    """The keys of the selected images, computed without building anything."""

    config: StackConfig
    order: list[str]
    inputs: dict[str, Inputs]
    hashed_files: int
    builders: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (builder, why)

    def tag(self, name: str) -> str:
        return image_tag(self.config.name, name, self.inputs[name].key)


def image_tag(stack: str, image: str, key: str) -> str:
    return f"{stack}/{image}:{short_key(key)}"


def select(config: StackConfig, names: list[str] | None) -> list[str]:
    """The images to ensure: ``names`` (all when empty) and their parents, parents first."""
    for name in names or []:
        if name not in config.images:
            raise ConfigError(
                config.file,
                "images",
                f"there is no image named {name!r}",
                f"choose one of: {', '.join(config.images) or '(none defined)'}",
            )
    return config.order(names or None)


def plan(
    config: StackConfig,
    daemon: Daemon,
    *,
    names: list[str] | None = None,
    pull: str | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Compute the key of each selected image (pulling missing bases per the pull policy)."""
    order = select(config, names)
    progress = progress or Silent()
    policy = pull or config.pull
    cache = StatCache(config.state_dir / "stat-cache.json")
    hasher = Hasher(cache)
    platform = daemon.platform
    inputs: dict[str, Inputs] = {}
    identities: dict[str, str] = {}
    builders: dict[str, tuple[str, str]] = {}
    for name in order:
        spec = config.images[name]
        builders[name] = choose_builder(spec)
        files = hasher.context_files(spec, skip=[config.state_dir], progress=progress)
        bases = {}
        for ref in spec.externals:
            if ref not in identities:
                identities[ref] = base_identity(daemon, name, ref, policy, progress)
            bases[ref] = identities[ref]
        inputs[name] = image_inputs(
            spec,
            files,
            platform=platform,
            bases=bases,
            parents={p: inputs[p].key for p in spec.parents},
            builder=ASSEMBLER if builders[name][0] == "assembler" else BUILDER,
        )
    cache.save(hasher.started_ns, prune=names is None or set(order) == set(config.images))
    return Plan(config, order, inputs, hasher.hashed_files, builders)


def choose_builder(spec: ImageSpec) -> tuple[str, str]:
    """Which builder makes ``spec`` (``assembler``, ``classic`` or ``recipe``), and why."""
    if spec.recipe is not None:
        return "recipe", f"made from the Debian recipe {spec.recipe.file.name}"
    why_not = verdict(spec)
    if why_not is None:
        return "assembler", "no RUN or other step that needs a container: envkit assembles it"
    return "classic", why_not


def ensure(
    config: StackConfig,
    daemon: Daemon,
    *,
    names: list[str] | None = None,
    pull: str | None = None,
    progress: Progress | None = None,
    jobs: int = DEFAULT_JOBS,
    build: bool = True,
    settings: Settings | None = None,
) -> list[ImageResult]:
    """Make every selected image present under its content-addressed tag.

    With ``build=False`` a missing image is an error instead of a build.
    """
    progress = progress or Silent()
    the_plan = plan(config, daemon, names=names, pull=pull, progress=progress)
    present = _present_keys(daemon, config.name)
    manifests = Manifests(config.state_dir / "manifests")
    results: dict[str, ImageResult] = {}
    misses: list[str] = []
    for name in the_plan.order:
        inputs = the_plan.inputs[name]
        tag = the_plan.tag(name)
        builder, why = the_plan.builders[name]
        found = present.get(tag)
        if found is None:
            # (a second look finds an image of this key that the label query does not list:
            # one built before its labels were what they are now)
            found = daemon.image_labels(tag)
        if found is not None and found.get(labels.KEY) == inputs.key:
            made_by = found.get(labels.BUILDER) or builder
            if made_by != builder:  # the assembler's choice, and the classic builder made it
                why = manifests.made_by(name, inputs.key)[1] or "the assembler could not make it"
            results[name] = ImageResult(name, inputs.key, tag, "cached", builder=made_by, builder_reason=why)
            manifests.record(name, inputs, made_by=(made_by, why))
        else:
            reasons = explain(manifests.latest(name), inputs)
            results[name] = ImageResult(
                name, inputs.key, tag, "built", reasons=reasons, builder=builder, builder_reason=why
            )
            progress.note(name, "rebuilding: " + "; ".join(reasons))
            misses.append(name)
    chosen = settings or Settings.from_env()
    # `envkit gc` in another checkout keeps what this one needs now.
    CurrentTags(chosen.cache_dir, config.name).record(
        config.state_dir, {n: the_plan.tag(n) for n in the_plan.order}
    )
    if misses and not build:
        raise ImageMissing(misses, "; ".join(results[misses[0]].reasons))
    if misses:

        def work(name: str) -> None:
            _build_one(
                the_plan, daemon, results[name], manifests=manifests, progress=progress, settings=chosen
            )

        graph.run(config.image_graph(), misses, work, jobs=jobs, thread_name="envkit-build")
    return [results[name] for name in the_plan.order]


def _build_one(
    the_plan: Plan,
    daemon: Daemon,
    result: ImageResult,
    *,
    manifests: Manifests,
    progress: Progress,
    settings: Settings,
) -> None:
    name = result.image
    inputs = the_plan.inputs[name]
    started = time.monotonic()
    try:
        with _machine_lock(result.tag, name, progress, settings.lock_dir):
            if _tag_has_key(daemon, result.tag, inputs.key):
                result.status = "cached"
                result.reasons = ["built meanwhile by another envkit process"]
            else:
                progress.note(name, f"building ({result.builder})", State.WORKING)
                image_id = _make(the_plan, daemon, result, progress=progress, settings=settings)
                daemon.tag(image_id, result.tag)
    except EnvkitError as err:
        progress.note(name, f"failed: {str(err).splitlines()[0]}", State.FAILED)
        raise
    result.seconds = time.monotonic() - started
    manifests.record(name, inputs, made_by=(result.builder, result.builder_reason))
    progress.note(name, f"{result.status} {result.tag} in {result.seconds:.1f}s", State.DONE)


def _make(
    the_plan: Plan, daemon: Daemon, result: ImageResult, *, progress: Progress, settings: Settings
) -> str:
    """Build one image with its builder (the assembler falling back to the classic builder); its ID."""
    name = result.image
    spec = the_plan.config.images[name]
    inputs = the_plan.inputs[name]

    def image_labels(builder: str) -> dict[str, str]:
        return {
            labels.PROJECT: the_plan.config.name,
            labels.IMAGE: name,
            labels.KEY: inputs.key,
            labels.BUILDER: builder,
        }

    if spec.recipe is not None:
        from envkit.images import recipe
        from envkit.images.facts import FactsCache

        return recipe.build(
            daemon,
            name,
            spec.recipe,
            image_labels("recipe"),
            progress,
            facts=FactsCache(settings.cache_dir),
            stall=settings.build_stall,
        )
    parents = {parent: the_plan.tag(parent) for parent in spec.parents}
    if result.builder == "assembler":
        from envkit.images import assemble
        from envkit.images.facts import FactsCache

        try:
            return assemble.build(
                daemon,
                spec,
                inputs,
                parents=parents,
                labels=image_labels("assembler"),
                facts=FactsCache(settings.cache_dir),
                platform=inputs.platform,
                stall=settings.build_stall,
            )
        except assemble.CannotAssemble as why:
            result.builder, result.builder_reason = "classic", str(why)
            progress.note(name, f"the classic builder builds it: {why}", State.WORKING)
    from envkit.images import classic

    return classic.build(
        daemon,
        spec,
        inputs,
        parents=parents,
        labels=image_labels("classic"),
        progress=progress,
        stall=settings.build_stall,
    )


class CurrentTags:
    """The image tags each checkout of a stack needs now, so that `envkit gc` in one checkout
    never removes what another one uses: ``<cache>/current/<stack>/<hash of the state dir>.json``.
    A record whose checkout (its state directory) is gone no longer counts."""

    def __init__(self, cache_dir: Path, stack: str) -> None:
        self.directory = cache_dir / "current" / stack

    def record(self, state_dir: Path, tags: dict[str, str]) -> None:
        """Record the current tag of each of these images (the others' records stay)."""
        path = self.directory / (hashlib.sha256(str(state_dir).encode()).hexdigest()[:16] + ".json")
        try:
            old = path.read_text(encoding="utf-8")
            known = dict(json.loads(old)["tags"])
        except (OSError, ValueError, KeyError, TypeError):
            old, known = "", {}
        text = json.dumps({"state_dir": str(state_dir), "tags": {**known, **tags}}, sort_keys=True)
        if text == old:
            return  # a no-op build writes nothing
        with contextlib.suppress(StateError):  # a record: failing to write it only makes gc keep less
            ensure_private_dir(self.directory)
            atomic_write_text(path, text)

    def others(self, state_dir: Path) -> set[str]:
        """The tags the other checkouts that still exist need."""
        needed: set[str] = set()
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                other, tags = Path(data["state_dir"]), [str(t) for t in dict(data["tags"]).values()]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if other == state_dir:
                continue
            if not other.is_dir():
                path.unlink(missing_ok=True)  # that checkout is gone
                continue
            needed.update(tags)
        return needed


def base_identity(daemon: Daemon, image: str, ref: str, policy: str, progress: Progress) -> str:
    """A base pinned by digest is identified by that digest, any other by its local image ID.

    Either way it must be present to build on: a missing one is pulled unless
    the policy is ``never``; ``always`` pulls an unpinned one every time.
    """
    pinned = "@sha256:" in ref
    if policy == "always" and not pinned:
        _pull(daemon, image, ref, progress)
    found = daemon.inspect_image(ref)
    if found is None:
        if policy == "never":
            raise BaseImageError(image, ref, "not present locally, and the pull policy is 'never'")
        _pull(daemon, image, ref, progress)
        found = daemon.inspect_image(ref)
        if found is None:
            raise BaseImageError(image, ref, "still not present after pulling it")
    return ref.split("@", 1)[1] if pinned else str(found["Id"])


def _pull(daemon: Daemon, image: str, ref: str, progress: Progress) -> None:
    progress.note(image, f"pulling base image {ref}", State.WORKING)
    errors = []
    try:
        for message in daemon.pull(ref, stall=None):  # read to the end: no leaked connection
            if "error" in message:
                errors.append(str(message["error"]))
    except DaemonError as err:
        errors.append(err.detail)
    if errors:
        raise BaseImageError(image, ref, f"pulling it failed: {errors[0]}", pull_failed=True)


def _present_keys(daemon: Daemon, stack: str) -> dict[str, dict[str, str]]:
    """Tag -> labels of every image of this stack present locally (one daemon call)."""
    present: dict[str, dict[str, str]] = {}
    for image in daemon.images(labels.selector(labels.PROJECT, stack)):
        for tag in image.tags:
            present[tag] = dict(image.labels)
    return present


def _check_builder(owner: Path, image: str, tag: str) -> None:
    """The process that holds the build lock of ``tag`` must be able to finish its build."""
    import psutil

    try:
        pid = int(owner.read_text(encoding="utf-8"))
        status = psutil.Process(pid).status()
    except (OSError, ValueError, psutil.Error):
        return  # unknown, or gone since: the lock comes free
    if status == psutil.STATUS_STOPPED:
        raise BuildError(
            image,
            f"another envkit process (pid {pid}) holds the build lock of {tag} and is stopped",
            fix=f"resume it (`kill -CONT {pid}`) or end it (`kill {pid}`), then build again",
        )


def _tag_has_key(daemon: Daemon, tag: str, key: str) -> bool:
    found = daemon.image_labels(tag)
    return found is not None and found.get(labels.KEY) == key


@contextmanager
def _machine_lock(tag: str, image: str, progress: Progress, lock_dir: Path) -> Iterator[None]:
    """One build of ``tag`` at a time on this machine. A waiter waits as long as the build takes
    (the builder's own stall bound ends a stuck one), but not on a builder that is stopped."""
    import filelock  # only a build needs it; a no-op build starts faster without it

    directory = ensure_private_dir(lock_dir)
    path = directory / (hashlib.sha256(tag.encode()).hexdigest()[:32] + ".lock")
    owner = path.with_suffix(".owner")
    lock = filelock.FileLock(path, mode=0o600, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        progress.note(image, f"waiting for another envkit process that is building {tag}", State.WAITING)
        while True:  # a dead holder's flock is released by the kernel: no stale wait
            try:
                lock.acquire(timeout=1.0)
                break
            except filelock.Timeout:
                _check_builder(owner, image, tag)
    try:
        with contextlib.suppress(OSError):
            atomic_write_text(owner, str(os.getpid()))
        yield
    finally:
        lock.release()
