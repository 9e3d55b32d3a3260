"""Base images made from a Debian recipe (:mod:`envkit.config.recipe`): no registry needed.

envkit runs ``mmdebstrap`` with the recipe's suite, sources and pinned package
versions (``SOURCE_DATE_EPOCH`` from the recipe's snapshot), writes the root
filesystem as a tar, and loads it as one layer with a config of its own: the
recipe's ENV, CMD and WORKDIR, created at the snapshot's time. (``docker
import`` would stamp the current time: the same recipe would give another image
on every build.) The same recipe and mirror give the same image ID. The recipe (with the rest of the
image's context directory) is the image's key, so it is built once and cached
like any other image; images ``FROM`` it resolve to its tag.

The Debian mirror serves only the current version of each package: a pin that
is gone fails the build naming the package, and :func:`relock` (``envkit
relock``) pins what the mirror serves now.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envkit.config.model import StackConfig
from envkit.config.recipe import Recipe
from envkit.docker.engine import Daemon
from envkit.errors import BuildError, ConfigError
from envkit.fsutil import atomic_write_text
from envkit.progress import Progress, State

if TYPE_CHECKING:
    from envkit.images.facts import FactsCache, Node

LOG_TAIL = 30
# mmdebstrap copies these from the machine it runs on; Docker provides its own in every
# container, and the host's would make the image differ from one machine to the next.
HOST_FILES = ("etc/hostname", "etc/resolv.conf")
_GONE = re.compile(r"Version '([^']+)' for '([^']+)' was not found")


def command(recipe: Recipe, tool: str, output: Path) -> list[str]:
    """The mmdebstrap command line that writes ``recipe``'s rootfs to ``output`` (a tar)."""
    args = [tool, f"--variant={recipe.variant}", "--format=tar", "--verbose"]
    args += [f"--dpkgopt=path-exclude={pattern}" for pattern in recipe.exclude_paths]
    if recipe.packages:
        args.append("--include=" + ",".join(recipe.includes()))
    sources = [s.replace("{snapshot}", recipe.snapshot or "") for s in recipe.sources]
    return [*args, recipe.suite, str(output), *sources]


def image_config(recipe: Recipe, labels: Mapping[str, str], platform: str, diff_id: str) -> dict[str, Any]:
    """The image config of a recipe's rootfs layer: its ENV, CMD, WORKDIR and envkit's labels,
    created at the snapshot's time (the epoch without one)."""
    from envkit.images.archive import platform_fields, timestamp

    run: dict[str, Any] = {
        "Env": [f"{name}={value}" for name, value in sorted(recipe.env.items())] or None,
        "Cmd": list(recipe.cmd) or None,
        "WorkingDir": recipe.workdir or "",
        "Labels": dict(sorted(labels.items())),
    }
    created = timestamp(recipe.source_date_epoch() or 0)
    return {
        **platform_fields(platform),
        "created": created,
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": f"envkit: Debian recipe {recipe.file.name}"}],
    }


def build(
    daemon: Daemon,
    image: str,
    recipe: Recipe,
    labels: Mapping[str, str],
    progress: Progress,
    *,
    facts: FactsCache,
    stall: float | None = None,
) -> str:
    """Run mmdebstrap, load its tar with the recipe's config; return the new image's ID (untagged)."""
    tool = shutil.which("mmdebstrap")
    if tool is None:
        raise BuildError(
            image,
            "mmdebstrap is not installed, and this image is made from a Debian recipe "
            f"({recipe.file}); install it: apt-get install mmdebstrap",
        )
    env = dict(os.environ)
    epoch = recipe.source_date_epoch()
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
    gone: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="envkit-rootfs-") as tmp:
        output = Path(tmp) / "rootfs.tar"
        progress.note(
            image,
            f"building a Debian {recipe.suite} rootfs with mmdebstrap ({recipe.file.name})",
            State.WORKING,
        )
        try:
            proc = subprocess.Popen(
                command(recipe, tool, output),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                errors="replace",
            )
        except OSError as error:
            raise BuildError(image, f"cannot run mmdebstrap: {error}") from None
        with proc:  # closes the pipe, and waits for the process, however this block ends
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = raw.rstrip()
                    if not line:
                        continue
                    tail.append(line)
                    progress.log(image, line)
                    found = _GONE.search(line)
                    if found:
                        gone.append((found.group(2), found.group(1)))
                code = proc.wait()
            except BaseException:
                proc.kill()
                raise
        if gone:
            names = ", ".join(f"{name} {version}" for name, version in gone)
            raise BuildError(
                image,
                f"the package mirror no longer has the pinned {names}; the recipe must be re-locked",
                list(tail),
                fix=f"`envkit relock --image {image}` pins what the mirror has now (or edit "
                f"{recipe.file} by hand), then build again",
            )
        if code != 0:
            raise BuildError(image, f"mmdebstrap failed (exit code {code})", list(tail))
        progress.note(image, f"loading the rootfs ({output.stat().st_size / 1e6:.0f} MB)", State.WORKING)
        return _load(daemon, image, recipe, output, labels, facts=facts, stall=stall)


def _load(
    daemon: Daemon,
    image: str,
    recipe: Recipe,
    rootfs: Path,
    labels: Mapping[str, str],
    *,
    facts: FactsCache,
    stall: float | None,
) -> str:
    """Load mmdebstrap's tar as the image's one layer (see :func:`normalise`); its ID."""
    import tarfile

    from envkit.images import archive
    from envkit.images.facts import ImageFacts, apply_layer

    layer_path = rootfs.with_name("layer.tar")
    try:
        diff_id, headers = normalise(rootfs, layer_path, recipe)
    except (OSError, tarfile.TarError) as err:
        raise BuildError(image, f"mmdebstrap's rootfs tar cannot be read: {err}") from None
    finally:
        rootfs.unlink(missing_ok=True)  # the layer is its copy: half the disk
    config = image_config(recipe, labels, daemon.platform, diff_id)
    raw = archive.config_bytes(config)
    layer = archive.Blob(diff_id, layer_path.stat().st_size)
    image_id = archive.load(
        daemon,
        image,
        raw,
        layers=[layer],
        new_layers={diff_id: layer_path},
        workdir=layer_path.parent,
        stall=stall,
    )
    tree: dict[str, Node] = {}
    apply_layer(tree, headers)
    facts.put(image_id, ImageFacts(config, tree, [layer]))
    return image_id


def normalise(rootfs: Path, layer_path: Path, recipe: Recipe) -> tuple[str, list[Any]]:
    """Write mmdebstrap's tar ``rootfs`` as a layer tar at ``layer_path``: its diff id, and the
    headers written.

    The layer is the tar as mmdebstrap wrote it (sorted by name), each header
    rewritten the one same way: mtimes clamped to the snapshot's time, numeric
    owners only, and of the extended headers only the file capabilities and
    other xattrs kept. The host's files (:data:`HOST_FILES`) and the recipe's
    ``remove_paths`` (and links to what they hold) are left out.
    """
    import tarfile

    from envkit.images.archive import LayerWriter

    epoch = recipe.source_date_epoch()
    removed = HOST_FILES + tuple(path.strip("/") for path in recipe.remove_paths)
    headers: list[tarfile.TarInfo] = []
    with tarfile.open(rootfs, "r|") as source, LayerWriter(layer_path) as layer:
        for info in source:
            name = info.name.strip("/").removeprefix("./")
            if any(name == r or name.startswith(r + "/") for r in removed) or _links_into(info, removed):
                continue
            if epoch is not None and info.mtime > epoch:
                info.mtime = epoch
            info.mtime = int(info.mtime)
            info.pax_headers = {k: v for k, v in info.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            layer.add(info, source.extractfile(info) if info.isreg() else None)
            headers.append(info)
    return layer.diff_id, headers


def _links_into(info: Any, removed: tuple[str, ...]) -> bool:
    """Whether ``info`` is a link to a path that is left out: a hard link could not be made, a
    symlink would dangle (and its name may be machine-made, as a certificate's hash link is)."""
    if info.islnk():
        target = str(info.linkname).strip("/").removeprefix("./")
    elif info.issym():
        name = info.name.strip("/").removeprefix("./")
        target = posixpath.normpath(posixpath.join("/", posixpath.dirname(name), info.linkname)).strip("/")
    else:
        return False
    return any(target == r or target.startswith(r + "/") for r in removed)


# --- re-locking: pin what the mirror serves now -------------------------------------------------

_INST = re.compile(r"^Inst (\S+) \((\S+) ")


def resolve(image: str, recipe: Recipe, progress: Progress) -> dict[str, str]:
    """The version the recipe's sources would install now of each of its packages.

    Asks apt through ``mmdebstrap --simulate`` (the recipe's suite, variant and
    sources; nothing is downloaded but the package lists): a few seconds.
    """
    tool = shutil.which("mmdebstrap")
    if tool is None:
        raise BuildError(image, "mmdebstrap is not installed; install it: apt-get install mmdebstrap")
    unpinned = dataclasses.replace(recipe, packages=dict.fromkeys(recipe.packages, "*"))
    simulate = command(unpinned, tool, Path(os.devnull))
    simulate.insert(1, "--simulate")
    progress.note(image, f"asking the mirror for the current versions of {len(recipe.packages)} packages")
    try:
        done = subprocess.run(simulate, capture_output=True, text=True, errors="replace", check=False)
    except OSError as error:
        raise BuildError(image, f"cannot run mmdebstrap: {error}") from None
    output = (done.stdout + done.stderr).splitlines()
    if done.returncode != 0:
        raise BuildError(
            image, f"mmdebstrap --simulate failed (exit code {done.returncode})", output[-LOG_TAIL:]
        )
    found = {m.group(1).split(":")[0]: m.group(2) for m in map(_INST.match, output) if m}
    missing = [name for name in recipe.packages if name not in found]
    if missing:
        raise BuildError(
            image,
            f"the mirror offers no {', '.join(missing)} for {recipe.suite}",
            output[-LOG_TAIL:],
            fix=f"correct the package names in {recipe.file}, or its sources",
        )
    return {name: found[name] for name in recipe.packages}


def relock_text(text: str, versions: Mapping[str, str], snapshot: str) -> str:
    """The recipe's text with its ``[packages]`` pins set to ``versions`` and its snapshot to
    ``snapshot``; comments, order and every other line are kept as they are."""
    out = []
    table = ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            table = stripped.split("]")[0].strip("[ ")
        found = _PIN_LINE.match(line)
        value = None
        if found and table == "packages":
            value = versions.get(found.group(2))
        elif found and table == "debian" and found.group(2) == "snapshot":
            value = snapshot
        if found is None or value is None:
            out.append(line)
        else:
            out.append(f"{found.group(1)}{json.dumps(value)}{found.group(4)}")
    return "".join(out)


# `name = "value"  # comment`: groups are the prefix up to the value, the key, the value, the rest
_PIN_LINE = re.compile(r'^(\s*"?([A-Za-z0-9+._-]+)"?\s*=\s*)("[^"]*")(.*\n?)$', re.S)


@dataclass(frozen=True)
class Relocked:
    """What :func:`relock` found for one recipe image."""

    image: str
    recipe: Path
    changed: Mapping[str, tuple[str, str]]  # package -> (pinned, served now)
    written: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "recipe": str(self.recipe),
            "changed": {p: {"from": old, "to": new} for p, (old, new) in self.changed.items()},
            "written": self.written,
        }


def relock(
    config: StackConfig, images: list[str] | None, *, check: bool, progress: Progress
) -> list[Relocked]:
    """Pin each recipe's packages (of ``images``, or of every recipe image) to what its mirror
    serves now; with ``check``, only report. A recipe is rewritten in place, comments kept."""
    recipes = [n for n, spec in config.images.items() if spec.recipe is not None]
    for name in images or []:
        if name not in recipes:
            raise ConfigError(
                config.file,
                f"images.{name}",
                f"{name!r} is not an image made from a recipe (those are: {', '.join(recipes) or 'none'})",
                "name an image whose entry has recipe = ...",
            )
    results = []
    for name in images or recipes:
        recipe = config.images[name].recipe
        assert recipe is not None
        now = resolve(name, recipe, progress)
        changed = {p: (recipe.packages[p], v) for p, v in now.items() if recipe.packages[p] != v}
        if changed and not check:
            snapshot = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            text = relock_text(recipe.text, {p: new for p, (_, new) in changed.items()}, snapshot)
            atomic_write_text(recipe.file, text)
        results.append(Relocked(name, recipe.file, changed, written=bool(changed) and not check))
    return results
