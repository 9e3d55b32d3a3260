"""The stack file: ``envkit.toml`` (or ``[tool.envkit]`` in pyproject.toml).

:func:`load` finds the file, validates every key, reads each image's Dockerfile
once, resolves which images build on which, and returns frozen dataclasses.
Every problem is a :class:`~envkit.errors.ConfigError` naming the file, the key
and the fix. Nothing here reads the environment except through ``environ``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envkit import dockerfile as dockerfile_mod
from envkit.errors import ConfigError
from envkit.recipe import Recipe
from envkit.recipe import parse as parse_recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

STACK_FILE = "envkit.toml"
PULL_POLICIES = ("missing", "always", "never")
NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_STACK_KEYS = {"name", "pull"}
_IMAGE_KEYS = {"context", "dockerfile", "recipe", "args", "target", "platform"}
_TOP_KEYS = {"stack", "images", "services"}
_SERVICE_KEYS = {"image", "ports", "environment", "command", "depends_on", "healthcheck", "start_timeout"}
DEFAULT_START_TIMEOUT = 60.0  # seconds a service may take to become healthy

# Builds a ConfigError for this file: (key, problem, fix).
_Err = Callable[[str, str, str], ConfigError]


@dataclass(frozen=True)
class ImageSpec:
    """One ``[images.NAME]`` entry, with its Dockerfile read and its references resolved."""

    name: str
    context: Path
    dockerfile: Path
    dockerfile_text: str
    args: Mapping[str, str]
    target: str | None
    platform: str | None
    parents: tuple[str, ...]  # other images of this stack it builds on
    externals: tuple[str, ...]  # image references from outside the stack
    # A Debian recipe (see envkit.recipe) instead of a Dockerfile: ``dockerfile``
    # and ``dockerfile_text`` are then the recipe's path and text.
    recipe: Recipe | None = None


@dataclass(frozen=True)
class HealthCheck:
    """How envkit decides that a service is up.

    ``kind`` is ``cmd`` (run ``cmd`` in the container; exit 0 is healthy),
    ``http`` (GET ``path`` on the published ``port``; a 2xx or 3xx answer),
    ``tcp`` (the published ``port`` is served) or ``image`` (the image's own
    Docker HEALTHCHECK, or "running" when it has none).
    """

    kind: str
    cmd: tuple[str, ...] = ()
    path: str = ""
    port: int = 0

    def describe(self) -> str:
        if self.kind == "cmd":
            return f"command {list(self.cmd)!r}"
        if self.kind == "http":
            return f"HTTP GET {self.path} on port {self.port}"
        if self.kind == "tcp":
            return f"TCP port {self.port}"
        return "the image's HEALTHCHECK (or running, when it has none)"


@dataclass(frozen=True)
class ServiceSpec:
    """One ``[services.NAME]`` entry."""

    name: str
    image: str  # an [images] entry of this stack, or an external reference
    ports: tuple[int, ...]
    environment: Mapping[str, str]
    command: tuple[str, ...] | None
    depends_on: tuple[str, ...]
    healthcheck: HealthCheck
    start_timeout: float


@dataclass(frozen=True)
class StackConfig:
    name: str
    root: Path
    file: Path
    pull: str
    state_dir: Path
    images: Mapping[str, ImageSpec]
    services: Mapping[str, ServiceSpec] = field(default_factory=dict)

    def order(self, names: list[str] | None = None) -> list[str]:
        """Image names with every parent before its children (``names`` plus their parents)."""
        wanted = list(self.images) if names is None else names
        out: list[str] = []

        def visit(name: str) -> None:
            if name in out:
                return
            for parent in self.images[name].parents:
                visit(parent)
            out.append(name)

        for name in wanted:
            visit(name)
        return out

    def service_order(self, names: list[str] | None = None) -> list[str]:
        """Service names with every dependency before its dependents (``names`` plus depends_on)."""
        wanted = list(self.services) if names is None else names
        out: list[str] = []

        def visit(name: str) -> None:
            if name in out:
                return
            for dep in self.services[name].depends_on:
                visit(dep)
            out.append(name)

        for name in wanted:
            visit(name)
        return out


def find_root(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The project root: ENVKIT_ROOT, else the nearest directory upward holding a stack file."""
    env = os.environ if environ is None else environ
    name = stack_file_name(env)
    if env.get("ENVKIT_ROOT"):
        root = Path(env["ENVKIT_ROOT"]).resolve()
        if _stack_file(root, name) is None:
            raise ConfigError(
                root,
                "",
                f"ENVKIT_ROOT points at {root}, which holds no {name}"
                + (" and no pyproject.toml with [tool.envkit]" if name == STACK_FILE else ""),
                "point ENVKIT_ROOT at your project's root, or unset it",
            )
        return root
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if _stack_file(directory, name) is not None:
            return directory
    if name != STACK_FILE:
        raise ConfigError(
            here,
            "ENVKIT_CONFIG",
            f"no {name} here or in any parent directory",
            "set ENVKIT_CONFIG to the name of a stack file at your project's root, or unset it",
        )
    raise ConfigError(
        here,
        "",
        f"no {STACK_FILE} (or pyproject.toml with [tool.envkit]) here or in any parent directory",
        f"create {STACK_FILE} at your project's root (see the README), or set ENVKIT_ROOT",
    )


def stack_file_name(environ: Mapping[str, str] | None = None) -> str:
    """The stack file's name: ENVKIT_CONFIG (e.g. ``envkit.alpine.toml``), else ``envkit.toml``."""
    env = os.environ if environ is None else environ
    name = env.get("ENVKIT_CONFIG", "").strip() or STACK_FILE
    if "/" in name or not name.endswith(".toml"):
        raise ConfigError(
            "environment",
            "ENVKIT_CONFIG",
            f"{name!r} is not the name of a .toml file",
            "set it to a stack file's name at the project root, e.g. ENVKIT_CONFIG=envkit.alpine.toml",
        )
    return name


def _stack_file(directory: Path, name: str = STACK_FILE) -> Path | None:
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
    return None


def load(root: Path | None = None, environ: Mapping[str, str] | None = None) -> StackConfig:
    """Find, parse and validate the stack file."""
    env = os.environ if environ is None else environ
    root = find_root(None, env) if root is None else Path(root).resolve()
    name = stack_file_name(env)
    file = _stack_file(root, name)
    if file is None:
        raise ConfigError(root, "", f"no {name} here", f"create {name} (see the README)")
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
    return _parse(data, file=file, root=root, prefix=prefix, env=env)


def _parse(
    data: dict[str, Any], *, file: Path, root: Path, prefix: str, env: Mapping[str, str]
) -> StackConfig:
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
    images = _resolve_parents(images, err)
    services_table = _table(data, "services", err, required=False)
    services = {n: _service(n, e, images, err) for n, e in services_table.items()}
    _check_depends_on(services, err)
    _check_env_names(services, err)

    # Each stack file of a checkout has its own state: envkit.toml in .envkit/,
    # envkit.alpine.toml in .envkit-alpine/.
    default = ".envkit" if file.name in (STACK_FILE, "pyproject.toml") else f".envkit-{_variant(file.name)}"
    state_dir = Path(env["ENVKIT_STATE_DIR"]) if env.get("ENVKIT_STATE_DIR") else root / default
    return StackConfig(
        name=name,
        root=root,
        file=file,
        pull=pull,
        state_dir=state_dir.resolve(),
        images=images,
        services=services,
    )


def _variant(file_name: str) -> str:
    stem = file_name.removesuffix(".toml")
    return stem.removeprefix("envkit.") or stem


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
    args: dict[str, str] = {}
    for arg, raw_value in args_value.items():
        value = ("true" if raw_value else "false") if isinstance(raw_value, bool) else raw_value
        if not isinstance(value, (str, int, float)):
            raise err(f"{key}.args.{arg}", "a build arg must be a string or number", f'write {arg} = "value"')
        args[arg] = str(value)

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
        dockerfile=path,
        dockerfile_text=text,
        args={},
        target=None,
        platform=None,
        parents=(),
        externals=(),
        recipe=parse_recipe(path, text, key),
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

    cycle = _find_cycle({name: spec.parents for name, spec in resolved.items()})
    if cycle:
        raise err(
            f"images.{cycle[0]}",
            f"the images build on each other in a cycle: {' -> '.join(cycle)}",
            "make one of them start FROM an image outside the cycle",
        )
    return resolved


def _find_cycle(edges: Mapping[str, tuple[str, ...]]) -> list[str]:
    """A cycle in the graph (``[a, b, a]``), or an empty list; every edge must name a node."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> list[str]:
        if state.get(name) == 2:
            return []
        if state.get(name) == 1:
            return [*path[path.index(name) :], name]
        state[name] = 1
        for target in edges[name]:
            found = visit(target, [*path, name])
            if found:
                return found
        state[name] = 2
        return []

    for name in edges:
        found = visit(name, [])
        if found:
            return found
    return []


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
    environment: dict[str, str] = {}
    for var, raw in env_value.items():
        value = ("true" if raw else "false") if isinstance(raw, bool) else raw
        if not isinstance(value, (str, int, float)):
            raise err(f"{key}.environment.{var}", "must be a string or number", f'write {var} = "value"')
        environment[var] = str(value)

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
    if isinstance(timeout_value, bool) or not isinstance(timeout_value, (int, float)) or timeout_value <= 0:
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


def env_name(service: str) -> str:
    """The service's part of ENVKIT_<SERVICE>_HOST: non-alphanumerics become '_', upper case."""
    return "".join(ch if ch.isalnum() else "_" for ch in service).upper()


def _check_env_names(services: Mapping[str, ServiceSpec], err: _Err) -> None:
    seen: dict[str, str] = {}
    for name in services:
        other = seen.setdefault(env_name(name), name)
        if other != name:
            raise err(
                f"services.{name}",
                f"{name!r} and {other!r} give the same environment names (ENVKIT_{env_name(name)}_...)",
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
    cycle = _find_cycle({name: spec.depends_on for name, spec in services.items()})
    if cycle:
        raise err(
            f"services.{cycle[0]}.depends_on",
            f"the services depend on each other in a cycle: {' -> '.join(cycle)}",
            "remove one of the depends_on entries in the cycle",
        )


_REFERENCE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def _valid_reference(ref: str) -> bool:
    return bool(_REFERENCE.match(ref))


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
