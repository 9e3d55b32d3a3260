"""A Debian recipe: an image's root filesystem from pinned Debian packages (the model and its parser).

An ``[images.NAME]`` entry with ``recipe = "recipe.toml"`` is made from a
recipe instead of a Dockerfile (see :mod:`envkit.images.recipe` for how it is
built). A recipe::

    [debian]
    suite = "bookworm"
    variant = "minbase"                     # mmdebstrap's --variant (default minbase)
    snapshot = "20261125T000000Z"           # the lock's date: file mtimes, and {snapshot} in sources
    sources = ["deb http://deb.debian.org/debian bookworm main"]
    exclude_paths = ["/usr/share/doc/*"]    # dpkg path-exclude patterns
    remove_paths = ["/etc/ssl/private/ssl-cert-snakeoil.key"]  # left out of the image

    [packages]                              # name = exact version, or "*" for the mirror's current one
    redis-server = "5:7.0.15-1~deb12u10"

    [image]
    env = { LANG = "C.UTF-8" }
    cmd = ["/bin/bash"]
"""

from __future__ import annotations

import calendar
import posixpath
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envkit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_SNAPSHOT = re.compile(r"^\d{8}T\d{6}Z$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION = re.compile(r"^[A-Za-z0-9.+~:-]+$")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS = {"debian", "packages", "image"}
_DEBIAN_KEYS = {"suite", "variant", "snapshot", "sources", "exclude_paths", "remove_paths"}
_IMAGE_KEYS = {"env", "cmd", "workdir"}
_VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important")


@dataclass(frozen=True)
class Recipe:
    """A validated recipe; ``text`` is the file as read (it is what the image's key covers)."""

    file: Path
    text: str
    suite: str
    variant: str
    snapshot: str | None
    sources: tuple[str, ...]
    exclude_paths: tuple[str, ...]
    packages: Mapping[str, str]  # name -> version ("*": whatever the mirror has)
    env: Mapping[str, str]
    cmd: tuple[str, ...]
    workdir: str | None
    # Paths (with all under them) left out of the rootfs: what package scripts generate at
    # random on every install (a key, a database cluster) would make every build another image.
    remove_paths: tuple[str, ...] = ()

    def includes(self) -> list[str]:
        """mmdebstrap's --include items: ``name=version`` for each pinned package."""
        return [name if version == "*" else f"{name}={version}" for name, version in self.packages.items()]

    def source_date_epoch(self) -> int | None:
        if self.snapshot is None:
            return None
        return calendar.timegm(time.strptime(self.snapshot, "%Y%m%dT%H%M%SZ"))


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
    removes = _strings(debian.get("remove_paths", []), "debian.remove_paths", err)
    for path in removes:
        if not path.startswith("/") or posixpath.normpath(path) != path or path == "/":
            raise err(
                "debian.remove_paths",
                f"{path!r} is not an absolute, normalised path below /",
                'write paths such as "/etc/ssl/private/ssl-cert-snakeoil.key"',
            )

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
        text=text,
        suite=suite,
        variant=variant,
        snapshot=snapshot,
        sources=tuple(sources),
        exclude_paths=tuple(excludes),
        remove_paths=tuple(removes),
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
