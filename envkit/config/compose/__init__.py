"""Compose files as stack definitions: a second loader beside :mod:`envkit.config.toml`.

:func:`files` finds a folder's compose files as ``docker compose`` finds them;
:func:`load` reads them into the same frozen
:class:`~envkit.config.model.StackConfig` that envkit.toml gives, one step per
module:

1. :mod:`.yamldoc`: each file's YAML, with compose's meaning and each value's line;
2. :mod:`.interpolation` and :mod:`.forms`: ``${VAR}`` from the process environment
   over the ``.env`` file, then the long forms of the short syntaxes;
3. :mod:`.schema`: validation against the compose specification's JSON schema;
4. :mod:`.merge`: the files merged in order, by compose's rules;
5. :mod:`.resolve`: compose's meanings as envkit's specs, with notes on what was left out.

Every problem is a :class:`~envkit.errors.ConfigError` naming the file, the line,
the service and the key. Only this package's functions import the YAML and schema
libraries, when a compose stack is loaded: a stack defined in envkit.toml never
pays for them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from envkit.config.model import StackConfig
from envkit.errors import ConfigError

if TYPE_CHECKING:
    from envkit.config.compose.located import Origins
    from envkit.config.compose.resolve import Notes

# docker compose's names, in its order of preference.
NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDES = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)
FILE, PROFILES, PROJECT_NAME, PATH_SEPARATOR = (
    "COMPOSE_FILE",
    "COMPOSE_PROFILES",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_PATH_SEPARATOR",
)
_COMPOSE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def files(directory: Path, environ: Mapping[str, str]) -> list[Path]:
    """The compose files of ``directory`` in merge order, as ``docker compose`` finds them:
    ``COMPOSE_FILE`` (from the environment, or the folder's ``.env``; relative to the folder),
    else the first of :data:`NAMES` there with the first of :data:`OVERRIDES` on top. Empty
    when the folder has none."""
    named = environ.get(FILE)
    if named is None and (directory / ".env").is_file():
        named = _dotenv_value(directory / ".env", FILE)
    if named:
        separator = environ.get(PATH_SEPARATOR) or os.pathsep
        paths = [directory / p.strip() for p in named.split(separator) if p.strip()]
        return paths if paths and paths[0].is_file() else []
    found = [directory / n for n in NAMES if (directory / n).is_file()]
    if not found:
        return []
    overrides = [directory / n for n in OVERRIDES if (directory / n).is_file()]
    return [found[0], *overrides[:1]]


def _dotenv_value(path: Path, name: str) -> str | None:
    """One variable of a .env file, for finding the stack (a file that cannot be read: None)."""
    from envkit.config.compose.interpolation import read_dotenv

    try:
        return read_dotenv(path, {}).get(name)
    except ConfigError:
        return None


def load(
    root: Path,
    paths: Sequence[Path],
    *,
    environ: Mapping[str, str],
    state_dir: Path,
    base: StackConfig | None = None,
) -> StackConfig:
    """The stack of compose files ``paths`` (merged in order), found at ``root``.

    ``base`` is the stack of an envkit.toml whose ``[stack] compose`` names the files: its
    name, pull policy and other [stack] settings stay, and its own images and services join
    the compose file's.
    """
    from envkit.config.compose import forms, merge, resolve, schema, yamldoc
    from envkit.config.compose.interpolation import Substitution, read_dotenv
    from envkit.config.compose.located import Origins

    if not paths:
        raise ConfigError(root, "", "no compose file here", f"create {NAMES[0]}, or set {FILE}")
    project_dir = Path(os.path.abspath(paths[0])).parent
    dotenv = project_dir / ".env"
    environment = {**(read_dotenv(dotenv, environ) if dotenv.is_file() else {}), **environ}
    substitute = Substitution(environment.get)
    model: dict[str, object] = {}
    origins = Origins()
    for path in paths:
        located = yamldoc.read(path, _text(path))
        forms.interpolate(located, substitute)
        schema.validate(located)
        forms.canonical(located)
        origins.record(located, indices=not model)
        model = merge.merge(model, located)
    notes = resolve.Notes()
    for name in sorted(substitute.unset):
        notes.add(f"the variable {name} is not set: an empty string is used (as compose does)")
    profiles = frozenset(p.strip() for p in environment.get(PROFILES, "").split(",") if p.strip())
    ctx = resolve.Context(project_dir, environment, profiles, origins, notes)
    images, services, volumes = resolve.resolve(model, ctx, {} if base is None else base.images)
    if base is not None:
        for name in set(base.services) & set(services):
            raise origins.error(("services", name), f"envkit.toml has a service {name!r} too", "rename one")
        return replace(
            base,
            images=images,
            services={**base.services, **services},
            volumes=volumes,
            files=(base.file, *paths),
            notes=notes.all(),
        )
    name = _stack_name(model.get("name"), environment, project_dir, origins, notes)
    return StackConfig(
        name=name,
        root=root,
        file=paths[0],
        pull="missing",
        state_dir=state_dir.resolve(),
        images=images,
        services=services,
        volumes=volumes,
        files=tuple(paths),
        notes=notes.all(),
    )


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "does not exist", f"create it, or correct {FILE}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not UTF-8 text", "save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(path, "", f"cannot be read: {err.strerror}", "make it a readable file") from None


def _stack_name(
    given: object, environ: Mapping[str, str], project_dir: Path, origins: Origins, notes: Notes
) -> str:
    """compose's project name: ``name:``, else ``COMPOSE_PROJECT_NAME``, else the folder's name
    normalised as compose normalises it; then made a valid envkit name (a note says so)."""
    from envkit.config.toml import NAME_PATTERN

    if given is not None or environ.get(PROJECT_NAME):
        name = str(given) if given is not None else environ[PROJECT_NAME]
        if not _COMPOSE_NAME.match(name):
            problem = (
                f"{name!r} is not a compose project name: lower-case letters, digits, '-' and '_', "
                "starting with a letter or digit"
            )
            if given is not None:
                raise origins.error(("name",), problem, 'write e.g. name: "myapp"')
            raise ConfigError("environment", PROJECT_NAME, problem, f"set {PROJECT_NAME}=myapp, or unset it")
    else:
        name = "".join(re.findall(r"[a-z0-9_-]", project_dir.name.lower())).lstrip("_-")
    envkit_name = re.sub(r"[_-]*([_-])[_-]*", r"\1", name).strip("_-")[:63].strip("_-")
    if not NAME_PATTERN.match(envkit_name):
        raise origins.error(
            ("name",),
            f"no stack name: the folder {project_dir.name!r} gives none",
            'add name: "myapp" at the top of the compose file (or set COMPOSE_PROJECT_NAME)',
        )
    if envkit_name != name:
        notes.add(f"the stack is named {envkit_name!r} ({name!r} made a valid Docker name)")
    return envkit_name
