"""Ensure a stack's images exist: a local hit costs no build, a miss is pulled or built once.

:func:`plan` computes every selected image's key (see :mod:`envkit.images.digest`)
without building anything. :func:`ensure` asks the engine which of those
tags already exist (one inspect each); with a remote cache (:mod:`envkit.images.cache`) it looks
the misses up there, all at once, and pulls the hits; it builds only the rest:
parents before children, independent images in parallel
(:func:`envkit.graph.run`), each under a machine-wide lock so that concurrent
runs pull or build a key once. An image is made by the builder its spec calls
for: envkit's own assembler for a Dockerfile without ``RUN``
(:mod:`envkit.images.assemble`: no container, a reproducible image), the
classic builder for any other (:mod:`envkit.images.classic`), or a Debian
recipe (:mod:`envkit.images.recipe`). Asked to, it then pushes to the cache
what it built and any current image the cache lacks.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envkit import graph
from envkit import settings as settings_mod
from envkit.config.model import ImageSpec, StackConfig
from envkit.docker import labels
from envkit.docker.engine import Daemon
from envkit.errors import (
    BaseImageError,
    BuildError,
    ConfigError,
    DaemonError,
    EngineStreamError,
    EnvkitError,
    ImageMissing,
    PushError,
    StateError,
)
from envkit.fsutil import atomic_write_text, ensure_private_dir
from envkit.images import cache
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
    status: str  # "cached" (here already), "pulled" (from the remote cache) or "built"
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)  # why it was not here: why it was (re)built
    builder: str = ""  # which builder made it: "assembler", "classic" or "recipe"
    builder_reason: str = ""  # why that one
    remote: str = ""  # its reference in the remote cache, when the cache was asked about it
    cache: str = ""  # what the cache did for it: "pulled from REF", or why it was not pulled
    pushed: bool = False  # pushed to the remote cache by this run

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
            "remote": self.remote or None,
            "cache": self.cache,
            "pushed": self.pushed,
        }


def tally(results: list[ImageResult]) -> str:
    """``1 built, 2 cached`` (``1 built, 3 pulled, 2 cached`` when the remote cache gave any)."""
    built = sum(r.status == "built" for r in results)
    pulled = sum(r.status == "pulled" for r in results)
    cached = len(results) - built - pulled
    return f"{built} built, " + (f"{pulled} pulled, " if pulled else "") + f"{cached} cached"


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
    stall: float | None = settings_mod.DEFAULT_BUILD_STALL,
) -> Plan:
    """Compute the key of each selected image (pulling missing bases per the pull policy; a
    pull that sends nothing for ``stall`` seconds is a BaseImageError)."""
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
                identities[ref] = base_identity(daemon, name, ref, policy, progress, stall=stall)
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
    push: bool | None = None,
) -> list[ImageResult]:
    """Make every selected image present under its content-addressed tag: ``cached`` when it
    is here already, else ``pulled`` when the remote cache has its key, else ``built``.

    With ``build=False`` an image that would have to be built is an error instead. With
    ``push`` (default: ``ENVKIT_CACHE_PUSH``) what was built, and any current image the cache
    lacks, is pushed to it afterwards. An image selected only as the parent of ``names`` is
    left out (and not in the result) when none of them has to be built on it.
    """
    progress = progress or Silent()
    chosen = settings or Settings.from_env()
    remote = cache.resolve(config, chosen)
    if push and remote is None:
        raise ConfigError(
            config.file,
            "stack.cache",
            "pushing was asked for, and no remote cache is set",
            f'set cache = "REGISTRY/PATH" under [stack], or {settings_mod.CACHE}=REGISTRY/PATH',
        )
    pushing = remote is not None and (chosen.cache_push if push is None else push)
    the_plan = plan(config, daemon, names=names, pull=pull, progress=progress, stall=chosen.build_stall)
    manifests = Manifests(config.state_dir / "manifests")
    results: dict[str, ImageResult] = {}
    misses: list[str] = []
    for name in the_plan.order:
        inputs = the_plan.inputs[name]
        tag = the_plan.tag(name)
        builder, why = the_plan.builders[name]
        # One inspect per tag, not a list of the stack's images: listing costs the engine a
        # walk of every image (0.2 to 0.5 s on the containerd store, and on a busy classic one),
        # an inspect a few milliseconds.
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
            misses.append(name)
    # `envkit gc` in another checkout keeps what this one needs now.
    CurrentTags(chosen.cache_dir, config.name).record(
        config.state_dir, {n: the_plan.tag(n) for n in the_plan.order}
    )
    scheduler = _Scheduler(
        the_plan,
        daemon,
        results,
        manifests=manifests,
        progress=progress,
        settings=chosen,
        remote=remote,
        build=build,
    )
    made = scheduler.run(misses, names=names, jobs=jobs, push=pushing)
    return [results[name] for name in the_plan.order if name in made]


class _Scheduler:
    """Makes the misses of one :func:`ensure` present, and pushes.

    A miss whose key the remote cache holds is pulled, any other is built: parents first,
    independent images in parallel, each under its machine-wide lock (so two processes pull or
    build it once). A parent left out because nothing was to be built on it is made after all
    when a child's entry is refused and the child is built instead.
    """

    def __init__(
        self,
        the_plan: Plan,
        daemon: Daemon,
        results: dict[str, ImageResult],
        *,
        manifests: Manifests,
        progress: Progress,
        settings: Settings,
        remote: cache.Remote | None,
        build: bool,
    ) -> None:
        self.plan = the_plan
        self.daemon = daemon
        self.results = results
        self.manifests = manifests
        self.progress = progress
        self.settings = settings
        self.remote = remote
        self.build = build
        self.lookups: dict[str, cache.Lookup] = {}
        self.made = {n for n, r in results.items() if r.status == "cached"}
        self._locks = {name: threading.Lock() for name in results}

    def run(self, misses: list[str], *, names: list[str] | None, jobs: int, push: bool) -> set[str]:
        """Make the misses that are needed present (and push, with ``push``); the images that
        are present now."""
        if self.remote is not None and (misses or push):
            # Only a push needs to know what the cache holds of the images here already: a warm
            # no-op asks the registry nothing.
            asked = self.plan.order if push else misses
            self.lookups = cache.lookup(self.daemon, self.remote, {n: self.plan.inputs[n].key for n in asked})
            for name, found in self.lookups.items():
                self.results[name].remote = found.ref
                if name in misses and not found.present:
                    self.results[name].cache = "not pulled: " + found.why_not(self.remote)
        work = self._needed(misses, names)
        to_build = [n for n in work if not self._hit(n)]
        if to_build and not self.build:
            raise ImageMissing(to_build, "; ".join(self.results[to_build[0]].reasons))
        for name in to_build:
            self.progress.note(name, "rebuilding: " + "; ".join(self.results[name].reasons))
        if work:
            config = self.plan.config
            graph.run(config.image_graph(), work, self.make, jobs=jobs, thread_name="envkit-build")
        if push:
            self._push_all(jobs)
        return self.made

    def _hit(self, name: str) -> bool:
        found = self.lookups.get(name)
        return found is not None and found.present

    def _needed(self, misses: list[str], names: list[str] | None) -> list[str]:
        """The misses to make present: every one, unless ``names`` were asked for; then those,
        and the parents of each miss to be built (not pulled) on them."""
        if not names:
            return misses
        images = self.plan.config.images
        missing, needed = set(misses), set()
        for name in reversed(self.plan.order):  # children first
            children = [c for c in self.plan.order if name in images[c].parents]
            if name in missing and (name in names or any(c in needed and not self._hit(c) for c in children)):
                needed.add(name)
        return [n for n in misses if n in needed]

    def make(self, name: str) -> None:
        """Make ``name`` present: pulled when the cache holds its key, else built."""
        with self._locks[name]:
            if name in self.made:
                return
            result = self.results[name]
            started = time.monotonic()
            try:
                with _machine_lock(result.tag, name, self.progress, self.settings.lock_dir):
                    if _tag_has_key(self.daemon, result.tag, result.key):
                        result.status = "cached"
                        result.reasons = ["built meanwhile by another envkit process"]
                    elif not (self._hit(name) and self._pull(result)):
                        self._build(result)
            except EnvkitError as err:
                self.progress.note(name, f"failed: {str(err).splitlines()[0]}", State.FAILED)
                raise
            result.seconds = time.monotonic() - started
            inputs = self.plan.inputs[name]
            self.manifests.record(name, inputs, made_by=(result.builder, result.builder_reason))
            self.progress.note(name, f"{result.status} {result.tag} in {result.seconds:.1f}s", State.DONE)
            self.made.add(name)

    def _pull(self, result: ImageResult) -> bool:
        """Pull ``result``'s image from the cache; False when its entry cannot be used."""
        assert self.remote is not None
        try:
            found = cache.pull(
                self.daemon,
                self.remote,
                result.image,
                result.key,
                result.tag,
                progress=self.progress,
                stall=self.settings.build_stall,
            )
        except cache.Unusable as why:
            result.cache = f"not pulled: {why}"
            self.progress.note(result.image, "rebuilding: " + "; ".join(result.reasons))
            return False
        result.status = "pulled"
        result.cache = f"pulled from {result.remote}"
        made_by = found.get(labels.BUILDER) or result.builder
        if made_by != result.builder:  # the assembler's choice; the classic builder made it
            result.builder, result.builder_reason = made_by, "the assembler could not make it"
        return True

    def _build(self, result: ImageResult) -> None:
        name = result.image
        if not self.build:
            raise ImageMissing([name], result.cache or "; ".join(result.reasons))
        for parent in self.plan.config.images[name].parents:
            self.make(parent)  # a parent left out, now that its child is built after all
        self.progress.note(name, f"building ({result.builder})", State.WORKING)
        image_id = _make(self.plan, self.daemon, result, progress=self.progress, settings=self.settings)
        try:
            self.daemon.tag(image_id, result.tag)
        except BaseException:  # the image exists, untagged: it must not stay behind
            from envkit.images.archive import discard

            made = {labels.PROJECT: self.plan.config.name, labels.IMAGE: name, labels.KEY: result.key}
            discard(self.daemon, image_id, made)
            raise
        result.status = "built"

    def _push_all(self, jobs: int) -> None:
        """Push what was built, and every image here whose key the cache lacks; one PushError
        for whatever could not be pushed (after trying every one)."""
        assert self.remote is not None
        remote = self.remote
        failures: list[tuple[str, str]] = []
        leaks: list[str] = []
        todo = []
        for name in self.plan.order:
            found, result = self.lookups[name], self.results[name]
            if name not in self.made or result.status == "pulled":
                continue
            if found.state == cache.UNREACHABLE:
                failures.append((found.ref, f"the cache did not answer ({found.detail})"))
            elif not found.present or result.status == "built":  # built: a refused entry, replaced
                todo.append(name)

        def one(name: str) -> None:
            result = self.results[name]
            ref = self.lookups[name].ref
            with _machine_lock(result.tag, name, self.progress, self.settings.lock_dir, "pushing"):
                refused = self.lookups[name].present  # an entry was there: refused, so replaced
                if not refused and cache.is_there(self.daemon, ref):
                    result.cache = result.cache or f"{ref} is in the cache"
                    return  # another envkit process pushed it meanwhile
                secret = cache.secrets(self.plan.config, name)
                for arg, (image, _) in secret.items():
                    where = "its" if image == name else f"its parent {image}'s"
                    cache.warn(
                        f"pushing {name}: {where} build arg {arg} looks like a secret; a pushed "
                        "image carries its history and labels (see the README)"
                    )
                found = cache.leaked(self.daemon, result.tag, {a: v for a, (_, v) in secret.items()})
                if found:
                    leaks.append(ref)
                    failures.append(
                        (ref, f"the value of build arg {', '.join(found)} is in the image (docker history)")
                    )
                    return
                try:
                    cache.push(
                        self.daemon,
                        remote,
                        name,
                        result.key,
                        result.tag,
                        progress=self.progress,
                        stall=self.settings.build_stall,
                    )
                except DaemonError as err:
                    failures.append((ref, err.detail))
                    return
                result.pushed = True

        if todo:
            with concurrent.futures.ThreadPoolExecutor(
                max(1, jobs), thread_name_prefix="envkit-push"
            ) as pool:
                list(pool.map(one, todo))
        if failures:
            registry = remote.repository.split("/", 1)[0]
            fixes = []
            if leaks:
                fixes.append(
                    "pass secrets to a build another way than a build arg (the classic builder "
                    "records in the image the build args a RUN sees); if it is no secret, rename it"
                )
            if any(_PLAIN_HTTP in detail for _, detail in failures):
                fixes.append(
                    f"the registry {registry} speaks plain HTTP and the engine expects HTTPS: Docker "
                    "trusts such a registry on 127.0.0.0/8, or when daemon.json lists it under "
                    "insecure-registries; Podman when registries.conf has "
                    f'[[registry]] location = "{registry}" insecure = true'
                )
            elif len(leaks) < len(failures):
                fixes.append(
                    f"check that the registry answers and lets you push (`docker login {registry}`), "
                    "then run `envkit build --push` again"
                )
            raise PushError(remote.repository, failures, "; or ".join(fixes))


# what Docker and Podman say when a registry answers HTTPS with plain HTTP
_PLAIN_HTTP = "server gave HTTP response to HTTPS client"


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


def base_identity(
    daemon: Daemon,
    image: str,
    ref: str,
    policy: str,
    progress: Progress,
    *,
    stall: float | None = settings_mod.DEFAULT_BUILD_STALL,
) -> str:
    """A base pinned by digest is identified by that digest, any other by its content
    (:func:`content_identity`: the same on every engine and image store).

    Either way it must be present to build on: a missing one is pulled unless
    the policy is ``never``; ``always`` pulls an unpinned one every time. A pull that sends
    nothing for ``stall`` seconds (a hung daemon or registry) fails as a pull failure.
    """
    pinned = "@sha256:" in ref
    if policy == "always" and not pinned:
        _pull(daemon, image, ref, progress, stall)
    found = daemon.inspect_image(ref)
    if found is None:
        if policy == "never":
            raise BaseImageError(image, ref, "not present locally, and the pull policy is 'never'")
        _pull(daemon, image, ref, progress, stall)
        found = daemon.inspect_image(ref)
        if found is None:
            raise BaseImageError(image, ref, "still not present after pulling it")
    return ref.split("@", 1)[1] if pinned else content_identity(found)


# What identifies an external base's content in image inspect, on every engine and store (the
# Id is the config's digest on Docker's classic store and Podman, the manifest's on the
# containerd store, and the config's bytes differ with the engine that wrote them).
_RUN_FIELDS = (
    "User",
    "Env",
    "Entrypoint",
    "Cmd",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "Shell",
    "OnBuild",
    "Healthcheck",
)


def content_identity(inspected: Mapping[str, Any]) -> str:
    """A base image's identity from ``docker image inspect``: the digest of its layers (their
    diff ids), platform and run config, the same on every engine and image store that holds the
    same image. Creation time and build history are left out: they are not content."""
    run = dict(inspected.get("Config") or {})
    content: dict[str, Any] = {
        "os": inspected.get("Os") or "linux",
        "architecture": inspected.get("Architecture") or "",
        "variant": inspected.get("Variant") or "",
        "layers": list((inspected.get("RootFS") or {}).get("Layers") or []),
        "config": {k: run[k] for k in _RUN_FIELDS if run.get(k)},
        "ports": sorted(run.get("ExposedPorts") or {}),
        "volumes": sorted(run.get("Volumes") or {}),
    }
    raw = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return "content:sha256:" + hashlib.sha256(raw).hexdigest()


def _pull(daemon: Daemon, image: str, ref: str, progress: Progress, stall: float | None) -> None:
    progress.note(image, f"pulling base image {ref}", State.WORKING)
    try:
        daemon.pull(ref, stall=stall)
    except DaemonError as err:
        # A failure in the stream: the engine's (the registry's) own words; else what failed.
        why = err.reason if isinstance(err, EngineStreamError) else err.detail
        raise BaseImageError(image, ref, f"pulling it failed: {why}", pull_failed=True) from None


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
def _machine_lock(
    tag: str, image: str, progress: Progress, lock_dir: Path, doing: str = "building"
) -> Iterator[None]:
    """One build (or pull, or push) of ``tag`` at a time on this machine. A waiter waits as long
    as the build takes (the builder's own stall bound ends a stuck one), but not on a builder
    that is stopped."""
    import filelock  # only a build needs it; a no-op build starts faster without it

    directory = ensure_private_dir(lock_dir)
    path = directory / (hashlib.sha256(tag.encode()).hexdigest()[:32] + ".lock")
    owner = path.with_suffix(".owner")
    lock = filelock.FileLock(path, mode=0o600, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        progress.note(image, f"waiting for another envkit process that is {doing} {tag}", State.WAITING)
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
