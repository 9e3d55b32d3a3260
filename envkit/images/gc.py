"""``envkit gc``: remove this stack's image tags whose keys are no longer current, and the
untagged images and lookup containers its builds left behind."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from envkit.config.model import StackConfig
from envkit.docker import labels
from envkit.docker.engine import Daemon, Image
from envkit.errors import EngineConflict, StateError
from envkit.fsutil import ensure_private_dir
from envkit.images.build import CurrentTags, image_tag, plan
from envkit.images.manifests import Manifests
from envkit.progress import Progress
from envkit.settings import Settings

NO_TAG = "<none>:<none>"  # how Docker 20.10 lists an untagged image's tags (newer engines: none)


@dataclass
class GcResult:
    """What gc removed (or, in a dry run, would remove) and what it kept because a container uses
    it: tags, and the IDs of untagged images (also listed in ``untagged``)."""

    removed: list[str] = field(default_factory=list)
    kept_in_use: list[str] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)  # which entries above are untagged images
    containers: list[str] = field(default_factory=list)  # lookup containers a killed build left

    def to_json(self) -> dict[str, list[str]]:
        return {
            "removed": self.removed,
            "kept_in_use": self.kept_in_use,
            "untagged": self.untagged,
            "containers": self.containers,
        }


def gc(
    config: StackConfig,
    daemon: Daemon,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> GcResult:
    """Remove this stack's image tags whose keys are not current, here or in another checkout,
    and the untagged images of this stack that a build left (see :func:`_leftover`).

    Only images labelled with this stack's name are considered, and only tags
    of the form ``<stack>/<image>:...`` are removed, so a tag someone added by
    hand keeps its image alive. A tag that another checkout of the same stack
    needed at its last build (recorded in the user's cache) is kept too, as
    long as that checkout exists. An image a container uses is kept, and said so.
    """
    settings = settings or Settings.from_env()
    the_plan = plan(config, daemon, progress=progress, stall=settings.build_stall)
    current = {the_plan.tag(name) for name in the_plan.order}
    current |= CurrentTags(settings.cache_dir, config.name).others(config.state_dir)
    result = GcResult()
    untagged: list[Image] = []
    for image in daemon.images(labels.selector(labels.PROJECT, config.name)):
        if image.labels.get(labels.PROJECT) != config.name:
            continue
        if all(tag == NO_TAG for tag in image.tags):
            untagged.append(image)
            continue
        for tag in image.tags:
            if tag in current or not tag.startswith(f"{config.name}/"):
                continue
            if dry_run:
                result.removed.append(tag)
                continue
            try:
                daemon.remove_image(tag)
                result.removed.append(tag)
            except EngineConflict:  # a container still uses it
                result.kept_in_use.append(tag)
    for image in untagged:
        _leftover(daemon, config.name, image, settings.lock_dir, dry_run=dry_run, result=result)
    _lookups(daemon, config.name, settings.lock_dir, dry_run=dry_run, result=result)
    if not dry_run:
        manifests = Manifests(config.state_dir / "manifests")
        for name in config.images:
            manifests.forget(name, {the_plan.inputs[name].key})
    return result


def _leftover(
    daemon: Daemon, stack: str, image: Image, lock_dir: Path, *, dry_run: bool, result: GcResult
) -> None:
    """Remove ``image``, untagged and labelled for ``stack``, if it is what a build of this stack
    made and never tagged (an ``envkit build`` killed between the engine making the image and
    envkit tagging it, or whose tagging failed).

    It must carry envkit's image labels (its name in the stack and its key), and must have got
    them from envkit's ``LABEL``: an image whose parent has the same ones is a step of a build on
    one of this stack's images (a classic build in progress, or the cache a failed one left for
    its next try) or an image someone made from one, and is left. It is left too while a build of
    its tag is running (that build holds the tag's build lock and tags it when done): gc holds
    that lock while it removes, so no build of that tag starts meanwhile.
    """
    name, key = image.labels.get(labels.IMAGE), image.labels.get(labels.KEY)
    if not name or not key:
        return  # not made by envkit's builders (only they add both)
    with _build_lock(lock_dir, image_tag(stack, name, key)) as free:
        if not free:
            return  # being built: its builder tags it
        found = daemon.inspect_image(image.id)
        if found is None or found.get("RepoTags"):
            return  # gone, or tagged, since it was listed
        own = _identity((found.get("Config") or {}).get("Labels"))
        if own[0] != stack:
            return
        parent = str(found.get("Parent") or "")
        if parent and _identity(daemon.image_labels(parent)) == own:
            return
        image_id = str(found.get("Id") or image.id)
        result.untagged.append(image_id)
        if dry_run:
            result.removed.append(image_id)
            return
        try:
            daemon.remove_image(image_id)
        except EngineConflict:  # a container still uses it
            result.kept_in_use.append(image_id)
        else:
            result.removed.append(image_id)


def _lookups(daemon: Daemon, stack: str, lock_dir: Path, *, dry_run: bool, result: GcResult) -> None:
    """Remove the containers an assembly of this stack's images looked into its parents through
    and did not remove (a build killed meanwhile): created, never started, labelled as such. One
    whose image's build is running (its build lock held) is that build's, and is left."""
    for container in daemon.containers(labels.selector(labels.LOOKUP, "1")):
        stack_of, name, key = _identity(container.labels)
        if stack_of != stack or not name or not key or container.state != "created":
            continue
        with _build_lock(lock_dir, image_tag(stack, name, key)) as free:
            if not free:
                continue
            result.containers.append(container.id)
            if not dry_run:
                daemon.remove_container(container.id)


def _identity(found: Mapping[str, str] | None) -> tuple[str | None, str | None, str | None]:
    """An image's stack, name in the stack and key, as its labels say."""
    found = found or {}
    return found.get(labels.PROJECT), found.get(labels.IMAGE), found.get(labels.KEY)


@contextlib.contextmanager
def _build_lock(lock_dir: Path, tag: str) -> Iterator[bool]:
    """Hold the machine-wide build lock of ``tag`` (the one
    :func:`envkit.images.build._machine_lock` takes around a build and its tagging) if it is
    free: True. False, without waiting, when a build holds it, or it cannot be taken at all."""
    import filelock  # only gc and builds need it

    path = lock_dir / (hashlib.sha256(tag.encode()).hexdigest()[:32] + ".lock")
    lock = filelock.FileLock(path, mode=0o600, thread_local=False)
    try:
        ensure_private_dir(lock_dir)
        lock.acquire(timeout=0)
    except (filelock.Timeout, OSError, StateError):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
