"""Where the stack is defined: the project root, its stack file, and loading it.

The root is ``ENVKIT_ROOT``, else the nearest directory upward from the
working directory that holds the stack file (``envkit.toml``, or a
pyproject.toml with ``[tool.envkit]``; ``ENVKIT_CONFIG`` names another file),
or, with neither, compose files (found as ``docker compose`` finds them:
:func:`envkit.config.compose.files`). An envkit.toml may also name compose
files itself: ``[stack] compose = ["compose.yaml", "compose.test.yaml"]``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from envkit import settings as settings_mod
from envkit.config import compose, toml
from envkit.config.model import StackConfig
from envkit.errors import ConfigError
from envkit.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

STACK_FILE = "envkit.toml"


def find_root(
    start: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    settings: Settings | None = None,
) -> Path:
    """The project root: ``ENVKIT_ROOT``, else the nearest directory upward holding a stack file."""
    settings = settings or Settings.from_env(environ)
    env = os.environ if environ is None else environ
    name = settings.config_name or STACK_FILE
    if settings.root is not None:
        root = settings.root.resolve()
        if _stack_file(root, name, env) is None:
            raise ConfigError(
                root,
                "",
                f"{settings_mod.ROOT} points at {root}, which holds no {name}"
                + (
                    ", no pyproject.toml with [tool.envkit] and no compose file" if name == STACK_FILE else ""
                ),
                f"point {settings_mod.ROOT} at your project's root, or unset it",
            )
        return root
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if _stack_file(directory, name, env) is not None:
            return directory
    if name != STACK_FILE:
        raise ConfigError(
            here,
            settings_mod.CONFIG,
            f"no {name} here or in any parent directory",
            f"set {settings_mod.CONFIG} to the name of a stack file at your project's root, or unset it",
        )
    raise ConfigError(
        here,
        "",
        f"no {STACK_FILE} (or pyproject.toml with [tool.envkit], or compose file) here or in any "
        "parent directory",
        f"create {STACK_FILE} (or {compose.NAMES[0]}) at your project's root (see the README), "
        f"or set {settings_mod.ROOT}",
    )


def _stack_file(
    directory: Path, name: str = STACK_FILE, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The file that defines ``directory``'s stack: the stack file, else (for the default name)
    a pyproject.toml with [tool.envkit], else the first compose file."""
    candidate = directory / name
    if candidate.is_file():
        return candidate
    if name != STACK_FILE:
        return None
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
            return None
        if "envkit" in data.get("tool", {}):
            return pyproject
    found = compose.files(directory, os.environ if environ is None else environ)
    return found[0] if found else None


def load(
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    settings: Settings | None = None,
) -> StackConfig:
    """Find, parse and validate the stack file (of ``root``, else of the project found upward)."""
    settings = settings or Settings.from_env(environ)
    env = os.environ if environ is None else environ
    root = find_root(settings=settings, environ=env) if root is None else Path(root).resolve()
    name = settings.config_name or STACK_FILE
    file = _stack_file(root, name, env)
    if file is None:
        raise ConfigError(root, "", f"no {name} here", f"create {name} (see the README)")
    if file.suffix != ".toml":
        return compose.load(
            root, compose.files(root, env), environ=env, state_dir=state_dir(root, file, settings)
        )
    try:
        data: dict[str, Any] = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(file, "", f"not valid TOML: {err}", "correct the TOML syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(file, "", "not UTF-8 text", "save the file as UTF-8") from None
    prefix = ""
    if file.name == "pyproject.toml":
        tool = data.get("tool")
        if not isinstance(tool, dict) or "envkit" not in tool:
            raise ConfigError(
                file, "tool.envkit", "there is no [tool.envkit] table", "add one, or name envkit.toml"
            )
        data = tool["envkit"]
        prefix = "tool.envkit."
        if not isinstance(data, dict):
            raise ConfigError(file, "tool.envkit", "must be a table", "write [tool.envkit.stack] ...")
    config = toml.parse(data, file=file, root=root, prefix=prefix, state_dir=state_dir(root, file, settings))
    named = data["stack"].get("compose")
    if named is None:
        return config
    if isinstance(named, str):
        named = [named]
    if not isinstance(named, list) or not named or not all(isinstance(n, str) and n for n in named):
        raise ConfigError(
            file,
            prefix + "stack.compose",
            "must be a compose file's path, or a list of them (merged in order)",
            'write compose = ["compose.yaml", "compose.test.yaml"]',
        )
    return compose.load(root, [root / n for n in named], environ=env, state_dir=config.state_dir, base=config)


def state_dir(root: Path, file: Path, settings: Settings) -> Path:
    """The stack's state directory. Each stack file of a checkout has its own: envkit.toml's is
    ``.envkit/``, envkit.alpine.toml's ``.envkit-alpine/`` (``ENVKIT_STATE_DIR`` overrides)."""
    if settings.state_dir is not None:
        return settings.state_dir.resolve()
    if file.name in (STACK_FILE, "pyproject.toml") or file.suffix != ".toml":  # or a compose file
        return (root / ".envkit").resolve()
    stem = file.name.removesuffix(".toml")
    return (root / f".envkit-{stem.removeprefix('envkit.') or stem}").resolve()
