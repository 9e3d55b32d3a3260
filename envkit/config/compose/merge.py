"""Several compose files as one: compose-spec's merge rules ("Merge and override").

- Mappings merge key by key; a scalar (or a value of another type) replaces.
- Sequences append, except ``command``, ``entrypoint`` and ``healthcheck.test``, which
  replace, and the unique resources, which merge entry by entry on their key:
  ``ports`` on {ip, target, published, protocol}, ``volumes``, ``secrets`` and ``configs``
  on their target. ``env_file`` entries are unique by path.
- A value tagged ``!reset`` removes what the files before set; ``!override`` replaces it
  whole instead of merging.

Both sides are in canonical (long) form (:mod:`envkit.config.compose.forms`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envkit.config.compose.located import Key, Located

_REPLACED = {"command", "entrypoint"}


def merge(base: dict[str, Any], doc: Located) -> dict[str, Any]:
    """``doc`` merged on top of ``base`` (neither is changed)."""
    result = _merge(base, doc.data, (), doc)
    assert isinstance(result, dict)
    return result


def _merge(base: Any, over: Any, path: Key, doc: Located) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            here = (*path, key)
            if here in doc.resets:
                out.pop(key, None)
            elif here in doc.overrides or key not in out:
                out[key] = _fresh(value, here, doc)
            else:
                out[key] = _merge(out[key], value, here, doc)
        return out
    if isinstance(base, list) and isinstance(over, list) and not _replaced(path):
        unique = _unique_key(path)
        if unique is None:
            return base + [v for v in over if not (_scalar(v) and v in base)]
        out_list = list(base)
        for item in over:
            key = unique(item)
            index = next((i for i, old in enumerate(out_list) if unique(old) == key), None)
            if index is None:
                out_list.append(item)
            elif isinstance(item, dict) and isinstance(out_list[index], dict):
                out_list[index] = {**out_list[index], **item}
            else:
                out_list[index] = item
        return out_list
    return _fresh(over, path, doc)


def _fresh(value: Any, path: Key, doc: Located) -> Any:
    """A value new to the result, without what it marks ``!reset`` inside it."""
    if isinstance(value, dict):
        return {k: _fresh(v, (*path, k), doc) for k, v in value.items() if (*path, k) not in doc.resets}
    return value


def _scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _replaced(path: Key) -> bool:
    if len(path) == 3 and path[0] == "services" and path[2] in _REPLACED:
        return True
    return len(path) == 4 and path[0] == "services" and path[2:] == ("healthcheck", "test")


_UNIQUE: dict[str, Callable[[Any], Any]] = {
    "ports": lambda p: (p.get("host_ip"), p.get("target"), p.get("published"), p.get("protocol", "tcp")),
    "volumes": lambda v: v.get("target"),
    "secrets": lambda s: _target(s, "/run/secrets/"),
    "configs": lambda c: _target(c, "/"),
    "env_file": lambda f: f.get("path"),
}


def _unique_key(path: Key) -> Callable[[Any], Any] | None:
    """How entries of the list at ``path`` are told apart, for the unique resources."""
    if len(path) != 3 or path[0] != "services":
        return None
    return _UNIQUE.get(str(path[2]))


def _target(entry: dict[str, Any], prefix: str) -> str:
    target = entry.get("target") or entry.get("source", "")
    return target if str(target).startswith("/") else prefix + str(target)
