"""The stack file's TOML form: ``envkit.toml``, or ``[tool.envkit]`` in pyproject.toml.

:func:`parse` validates every key, reads each image's Dockerfile (or recipe)
once, resolves which images build on which, and returns a frozen
:class:`~envkit.config.model.StackConfig`. Every problem is a
:class:`~envkit.errors.ConfigError` naming the file, the key and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from envkit import graph
from envkit.config import platform as platform_mod
from envkit.config import recipe as recipe_mod
from envkit.config.model import (
    DEFAULT_START_TIMEOUT,
    PULL_POLICIES,
    HealthCheck,
    ImageSpec,
    ServiceSpec,
    StackConfig,
    env_name,
)
from envkit.errors import ConfigError
from envkit.images import dockerfile as dockerfile_mod
from envkit.settings import PREFIX, host_problem, publish_problem

NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_STACK_KEYS = {"name", "pull", "cache", "compose", "host", "publish"}  # compose: read by config.find
_IMAGE_KEYS = {"context", "dockerfile", "recipe", "args", "target", "platform"}
_TOP_KEYS = {"stack", "images", "services"}
_SERVICE_KEYS = {"image", "ports", "environment", "command", "depends_on", "healthcheck", "start_timeout"}

# Builds a ConfigError for this file: (key, problem, fix).
_Err = Callable[[str, str, str], ConfigError]


def parse(data: dict[str, Any], *, file: Path, root: Path, prefix: str, state_dir: Path) -> StackConfig:
    """A stack from the TOML tables ``data`` of ``file`` (keys named with ``prefix``)."""

    def err(key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(file, prefix + key, problem, fix)

    _no_unknown(data, _TOP_KEYS, "", err)
    stack = _table(data, "stack", err, required=True)
    _no_unknown(stack, _STACK_KEYS, "stack.", err)
    name = stack.get("name")
    if not isinstance(name, str):
        raise err("stack.name", "missing or not a string", 'add name = "myapp" under [stack]')
    _check_name(name, "stack.name", err)
    pull = stack.get("pull", "missing")
    if pull not in PULL_POLICIES:
        raise err("stack.pull", f"{pull!r} is not a pull policy", f"use one of {', '.join(PULL_POLICIES)}")
    cache = stack.get("cache")
    if cache is not None:
        problem = repository_problem(cache) if isinstance(cache, str) else "not a string"
        if problem:
            raise err("stack.cache", problem, 'write cache = "REGISTRY/PATH", e.g. "ghcr.io/team/envkit"')
    host = stack.get("host")
    if host is not None:
        problem = host_problem(host) if isinstance(host, str) else "not a string"
        if problem:
            raise err("stack.host", problem, 'write host = "192.168.1.20" (a host name or IP address alone)')
    publish = stack.get("publish")
    if publish is not None:
        problem = publish_problem(publish) if isinstance(publish, str) else "not a string"
        if problem:
            raise err(
                "stack.publish", problem, 'write publish = "10.0.0.5" (an IP address of the engine\'s host)'
            )

    images_table = _table(data, "images", err, required=False)
    raw: dict[str, dict[str, Any]] = {}
    for image_name, entry in images_table.items():
        key = f"images.{image_name}"
        _check_name(image_name, key, err)
        if not isinstance(entry, dict):
            raise err(key, "must be a table", f"write [{key}] with context = ...")
        _no_unknown(entry, _IMAGE_KEYS, key + ".", err)
        raw[image_name] = entry

    images = {n: _image(n, e, root, err) for n, e in raw.items()}
    _check_platforms(images, err)
    images = _resolve_parents(images, err)
    services_table = _table(data, "services", err, required=False)
    services = {n: _service(n, e, images, err) for n, e in services_table.items()}
    _check_depends_on(services, err)
    _check_env_names(services, err)

    return StackConfig(
        name=name,
        root=root,
        file=file,
        pull=pull,
        state_dir=state_dir.resolve(),
        images=images,
        services=services,
        cache=cache,
        host=host.strip() if host is not None else None,
        publish=publish.strip() if publish is not None else None,
    )


def _image(name: str, entry: dict[str, Any], root: Path, err: _Err) -> ImageSpec:
    key = f"images.{name}"
    context_value = entry.get("context", f"images/{name}")
    if not isinstance(context_value, str):
        raise err(key + ".context", "must be a string path", 'write context = "images/NAME"')
    context = (root / context_value).resolve()
    if not context.is_dir():
        raise err(
            key + ".context",
            f"the build context {context} is not a directory",
            "create it, or set context to the directory holding the image's files",
        )
    if "recipe" in entry:
        return _recipe_image(name, entry, context, err)
    dockerfile_value = entry.get("dockerfile", "Dockerfile")
    if not isinstance(dockerfile_value, str):
        raise err(key + ".dockerfile", "must be a string path", 'write dockerfile = "Dockerfile"')
    dockerfile = (context / dockerfile_value).resolve()
    if not dockerfile.is_file():
        raise err(
            key + ".dockerfile",
            f"no Dockerfile at {dockerfile}",
            "create it, or set dockerfile to its path (relative to the context)",
        )
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise err(key + ".dockerfile", f"{dockerfile} is not UTF-8 text", "save it as UTF-8") from None

    args_value = entry.get("args", {})
    if not isinstance(args_value, dict):
        raise err(key + ".args", "must be a table of strings", 'write args = { NAME = "value" }')
    args = _strings_table(args_value, key + ".args", "a build arg must be a string or number", err)

    parsed = dockerfile_mod.parse(text)
    target = entry.get("target")
    if target is not None:
        if not isinstance(target, str):
            raise err(key + ".target", "must be a string", 'write target = "STAGE"')
        if target.lower() not in parsed.stages:
            stages = ", ".join(parsed.stages) or "none"
            raise err(
                key + ".target",
                f"{dockerfile} has no stage {target!r} (its stages: {stages})",
                "name a stage declared with `FROM ... AS NAME`, or remove target",
            )
    platform = entry.get("platform")
    if platform is not None and (not isinstance(platform, str) or "/" not in platform):
        raise err(key + ".platform", f"{platform!r} is not a platform", 'write platform = "linux/amd64"')
    if not any(i.keyword == "FROM" for i in parsed.instructions):
        raise err(key + ".dockerfile", f"{dockerfile} has no FROM instruction", "start it with FROM")
    refs = tuple(dict.fromkeys(r.ref for r in parsed.references(args)))
    return ImageSpec(
        name=name,
        context=context,
        dockerfile=dockerfile,
        dockerfile_text=text,
        args=args,
        target=target,
        platform=platform,
        parents=refs,  # split into parents/externals by _resolve_parents
        externals=(),
    )


def _recipe_image(name: str, entry: dict[str, Any], context: Path, err: _Err) -> ImageSpec:
    key = f"images.{name}"
    for other in ("dockerfile", "args", "target"):
        if other in entry:
            raise err(
                f"{key}.{other}",
                "an image made from a recipe has no Dockerfile, build args or target",
                f"remove {other}, or remove recipe to build from a Dockerfile",
            )
    value = entry["recipe"]
    if not isinstance(value, str):
        raise err(key + ".recipe", "must be a string path", 'write recipe = "recipe.toml"')
    path = (context / value).resolve()
    if not path.is_file():
        raise err(key + ".recipe", f"no recipe at {path}", "create it (see the README), or correct the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise err(key + ".recipe", f"{path} is not UTF-8 text", "save it as UTF-8") from None
    platform = entry.get("platform")
    if platform is not None:
        raise err(key + ".platform", "a recipe is built for the daemon's own platform", "remove platform")
    return ImageSpec(
        name=name,
        context=context,
        dockerfile=None,
        dockerfile_text="",
        args={},
        target=None,
        platform=None,
        parents=(),
        externals=(),
        recipe=recipe_mod.parse(path, text, key),
    )


def _resolve_parents(images: dict[str, ImageSpec], err: _Err) -> dict[str, ImageSpec]:
    resolved = {}
    for name, spec in images.items():
        refs = spec.parents
        parents = tuple(r for r in refs if r in images)
        externals = tuple(r for r in refs if r not in images)
        for ref in externals:
            if not _valid_reference(ref):
                raise err(
                    f"images.{name}.dockerfile",
                    f"{spec.dockerfile} names {ref!r}, which is neither an image of this stack "
                    f"({', '.join(sorted(images)) or 'none'}) nor a valid image reference",
                    "correct the FROM line, or add the image under [images]",
                )
        resolved[name] = ImageSpec(**{**spec.__dict__, "parents": parents, "externals": externals})

    cycle = graph.find_cycle({name: spec.parents for name, spec in resolved.items()})
    if cycle:
        raise err(
            f"images.{cycle[0]}",
            f"the images build on each other in a cycle: {' -> '.join(cycle)}",
            "make one of them start FROM an image outside the cycle",
        )
    return resolved


def _service(name: str, entry: Any, images: Mapping[str, ImageSpec], err: _Err) -> ServiceSpec:
    key = f"services.{name}"
    _check_name(name, key, err)
    if not isinstance(entry, dict):
        raise err(key, "must be a table", f'write [{key}] with image = "..."')
    _no_unknown(entry, _SERVICE_KEYS, key + ".", err)

    image = entry.get("image")
    if not isinstance(image, str) or not image:
        raise err(
            key + ".image",
            "missing or not a string",
            'name an [images] entry or a reference: image = "redis"',
        )
    if image not in images and not _valid_reference(image):
        raise err(
            key + ".image",
            f"{image!r} is neither an image of this stack ({', '.join(sorted(images)) or 'none'}) "
            "nor a valid image reference",
            'name an [images] entry, or a reference such as "redis:7-alpine"',
        )

    ports_value = entry.get("ports", [])
    if not isinstance(ports_value, list) or not all(_is_port(p) for p in ports_value):
        raise err(key + ".ports", "must be a list of container ports (1-65535)", "write ports = [8000]")
    ports = tuple(dict.fromkeys(ports_value))

    env_value = entry.get("environment", {})
    if not isinstance(env_value, dict):
        raise err(key + ".environment", "must be a table", 'write environment = { NAME = "value" }')
    environment = _strings_table(env_value, key + ".environment", "must be a string or number", err)
    _check_variable_names(environment, key + ".environment", err)

    command_value = entry.get("command")
    if command_value is not None and (
        not isinstance(command_value, list)
        or not command_value
        or not all(isinstance(a, str) for a in command_value)
    ):
        raise err(key + ".command", "must be a non-empty list of strings", 'write command = ["redis-server"]')
    command = None if command_value is None else tuple(command_value)

    deps_value = entry.get("depends_on", [])
    if not isinstance(deps_value, list) or not all(isinstance(d, str) for d in deps_value):
        raise err(key + ".depends_on", "must be a list of service names", 'write depends_on = ["db"]')

    timeout_value = entry.get("start_timeout", DEFAULT_START_TIMEOUT)
    if (
        isinstance(timeout_value, bool)
        or not isinstance(timeout_value, (int, float))
        or not _finite(timeout_value)
        or timeout_value <= 0
    ):
        raise err(key + ".start_timeout", "must be a positive number of seconds", "write start_timeout = 60")

    return ServiceSpec(
        name=name,
        image=image,
        ports=ports,
        environment=environment,
        command=command,
        depends_on=tuple(dict.fromkeys(deps_value)),
        healthcheck=_healthcheck(entry.get("healthcheck"), key + ".healthcheck", ports, err),
        start_timeout=float(timeout_value),
    )


def _strings_table(table: dict[str, Any], key: str, problem: str, err: _Err) -> dict[str, str]:
    """A TOML table of strings, numbers and booleans as strings (booleans as true/false)."""
    out: dict[str, str] = {}
    for name, raw in table.items():
        value = ("true" if raw else "false") if isinstance(raw, bool) else raw
        if not isinstance(value, (str, int, float)):
            raise err(f"{key}.{name}", problem, f'write {name} = "value"')
        if not _finite(value):
            raise err(f"{key}.{name}", f"{value} is not a finite number", f'write {name} = "value"')
        out[name] = str(value)
    return out


def _check_variable_names(environment: Mapping[str, str], key: str, err: _Err) -> None:
    """The engine passes a container's variables as ``NAME=value`` strings: a name holding ``=``
    is cut at it (``"A=B" = "x"`` is A with the value ``B=x``), an empty name is refused at the
    start, a NUL ends the string. Any other character is the container's business (as for
    docker and compose)."""
    for name, value in environment.items():
        if not name:
            raise err(key, "a variable has an empty name", 'give it a name (NAME = "value"), or remove it')
        where = f"{key}.{_quoted_key(name)}"
        if "\0" in name:
            raise err(where, "a variable name cannot hold a NUL character", "remove it from the name")
        before, _, after = name.partition("=")
        if "=" in name:
            meant = repr(after + "=" + value)
            seen = f"{before} with the value {meant}" if before else "a variable without a name"
            raise err(
                where,
                f"a variable name cannot hold '=': the engine would give the container {seen}",
                f"write the name without '=' (a value may hold one: {before or 'NAME'} = {meant})",
            )


def _quoted_key(name: str) -> str:
    """A TOML key as the file writes it: bare when it can be, else quoted."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\0", "\\u0000") + '"'


def _check_platforms(images: Mapping[str, ImageSpec], err: _Err) -> None:
    for name, spec in images.items():
        found = None if spec.platform is None else platform_mod.problem(spec.platform)
        if found:
            problem, value = found
            raise err(f"images.{name}.platform", problem, f"write platform = {value}")


def _finite(value: Any) -> bool:
    """False for the float values TOML allows that no setting means: nan, inf, and 1e400."""
    return not isinstance(value, float) or math.isfinite(value)


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _healthcheck(value: Any, key: str, ports: tuple[int, ...], err: _Err) -> HealthCheck:
    if value is None:
        return HealthCheck("image")
    forms = 'cmd = ["..."], or http = "/path" with port = N, or tcp = N'
    if not isinstance(value, dict):
        raise err(key, "must be a table", f"write healthcheck = {{ {forms} }}")
    kinds = [k for k in ("cmd", "http", "tcp") if k in value]
    if len(kinds) != 1:
        raise err(key, "needs exactly one of cmd, http or tcp", f"write healthcheck = {{ {forms} }}")
    kind = kinds[0]
    allowed = {"http", "port"} if kind == "http" else {kind}
    _no_unknown(value, allowed, key + ".", err)
    if kind == "cmd":
        cmd = value["cmd"]
        if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
            raise err(
                key + ".cmd", "must be a non-empty list of strings", 'write cmd = ["redis-cli", "ping"]'
            )
        return HealthCheck("cmd", cmd=tuple(cmd))
    port = value.get("port") if kind == "http" else value["tcp"]
    where = key + (".port" if kind == "http" else ".tcp")
    if not _is_port(port):
        raise err(where, "must be a container port (1-65535)", f"write {where.rsplit('.', 1)[1]} = 8000")
    if port not in ports:
        raise err(
            where,
            f"port {port} is not published: the check runs from the host, through the published port",
            f"add {port} to the service's ports",
        )
    if kind == "http":
        path = value["http"]
        if not isinstance(path, str) or not path.startswith("/"):
            raise err(key + ".http", "must be a path starting with '/'", 'write http = "/health"')
        return HealthCheck("http", path=path, port=port)
    return HealthCheck("tcp", port=port)


def _check_env_names(services: Mapping[str, ServiceSpec], err: _Err) -> None:
    seen: dict[str, str] = {}
    for name in services:
        other = seen.setdefault(env_name(name), name)
        if other != name:
            raise err(
                f"services.{name}",
                f"{name!r} and {other!r} give the same environment names ({PREFIX}{env_name(name)}_...)",
                "rename one of them",
            )


def _check_depends_on(services: Mapping[str, ServiceSpec], err: _Err) -> None:
    for name, spec in services.items():
        for dep in spec.depends_on:
            if dep not in services:
                raise err(
                    f"services.{name}.depends_on",
                    f"{dep!r} is not a service of this stack ({', '.join(sorted(services))})",
                    "name a [services] entry, or remove it",
                )
    cycle = graph.find_cycle({name: spec.depends_on for name, spec in services.items()})
    if cycle:
        raise err(
            f"services.{cycle[0]}.depends_on",
            f"the services depend on each other in a cycle: {' -> '.join(cycle)}",
            "remove one of the depends_on entries in the cycle",
        )


# Docker's reference grammar (distribution/reference): an optional registry of dot-separated host
# labels and a port, then path components, a tag and a digest. ".." is no host: "../x" is refused.
_HOST_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def _valid_reference(ref: str) -> bool:
    return bool(_REFERENCE.match(ref))


_REPOSITORY = re.compile(
    rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*$"
)


def repository_problem(value: str) -> str | None:
    """Why ``value`` cannot be a remote cache (``REGISTRY/PATH``: a repository, without a tag
    or digest), or None when it can."""
    if not value.strip():
        return "is empty (leave the setting out for no cache)"
    if "@" in value or ":" in value.rsplit("/", 1)[-1]:
        return f"{value!r} names a tag or digest: a cache is a repository path (envkit adds /<image>:<key>)"
    if not _REPOSITORY.match(value):
        return f"{value!r} is not a registry path (REGISTRY/PATH, with lower-case path components)"
    return None


def _check_name(name: str, key: str, err: _Err) -> None:
    if not NAME_PATTERN.match(name) or len(name) > 63:
        raise err(
            key,
            f"{name!r} is not a valid Docker name",
            "use lower-case letters and digits, separated by single '.', '_' or '-' (at most 63)",
        )


def _table(data: dict[str, Any], key: str, err: _Err, *, required: bool) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise err(key, f"the [{key}] table is missing", f"add [{key}] with at least name = ...")
        return {}
    if not isinstance(value, dict):
        raise err(key, "must be a table", f"write it as [{key}]")
    return value


def _no_unknown(table: dict[str, Any], known: set[str], prefix: str, err: _Err) -> None:
    for key in table:
        if key not in known:
            raise err(
                prefix + key,
                "unknown key",
                f"remove it; the keys allowed here are: {', '.join(sorted(known))}",
            )
