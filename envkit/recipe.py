"""Base images made from pinned Debian packages: no registry needed.

An ``[images.NAME]`` entry with ``recipe = "recipe.toml"`` is not built from a
Dockerfile: envkit runs ``mmdebstrap`` with the recipe's suite, sources and
pinned package versions, writes the root filesystem as a tar, and ``docker
import``\\ s it with the recipe's ENV and CMD. The recipe (with the rest of the
image's context directory) is the image's key, so it is built once and cached
like any other image; images ``FROM`` it resolve to its tag.

A recipe::

    [debian]
    suite = "bookworm"
    variant = "minbase"                     # mmdebstrap's --variant (default minbase)
    snapshot = "20261125T000000Z"           # the lock's date: file mtimes, and {snapshot} in sources
    sources = ["deb http://deb.debian.org/debian bookworm main"]
    exclude_paths = ["/usr/share/doc/*"]    # dpkg path-exclude patterns

    [packages]                              # name = exact version, or "*" for the mirror's current one
    redis-server = "5:7.0.15-1~deb12u10"

    [image]
    env = { LANG = "C.UTF-8" }
    cmd = ["/bin/bash"]
"""

from __future__ import annotations

import calendar
import collections
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envkit.errors import BuildError, ConfigError
from envkit.progress import Progress

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

BUILDER = "envkit-recipe/1"
LOG_TAIL = 30
_SNAPSHOT = re.compile(r"^\d{8}T\d{6}Z$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION = re.compile(r"^[A-Za-z0-9.+~:-]+$")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GONE = re.compile(r"Version '([^']+)' for '([^']+)' was not found")
_KEYS = {"debian", "packages", "image"}
_DEBIAN_KEYS = {"suite", "variant", "snapshot", "sources", "exclude_paths"}
_IMAGE_KEYS = {"env", "cmd", "workdir"}
_VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important")


@dataclass(frozen=True)
class Recipe:
    file: Path
    suite: str
    variant: str
    snapshot: str | None
    sources: tuple[str, ...]
    exclude_paths: tuple[str, ...]
    packages: Mapping[str, str]  # name -> version ("*": whatever the mirror has)
    env: Mapping[str, str]
    cmd: tuple[str, ...]
    workdir: str | None

    def includes(self) -> list[str]:
        """mmdebstrap's --include items: ``name=version`` for each pinned package."""
        return [name if version == "*" else f"{name}={version}" for name, version in self.packages.items()]

    def source_date_epoch(self) -> int | None:
        if self.snapshot is None:
            return None
        return calendar.timegm(time.strptime(self.snapshot, "%Y%m%dT%H%M%SZ"))

    def command(self, tool: str, output: Path) -> list[str]:
        """The mmdebstrap command line that writes this recipe's rootfs to ``output`` (a tar)."""
        args = [tool, f"--variant={self.variant}", "--format=tar", "--verbose"]
        args += [f"--dpkgopt=path-exclude={pattern}" for pattern in self.exclude_paths]
        if self.packages:
            args.append("--include=" + ",".join(self.includes()))
        sources = [s.replace("{snapshot}", self.snapshot or "") for s in self.sources]
        return [*args, self.suite, str(output), *sources]

    def changes(self, labels: Mapping[str, str]) -> list[str]:
        """``docker import --change`` instructions: the recipe's ENV, CMD, WORKDIR and envkit's labels."""
        out = [f"ENV {name}={_quote(value)}" for name, value in sorted(self.env.items())]
        if self.cmd:
            out.append("CMD " + json.dumps(list(self.cmd), ensure_ascii=False))
        if self.workdir:
            out.append(f"WORKDIR {self.workdir}")
        out += [f"LABEL {_quote(k)}={_quote(v)}" for k, v in sorted(labels.items())]
        return out


def _quote(value: str) -> str:
    """A Dockerfile double-quoted word that Docker reads back as exactly ``value``: no
    variable expansion (``$`` is escaped), non-ASCII kept as is."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def parse(file: Path, text: str, key: str) -> Recipe:
    """Validate a recipe; every mistake is a ConfigError naming the recipe file and key."""

    def err(where: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(file, where, problem, fix)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise err("", f"not valid TOML: {error}", f"correct the recipe's syntax ({key}.recipe)") from None
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise err(unknown[0], "unknown table in a recipe", f"use only: {', '.join(sorted(_KEYS))}")
    debian = _table(data, "debian", err)
    unknown = sorted(set(debian) - _DEBIAN_KEYS)
    if unknown:
        raise err(f"debian.{unknown[0]}", "unknown key", f"use only: {', '.join(sorted(_DEBIAN_KEYS))}")
    suite = debian.get("suite")
    if not isinstance(suite, str) or not suite:
        raise err("debian.suite", "missing or not a string", 'write suite = "bookworm"')
    variant = debian.get("variant", "minbase")
    if variant not in _VARIANTS:
        raise err("debian.variant", f"{variant!r} is not an mmdebstrap variant", f"use one of {_VARIANTS}")
    snapshot = debian.get("snapshot")
    if snapshot is not None and (not isinstance(snapshot, str) or not _is_snapshot(snapshot)):
        raise err(
            "debian.snapshot", f"{snapshot!r} is not a timestamp", 'write snapshot = "20261125T000000Z"'
        )
    sources = _strings(debian.get("sources", []), "debian.sources", err)
    if not sources:
        raise err(
            "debian.sources",
            "no package source is given",
            'write sources = ["deb http://deb.debian.org/debian bookworm main"]',
        )
    if any("{snapshot}" in s for s in sources) and snapshot is None:
        raise err("debian.sources", "a source uses {snapshot} but no snapshot is set", "set debian.snapshot")
    excludes = _strings(debian.get("exclude_paths", []), "debian.exclude_paths", err)

    packages: dict[str, str] = {}
    for name, version in _table(data, "packages", err, required=False).items():
        if not _PACKAGE.fullmatch(name):
            raise err(
                f"packages.{name}", "not a Debian package name", "use the package's name as apt knows it"
            )
        if not isinstance(version, str) or not (version == "*" or _VERSION.fullmatch(version)):
            raise err(
                f"packages.{name}",
                f"{version!r} is not a version",
                f'pin the exact version (`apt-cache policy {name}`), or write "*" for the current one',
            )
        packages[name] = version

    image = _table(data, "image", err, required=False)
    unknown = sorted(set(image) - _IMAGE_KEYS)
    if unknown:
        raise err(f"image.{unknown[0]}", "unknown key", f"use only: {', '.join(sorted(_IMAGE_KEYS))}")
    env = image.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) and "\n" not in v for v in env.values()):
        raise err("image.env", "must be a table of one-line strings", 'write env = { LANG = "C.UTF-8" }')
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise err(f"image.env.{name}", "not an environment variable name", "use letters, digits and _")
    cmd = _strings(image.get("cmd", []), "image.cmd", err)
    workdir = image.get("workdir")
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
        raise err("image.workdir", f"{workdir!r} is not an absolute path", 'write workdir = "/app"')
    return Recipe(
        file=file,
        suite=suite,
        variant=variant,
        snapshot=snapshot,
        sources=tuple(sources),
        exclude_paths=tuple(excludes),
        packages=packages,
        env=dict(env),
        cmd=tuple(cmd),
        workdir=workdir,
    )


def _is_snapshot(text: str) -> bool:
    if not _SNAPSHOT.fullmatch(text):
        return False
    try:
        time.strptime(text, "%Y%m%dT%H%M%SZ")
    except ValueError:  # a month 13, a February 30th
        return False
    return True


def _table(data: dict[str, Any], key: str, err: Any, *, required: bool = True) -> dict[str, Any]:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise err(key, "missing or not a table", f"add a [{key}] table")
    return value


def _strings(value: Any, key: str, err: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise err(key, "must be a list of strings", f'write {key.rsplit(".", 1)[-1]} = ["..."]')
    return list(value)


def build(daemon: Any, image: str, recipe: Recipe, labels: Mapping[str, str], progress: Progress) -> str:
    """Run mmdebstrap, import its tar with the recipe's config; return the new image's ID (untagged)."""
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
        progress.note(image, f"building a Debian {recipe.suite} rootfs with mmdebstrap ({recipe.file.name})")
        try:
            proc = subprocess.Popen(
                recipe.command(tool, output),
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
        progress.note(image, f"importing the rootfs ({output.stat().st_size / 1e6:.0f} MB)")
        return _import(daemon, image, output, recipe.changes(labels))


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
    command = unpinned.command(tool, Path(os.devnull))
    command.insert(1, "--simulate")
    progress.note(image, f"asking the mirror for the current versions of {len(recipe.packages)} packages")
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
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


def _import(daemon: Any, image: str, tar: Path, changes: list[str]) -> str:
    import requests
    from docker.errors import DockerException

    try:
        answer = daemon.client.import_image_from_file(str(tar), changes=changes)
    except DockerException as error:
        from envkit import runtime

        runtime.release(error)
        raise BuildError(image, f"docker import failed: {str(error).strip()}") from None
    except requests.exceptions.RequestException as error:
        raise BuildError(image, f"lost the connection to the Docker daemon: {error}") from None
    for line in str(answer).splitlines():
        try:
            chunk = json.loads(line)
        except ValueError:
            continue
        if chunk.get("error"):
            raise BuildError(image, f"docker import failed: {chunk['error']}")
        status = str(chunk.get("status", ""))
        if status.startswith("sha256:"):
            return status
    raise BuildError(image, f"docker import reported no image ID: {str(answer)[:200]}")
