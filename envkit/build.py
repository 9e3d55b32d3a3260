"""Ensure a stack's images exist: a local hit costs no build, a miss builds once.

``ensure`` computes every selected image's key (see :mod:`envkit.digest`),
asks the daemon once which of those tags already exist, and builds only the
misses: parents before children, independent images in parallel, each under a
machine-wide lock so that concurrent runs build a key once. Each build gets a
deterministic context tar written from the very files that were hashed, and a
file that changes while it is being sent fails the build instead of producing
an image that does not match its key.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from envkit import recipe as recipe_mod
from envkit import runtime
from envkit.config import ImageSpec, StackConfig
from envkit.digest import Hasher, Inputs, StatCache, explain, image_inputs, short_key, split_entry
from envkit.dockerfile import parse as parse_dockerfile
from envkit.errors import BaseImageError, BuildError, ConfigError, EnvkitError, ImageMissing
from envkit.fsutil import atomic_write_text, ensure_private_dir
from envkit.progress import Progress, Silent

LOG_TAIL = 30
_DOCKERFILE_IN_TAR = ".envkit.Dockerfile"


@dataclass
class ImageResult:
    image: str
    key: str
    tag: str
    status: str  # "built" or "cached"
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)  # why it was (re)built

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "key": self.key,
            "tag": self.tag,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "reasons": self.reasons,
        }


@dataclass(frozen=True)
class Plan:
    """The keys of the selected images, computed without building anything."""

    config: StackConfig
    order: list[str]
    inputs: dict[str, Inputs]
    hashed_files: int

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
    daemon: runtime.Daemon,
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
    for name in order:
        spec = config.images[name]
        files = hasher.context_files(spec, skip=[config.state_dir])
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
        )
    cache.save(hasher.started_ns, prune=names is None or set(order) == set(config.images))
    return Plan(config, order, inputs, hasher.hashed_files)


def ensure(
    config: StackConfig,
    daemon: runtime.Daemon,
    *,
    names: list[str] | None = None,
    pull: str | None = None,
    progress: Progress | None = None,
    jobs: int = 4,
    build: bool = True,
) -> list[ImageResult]:
    """Make every selected image present under its content-addressed tag.

    With ``build=False`` a missing image is an error instead of a build.
    """
    with runtime.daemon_errors():
        return _ensure(
            config, daemon, names=names, pull=pull, progress=progress or Silent(), jobs=jobs, build=build
        )


def _ensure(
    config: StackConfig,
    daemon: runtime.Daemon,
    *,
    names: list[str] | None,
    pull: str | None,
    progress: Progress,
    jobs: int,
    build: bool = True,
) -> list[ImageResult]:
    the_plan = plan(config, daemon, names=names, pull=pull, progress=progress)
    present = _present_keys(daemon, config.name)
    manifests = Manifests(config.state_dir / "manifests")
    results: dict[str, ImageResult] = {}
    misses: list[str] = []
    for name in the_plan.order:
        inputs = the_plan.inputs[name]
        tag = the_plan.tag(name)
        if present.get(tag) == inputs.key:
            results[name] = ImageResult(name, inputs.key, tag, "cached")
            manifests.record(name, inputs)
        else:
            reasons = explain(manifests.latest(name), inputs)
            results[name] = ImageResult(name, inputs.key, tag, "built", reasons=reasons)
            progress.note(name, "rebuilding: " + "; ".join(reasons))
            misses.append(name)
    if misses and not build:
        raise ImageMissing(misses, "; ".join(results[misses[0]].reasons))
    if misses:
        _build_misses(
            the_plan,
            daemon=daemon,
            misses=misses,
            results=results,
            manifests=manifests,
            progress=progress,
            jobs=jobs,
        )
    return [results[name] for name in the_plan.order]


def _build_misses(
    the_plan: Plan,
    *,
    daemon: runtime.Daemon,
    misses: list[str],
    results: dict[str, ImageResult],
    manifests: Manifests,
    progress: Progress,
    jobs: int,
) -> None:
    """Build in dependency order; images whose parents are done build side by side.

    Builds run on daemon threads: on Ctrl-C the main thread leaves at once, and
    the process's exit closes the build connections, which makes the daemon
    cancel those builds (no tag is applied to an unfinished one).
    """
    config = the_plan.config
    waiting = {name: {p for p in config.images[name].parents if p in misses} for name in misses}
    finished: queue.Queue[tuple[str, BaseException | None]] = queue.Queue()
    failures: list[EnvkitError] = []
    running = 0

    def work(name: str) -> None:
        try:
            _build_one(
                the_plan,
                daemon=daemon,
                name=name,
                result=results[name],
                manifests=manifests,
                progress=progress,
            )
        except BaseException as err:  # handed to the main thread, which re-raises it
            finished.put((name, err))
        else:
            finished.put((name, None))

    while True:
        if not failures:
            for name in [n for n, deps in waiting.items() if not deps][: max(1, jobs) - running]:
                del waiting[name]
                threading.Thread(target=work, args=(name,), name=f"envkit-build-{name}", daemon=True).start()
                running += 1
        if not running:
            break
        name, error = finished.get()
        running -= 1
        if error is None:
            for deps in waiting.values():
                deps.discard(name)
        elif isinstance(error, EnvkitError):
            failures.append(error)
        else:
            raise error
    if failures:
        raise failures[0]


def _build_one(
    the_plan: Plan,
    *,
    daemon: runtime.Daemon,
    name: str,
    result: ImageResult,
    manifests: Manifests,
    progress: Progress,
) -> None:
    config = the_plan.config
    spec = config.images[name]
    inputs = the_plan.inputs[name]
    started = time.monotonic()
    with _machine_lock(result.tag, name, progress):
        if _tag_has_key(daemon, result.tag, inputs.key):
            result.status = "cached"
            result.reasons = ["built meanwhile by another envkit process"]
        else:
            labels = {
                runtime.LABEL_STACK: config.name,
                runtime.LABEL_IMAGE: name,
                runtime.LABEL_KEY: inputs.key,
            }
            if spec.recipe is not None:
                image_id = recipe_mod.build(daemon, name, spec.recipe, labels, progress)
            else:
                text = parse_dockerfile(spec.dockerfile_text).rewrite(
                    spec.args,
                    {parent: the_plan.tag(parent) for parent in spec.parents},
                    labels=labels,
                    target=spec.target,
                )
                image_id = _docker_build(daemon, spec, inputs=inputs, dockerfile_text=text, progress=progress)
            repository, _, tag = result.tag.rpartition(":")
            daemon.client.tag(image_id, repository, tag)
    result.seconds = time.monotonic() - started
    manifests.record(name, inputs)
    progress.note(name, f"{result.status} {result.tag} in {result.seconds:.1f}s")


def _docker_build(
    daemon: runtime.Daemon,
    spec: ImageSpec,
    *,
    inputs: Inputs,
    dockerfile_text: str,
    progress: Progress,
) -> str:
    """Run the classic builder on a context written from ``inputs``; return the image ID.

    The tag is applied by the caller only after success, so a failed build
    never leaves a tag behind.
    """
    import requests
    from docker.errors import DockerException

    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
    image_id = ""
    failure = ""
    with tempfile.TemporaryFile() as context:
        write_context(context, spec, inputs, dockerfile_text)
        context.seek(0)
        try:
            stream = daemon.client.build(
                fileobj=context,
                custom_context=True,
                dockerfile=_DOCKERFILE_IN_TAR,
                buildargs=dict(spec.args),
                target=spec.target,
                platform=spec.platform,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                timeout=None,
            )
            # Read to the end even after an error (the daemon ends the stream
            # there), so that the connection is released rather than leaked.
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error", "")
                    failure = failure or str(detail).strip()
                text = chunk.get("stream") or chunk.get("status")
                if text:
                    for line in str(text).splitlines():
                        if line.strip():
                            tail.append(line)
                            progress.log(spec.name, line)
                aux = chunk.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = aux["ID"]
        except DockerException as err:
            runtime.release(err)
            raise BuildError(spec.name, str(err).strip(), list(tail)) from None
        except requests.exceptions.RequestException as err:
            raise BuildError(
                spec.name, f"lost the connection to the Docker daemon: {err}", list(tail)
            ) from None
    if failure:
        raise BuildError(spec.name, failure, list(tail))
    if not image_id:
        raise BuildError(spec.name, "the builder reported no image ID", list(tail))
    return image_id


def write_context(fileobj: IO[bytes], spec: ImageSpec, inputs: Inputs, dockerfile_text: str) -> None:
    """A deterministic tar of exactly the hashed files: sorted, owner 0, mtime 0.

    Each file's content is hashed again as it is written; one that no longer
    matches its digest fails the build. The Dockerfile travels under a private
    name that a generated ``.dockerignore`` tells the daemon to drop before
    ``COPY`` sees the context.
    """
    import tarfile  # only a build needs it; a no-op build starts faster without it

    def _tarinfo(name: str, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode = mode
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, entry in inputs.files.items():
            kind, mode, digest = split_entry(entry)
            info = _tarinfo(path, mode)
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "l":
                info.type = tarfile.SYMTYPE
                info.linkname = digest
                tar.addfile(info)
            else:
                try:
                    with open(spec.context / path, "rb") as f:
                        info.size = os.fstat(f.fileno()).st_size
                        checked = _CheckedReader(f, info.size)
                        tar.addfile(info, checked)
                        unchanged = checked.hexdigest() == digest
                except OSError:  # deleted or truncated since it was hashed
                    unchanged = False
                if not unchanged:
                    raise BuildError(
                        spec.name,
                        f"{spec.context / path} changed while the build was being prepared; "
                        "run the build again",
                    )
        for name, data in (
            (_DOCKERFILE_IN_TAR, dockerfile_text.encode("utf-8")),
            (".dockerignore", f".dockerignore\n{_DOCKERFILE_IN_TAR}\n".encode()),
        ):
            info = _tarinfo(name, 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


class _CheckedReader(io.RawIOBase):
    """Reads at most ``size`` bytes of a file, hashing what passes through."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f = f
        self._left = size
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        if self._f.read(1):  # grew since it was measured
            self._hash.update(b"\0")
        return self._hash.hexdigest()


def base_identity(daemon: runtime.Daemon, image: str, ref: str, policy: str, progress: Progress) -> str:
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


def _pull(daemon: runtime.Daemon, image: str, ref: str, progress: Progress) -> None:
    import requests
    from docker.errors import DockerException

    progress.note(image, f"pulling base image {ref}")
    errors = []
    try:
        # docker-py splits the reference into repository and tag or digest.
        for chunk in daemon.client.pull(
            ref, stream=True, decode=True
        ):  # read to the end: no leaked connection
            if "error" in chunk:
                errors.append(str(chunk["error"]))
    except (DockerException, requests.exceptions.RequestException) as err:
        runtime.release(err)
        errors.append(str(err).strip())
    if errors:
        raise BaseImageError(image, ref, f"pulling it failed: {errors[0]}")


def _present_keys(daemon: runtime.Daemon, stack: str) -> dict[str, str]:
    """Tag -> key label of every image of this stack present locally (one daemon call)."""
    present: dict[str, str] = {}
    for image in daemon.images(f"{runtime.LABEL_STACK}={stack}"):
        key = (image.get("Labels") or {}).get(runtime.LABEL_KEY, "")
        for tag in image.get("RepoTags") or []:
            present[tag] = key
    return present


def _tag_has_key(daemon: runtime.Daemon, tag: str, key: str) -> bool:
    found = daemon.inspect_image(tag)
    labels = (found or {}).get("Config", {}).get("Labels") or {}
    return bool(labels.get(runtime.LABEL_KEY) == key)


def lock_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where machine-wide build locks live (per user): ENVKIT_LOCK_DIR or the user cache."""
    env = os.environ if environ is None else environ
    if env.get("ENVKIT_LOCK_DIR"):
        return Path(env["ENVKIT_LOCK_DIR"])
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "envkit" / "locks"


@contextmanager
def _machine_lock(tag: str, image: str, progress: Progress) -> Iterator[None]:
    import filelock  # only a build needs it; a no-op build starts faster without it

    directory = ensure_private_dir(lock_dir())
    path = directory / (hashlib.sha256(tag.encode()).hexdigest()[:32] + ".lock")
    lock = filelock.FileLock(path, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        progress.note(image, f"waiting for another envkit process that is building {tag}")
        lock.acquire()  # a dead holder's flock is released by the kernel: no stale wait
    try:
        yield
    finally:
        lock.release()


class Manifests:
    """The inputs of each image as last built or seen, to explain the next miss.

    ``<dir>/<image>/<key>.json`` holds an image's inputs, ``<dir>/<image>/latest``
    names the key last recorded.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def record(self, image: str, inputs: Inputs) -> None:
        folder = ensure_private_dir(self.directory / image)
        path = folder / f"{inputs.key}.json"
        if not path.exists():
            atomic_write_text(path, json.dumps(inputs.to_json(), separators=(",", ":")))
        latest = folder / "latest"
        try:
            current = latest.read_text(encoding="utf-8").strip()
        except OSError:
            current = ""
        if current != inputs.key:
            atomic_write_text(latest, inputs.key)

    def latest(self, image: str) -> Inputs | None:
        folder = self.directory / image
        try:
            key = (folder / "latest").read_text(encoding="utf-8").strip()
            return Inputs.from_json(json.loads((folder / f"{key}.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def forget(self, image: str, keep: set[str]) -> None:
        """Drop recorded inputs except those of the keys in ``keep``."""
        folder = self.directory / image
        if not folder.is_dir():
            return
        for path in folder.glob("*.json"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)
        if not any(folder.glob("*.json")):
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class GcResult:
    removed: list[str] = field(default_factory=list)
    kept_in_use: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, list[str]]:
        return {"removed": self.removed, "kept_in_use": self.kept_in_use}


def gc(
    config: StackConfig,
    daemon: runtime.Daemon,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> GcResult:
    """Remove this stack's image tags whose keys are not current.

    Only images labelled with this stack's name are considered, and only tags
    of the form ``<stack>/<image>:...`` are removed, so a tag someone added by
    hand keeps its image alive.
    """
    with runtime.daemon_errors():
        return _gc(config, daemon, dry_run=dry_run, progress=progress)


def _gc(config: StackConfig, daemon: runtime.Daemon, *, dry_run: bool, progress: Progress | None) -> GcResult:
    from docker.errors import APIError

    the_plan = plan(config, daemon, progress=progress)
    current = {the_plan.tag(name) for name in the_plan.order}
    result = GcResult()
    for image in daemon.images(f"{runtime.LABEL_STACK}={config.name}"):
        labels = image.get("Labels") or {}
        if labels.get(runtime.LABEL_STACK) != config.name:
            continue
        for tag in image.get("RepoTags") or []:
            if tag in current or not tag.startswith(f"{config.name}/"):
                continue
            if dry_run:
                result.removed.append(tag)
                continue
            try:
                daemon.client.remove_image(tag)
                result.removed.append(tag)
            except APIError as err:
                if err.status_code == 409:  # a container still uses it
                    result.kept_in_use.append(tag)
                else:
                    raise
    if not dry_run:
        manifests = Manifests(config.state_dir / "manifests")
        for name in config.images:
            manifests.forget(name, {the_plan.inputs[name].key})
    return result
