"""The resolved stack as ``envkit config`` shows it (like ``docker compose config``): from
envkit.toml or compose files alike, with the notes of what was left out and why."""

from __future__ import annotations

import json
import re
from typing import Any

from envkit.config.model import HealthCheck, Mount, StackConfig


def to_json(config: StackConfig) -> dict[str, Any]:
    """The stack as plain JSON values: every key is always there, so scripts can rely on it."""
    return {
        "stack": config.name,
        "id": config.id,
        "root": str(config.root),
        "files": [str(f) for f in config.files or (config.file,)],
        "state_dir": str(config.state_dir),
        "pull": config.pull,
        "images": {
            name: {
                "context": str(spec.context),
                "dockerfile": None if spec.dockerfile is None else str(spec.dockerfile),
                "recipe": None if spec.recipe is None else str(spec.recipe.file),
                "args": dict(spec.args),
                "target": spec.target,
                "platform": spec.platform,
                "tags": list(spec.also_tags),
                "parents": list(spec.parents),
            }
            for name, spec in config.images.items()
        },
        "services": {
            name: {
                "image": spec.image,
                "built": spec.image in config.images,
                "ports": list(spec.ports),
                "environment": dict(spec.environment),
                "command": None if spec.command is None else list(spec.command),
                "entrypoint": None if spec.entrypoint is None else list(spec.entrypoint),
                "depends_on": {dep: spec.condition(dep) for dep in spec.depends_on},
                "healthcheck": healthcheck(spec.healthcheck),
                "start_timeout": spec.start_timeout,
                "oneshot": spec.oneshot,
                "volumes": [mount(m) for m in spec.mounts],
                "aliases": list(spec.aliases),
                "user": spec.user,
                "working_dir": spec.working_dir,
                "labels": dict(spec.labels),
                "stop_signal": spec.stop_signal,
                "tty": spec.tty,
                "stdin_open": spec.stdin_open,
                "pull_policy": spec.pull_policy,
            }
            for name, spec in config.services.items()
        },
        "volumes": list(config.volumes),
        "notes": list(config.notes),
    }


def healthcheck(check: HealthCheck) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": check.kind}
    if check.kind == "cmd":
        out["cmd"] = list(check.cmd)
    if check.kind == "http":
        out["path"] = check.path
    if check.kind in ("http", "tcp"):
        out["port"] = check.port
    return out


def mount(m: Mount) -> dict[str, Any]:
    """A mount in compose's long syntax."""
    out: dict[str, Any] = {"type": m.kind}
    if m.kind != "tmpfs":
        out["source"] = m.source or None  # None: an anonymous volume
    out["target"] = m.target
    out["read_only"] = m.read_only
    return out


def to_text(config: StackConfig) -> str:
    """The same, for people: YAML-like, leaving out what is empty or the default."""
    data = to_json(config)
    for service in data["services"].values():
        for key in ("built", "oneshot", "tty", "stdin_open"):
            if not service[key]:
                del service[key]
    lines: list[str] = []
    _emit(data, 0, lines)
    return "\n".join(lines)


_PLAIN = re.compile(r"^[A-Za-z0-9_./@+-][A-Za-z0-9_./@+:;=, <>()'-]*$")
# Strings a reader would take for something else (a number, 22:22, a date, a boolean, nothing):
# quoted, as compose config quotes them.
_LOOKS_TYPED = re.compile(r"^(?:[-+.]?[0-9].*|yes|no|on|off|true|false|null|~|y|n)$", re.I)


def _scalar(value: Any) -> str:
    if (
        isinstance(value, str)
        and _PLAIN.match(value)
        and not _LOOKS_TYPED.match(value)
        and not value.endswith((":", " "))
    ):
        return value
    return json.dumps(value)


def _empty(value: Any) -> bool:
    return value is None or value in ([], {})


def _emit(value: Any, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if _empty(item):
                continue
            if isinstance(item, (dict, list)) and not _inline(item):
                lines.append(f"{pad}{key}:")
                _emit(item, indent + 1, lines)
            else:
                lines.append(f"{pad}{key}: {_inline(item) or _scalar(item)}")
        return
    for item in value:
        if isinstance(item, dict):
            first, *rest = [f"{k}: {_inline(v) or _scalar(v)}" for k, v in item.items() if not _empty(v)]
            lines.append(f"{pad}- {first}")
            lines.extend(f"{pad}  {line}" for line in rest)
        else:
            lines.append(f"{pad}- {_scalar(item)}")


def _inline(value: Any) -> str:
    """A short list of scalars on one line (``[8000, 8001]``), else ""."""
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        text = "[" + ", ".join(_scalar(v) for v in value) + "]"
        return text if len(text) <= 80 else ""
    return ""
