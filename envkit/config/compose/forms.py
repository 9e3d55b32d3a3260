"""One compose file, made ready to merge: interpolated, typed, and in canonical (long) forms.

Compose interpolates each file before anything else, casts the few values that must be
booleans or numbers (``tty: ${TTY}``), and merges files in their long syntax: a port
``"127.0.0.1:8080:80/tcp"`` becomes ``{host_ip, published, target, protocol}``, a volume
``./data:/data:ro`` becomes ``{type: bind, source, target, read_only}``, a list of
``KEY=value`` becomes a mapping. Everything after this module reads only the long forms.
"""

from __future__ import annotations

from typing import Any

from envkit.config.compose.interpolation import InterpolationError, Substitution
from envkit.config.compose.located import Key, Located
from envkit.config.compose.yamldoc import scalar_text
from envkit.config.model import STARTED

_BOOLEANS = [
    ("services", "*", "healthcheck", "disable"),
    ("services", "*", "tty"),
    ("services", "*", "stdin_open"),
    ("services", "*", "privileged"),
    ("services", "*", "read_only"),
    ("services", "*", "init"),
    ("services", "*", "volumes", "*", "read_only"),
    ("services", "*", "volumes", "*", "bind", "create_host_path"),
    ("services", "*", "volumes", "*", "volume", "nocopy"),
    ("services", "*", "depends_on", "*", "required"),
    ("services", "*", "depends_on", "*", "restart"),
    ("services", "*", "env_file", "*", "required"),
    ("volumes", "*", "external"),
    ("networks", "*", "external"),
    ("secrets", "*", "external"),
    ("configs", "*", "external"),
]
_INTEGERS = [
    ("services", "*", "healthcheck", "retries"),
    ("services", "*", "ports", "*", "target"),
    ("services", "*", "deploy", "replicas"),
    ("services", "*", "scale"),
]
_TRUE = {"y", "yes", "true", "on"}
_FALSE = {"n", "no", "false", "off"}
_VOLUME_OPTIONS = {"ro", "rw", "z", "Z", "nocopy", "consistent", "cached", "delegated"}
_PROPAGATION = {"shared", "slave", "private", "rshared", "rslave", "rprivate"}


def _matches(path: Key, patterns: list[tuple[str, ...]]) -> bool:
    return any(
        len(p) == len(path) and all(a in ("*", b) for a, b in zip(p, path, strict=True)) for p in patterns
    )


def interpolate(doc: Located, substitute: Substitution) -> None:
    """Substitute ``${...}`` in every value of ``doc`` (not in keys), then cast what compose casts."""

    def walk(value: Any, path: Key) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        try:
            text, unset = substitute.tracked(value)
        except InterpolationError as err:
            raise doc.error(path, err.problem, err.fix) from None
        if unset:
            doc.unset[path] = unset  # an error about this value will say so
        if _matches(path, _BOOLEANS):
            lowered = text.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise doc.error(path, f"{text!r} is not true or false", "write true or false")
        if _matches(path, _INTEGERS) and text.strip().lstrip("+-").isdigit():
            return int(text)
        return text

    doc.data = walk(doc.data, ())


def canonical(doc: Located) -> None:
    """Rewrite ``doc``'s services in compose's long forms (after validation: the shapes are known)."""
    services = doc.data.get("services")
    if not isinstance(services, dict):
        return
    for name, service in services.items():
        if isinstance(service, dict):
            services[name] = _service(doc, ("services", name), service)


def _service(doc: Located, at: Key, service: dict[str, Any]) -> dict[str, Any]:
    out = dict(service)
    build = out.get("build")
    if isinstance(build, str):
        out["build"] = {"context": build}
    elif isinstance(build, dict) and "args" in build:
        out["build"] = {**build, "args": mapping(build["args"], pass_through=True)}
    for key in ("environment", "labels"):
        if key in out:
            out[key] = mapping(out[key], pass_through=key == "environment")
    if "depends_on" in out:
        out["depends_on"] = _depends_on(out["depends_on"])
    if isinstance(out.get("networks"), list):
        out["networks"] = {n: None for n in out["networks"]}
    if "ports" in out:
        out["ports"] = [
            p for i, item in enumerate(out["ports"]) for p in _ports(doc, (*at, "ports", i), item)
        ]
    if "volumes" in out:
        out["volumes"] = [_volume(doc, (*at, "volumes", i), item) for i, item in enumerate(out["volumes"])]
    if isinstance(out.get("tmpfs"), str):
        out["tmpfs"] = [out["tmpfs"]]
    for key in ("secrets", "configs"):
        if key in out:
            out[key] = [{"source": item} if isinstance(item, str) else dict(item) for item in out[key]]
    if "env_file" in out:
        files = out["env_file"] if isinstance(out["env_file"], list) else [out["env_file"]]
        out["env_file"] = [
            {"path": f, "required": True} if isinstance(f, str) else {"required": True, **f} for f in files
        ]
    return out


def mapping(value: Any, *, pass_through: bool) -> dict[str, str | None]:
    """A list of ``KEY=value`` (or a mapping) as a mapping of strings. ``KEY`` alone (or a null
    value) is None where it means "from the environment" (``pass_through``), else ""."""
    out: dict[str, str | None] = {}
    if isinstance(value, dict):
        for key, raw in value.items():
            out[key] = None if raw is None and pass_through else scalar_text(raw)
        return out
    for item in value or []:
        key, equals, rest = scalar_text(item).partition("=")
        out[key] = rest if equals else (None if pass_through else "")
    return out


def _depends_on(value: Any) -> dict[str, dict[str, Any]]:
    if isinstance(value, list):
        return {name: {"condition": STARTED, "required": True, "restart": False} for name in value}
    return {
        name: {"condition": STARTED, "required": True, "restart": False, **(entry or {})}
        for name, entry in value.items()
    }


def _port_number(doc: Located, path: Key, text: str, what: str) -> list[int]:
    """A port, or a range ``8000-8002``, as numbers."""
    low, dash, high = text.partition("-")
    try:
        first, last = int(low), int(high) if dash else int(low)
    except ValueError:
        first = last = 0
    if not (1 <= first <= last <= 65535):
        raise doc.error(
            path, f"{text!r} is not a {what} port (1-65535, or a range such as 8000-8002)", 'write "8000"'
        )
    return list(range(first, last + 1))


def _ports(doc: Located, path: Key, item: Any) -> list[dict[str, Any]]:
    """One entry of ``ports`` in long form: one mapping per container port (a range is several)."""
    if isinstance(item, dict):
        entry = {"protocol": "tcp", **item}
        target = entry.get("target")
        numbers = _port_number(doc, (*path, "target"), scalar_text(target), "container")
        if len(numbers) != 1:
            raise doc.error(
                (*path, "target"), "the long syntax takes one port, not a range", "write one port"
            )
        entry["target"] = numbers[0]
        if entry.get("published") is not None:
            entry["published"] = scalar_text(entry["published"])
        return [entry]
    text = scalar_text(item)
    spec, slash, protocol = text.partition("/")
    host_ip = None
    if spec.startswith("["):  # [::1]:8080:80
        host_ip, _, spec = spec[1:].partition("]")
        spec = spec.removeprefix(":")
    parts = spec.rsplit(":", 2)
    if host_ip is None and len(parts) == 3:
        host_ip = parts[0]
    target_text = parts[-1]
    published = parts[-2] if len(parts) >= 2 else None
    targets = _port_number(doc, path, target_text, "container")
    if published:
        _port_number(doc, path, published, "host")
    return [
        {
            "target": target,
            "published": published or None,
            "host_ip": host_ip or None,
            "protocol": protocol if slash else "tcp",
            "short": text,
        }
        for target in targets
    ]


def _volume(doc: Located, path: Key, item: Any) -> dict[str, Any]:
    """One entry of ``volumes`` in long form."""
    if isinstance(item, dict):
        return dict(item)
    text = scalar_text(item)
    parts = text.split(":")
    if len(parts) > 3 or not all(parts):
        raise doc.error(
            path,
            f"{text!r} is not a volume (SOURCE:TARGET[:MODE], or TARGET alone)",
            'write "data:/var/lib/data", "./src:/src:ro" or "/tmp/cache"',
        )
    if len(parts) == 1:
        return {"type": "volume", "target": parts[0], "short": text}
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    for option in options:
        if option not in _VOLUME_OPTIONS | _PROPAGATION:
            raise doc.error(
                path,
                f"{option!r} is not a volume mode",
                "use ro or rw, and z or Z, nocopy, or a propagation mode (rshared...)",
            )
    bind = source.startswith((".", "/", "~"))
    entry: dict[str, Any] = {
        "type": "bind" if bind else "volume",
        "source": source,
        "target": target,
        "read_only": "ro" in options,
        "short": text,
    }
    if "nocopy" in options:
        entry["volume"] = {"nocopy": True}
    if {"z", "Z"} & set(options):
        entry["bind"] = {"selinux": "z" if "z" in options else "Z"}
    return entry
