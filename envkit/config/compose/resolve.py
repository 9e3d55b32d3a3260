"""The merged compose model -> envkit's specs: images, services, volumes, and notes.

This is where compose's meanings become envkit's (see the README's "From docker
compose"): a service with ``build:`` gets an image of the stack named after it; ports
are container ports, published on 127.0.0.1 wherever the file asked; health checks
run as envkit's ``cmd`` checks; a service that another waits for with
``service_completed_successfully`` is a one-shot; every service is on the stack's one
network. What envkit leaves out is said in a note, or is an error where running
without it would be wrong.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envkit import graph
from envkit.config import toml
from envkit.config.compose.interpolation import read_dotenv
from envkit.config.compose.located import Key, Origins
from envkit.config.compose.yamldoc import scalar_text
from envkit.config.model import (
    COMPLETED,
    DEFAULT_START_TIMEOUT,
    HealthCheck,
    ImageSpec,
    Mount,
    ServiceSpec,
)
from envkit.errors import ConfigError

# Service keys envkit runs without, and why (said once per key, naming the services).
IGNORED = {
    "container_name": "containers are named <stack id>-<service>, so several stacks run side by side",
    "restart": "a service that stops is replaced when the stack is next acquired",
    "attach": "envkit shows a service's log when it fails",
    "logging": "envkit reads logs from Docker's default driver",
    "develop": "watch mode is for development, not test runs",
    "hostname": "services reach each other by service name and aliases",
    "domainname": "services reach each other by service name and aliases",
    "external_links": "every service of the stack is on its own network",
    "stop_grace_period": "envkit stops containers with Docker's default grace",
    "depends_on restart": "envkit does not restart a service's dependents",
}
# Service keys without which running would be wrong: an error, with the fix.
REFUSED = {
    "extends": "copy the base service's settings into it (or merge files with COMPOSE_FILE)",
    "volumes_from": "mount the same named volume in both services instead",
    "pre_start": "run it as a one-shot service that this one depends on "
    "(condition: service_completed_successfully)",
    "post_start": "run it in the service's command or entrypoint",
    "pre_stop": "remove it: envkit stops a test stack without hooks",
    "provider": "run the provider's service outside envkit",
    "models": "run the model outside envkit",
}
_BUILD_REFUSED = {
    "ssh": "envkit builds without SSH agents: fetch private sources before the build",
    "secrets": "envkit builds without build secrets: pass them another way",
    "additional_contexts": "copy what the build needs into its context",
    "dockerfile_inline": "write the Dockerfile to a file and name it in build.dockerfile",
    "entitlements": "remove it: envkit's builds run without extra entitlements",
}
_BUILD_KEYS = {"context", "dockerfile", "args", "target", "tags", "platforms"}
_HANDLED = {
    "image", "build", "ports", "expose", "environment", "env_file", "command", "entrypoint",
    "depends_on", "healthcheck", "volumes", "tmpfs", "secrets", "configs", "networks", "links",
    "labels", "user", "working_dir", "stop_signal", "tty", "stdin_open", "pull_policy", "profiles",
    "platform", "deploy", "scale", "network_mode",
}  # fmt: skip
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PULL = {"missing": "missing", "if_not_present": "missing", "always": "always", "never": "never"}


@dataclass
class Notes:
    """What envkit left out or changed, in the order it was found; ignored keys grouped by key."""

    lines: list[str] = field(default_factory=list)
    ignored: dict[str, list[str]] = field(default_factory=dict)

    def add(self, text: str) -> None:
        if text not in self.lines:
            self.lines.append(text)

    def ignore(self, key: str, service: str) -> None:
        names = self.ignored.setdefault(key, [])
        if service not in names:
            names.append(service)

    def all(self) -> tuple[str, ...]:
        grouped = [
            f"{key} ignored ({', '.join(names)})" + (f": {IGNORED[key]}" if key in IGNORED else "")
            for key, names in sorted(self.ignored.items())
        ]
        return (*self.lines, *grouped)


@dataclass
class Context:
    project_dir: Path  # where relative paths start: the first compose file's folder
    environ: Mapping[str, str]  # the process environment over the .env file
    profiles: frozenset[str]
    origins: Origins
    notes: Notes

    def error(self, path: Key, problem: str, fix: str) -> ConfigError:
        return self.origins.error(path, problem, fix)

    def host_path(self, value: str) -> Path:
        """A host path of the file, absolute (``~`` is the home folder; relative: from the
        project folder); symlinks are kept, as compose keeps them."""
        expanded = os.path.expanduser(value)
        return Path(os.path.normpath(self.project_dir / expanded))


def resolve(
    model: dict[str, Any], ctx: Context, known_images: Mapping[str, ImageSpec]
) -> tuple[dict[str, ImageSpec], dict[str, ServiceSpec], tuple[str, ...]]:
    """Images (built by services, plus ``known_images`` from envkit.toml), services and the
    stack's named volumes of the merged ``model``."""
    _top_level(model, ctx)
    defined: dict[str, dict[str, Any]] = {
        n: s for n, s in (model.get("services") or {}).items() if isinstance(s, dict)
    }
    enabled = {n: s for n, s in defined.items() if _enabled(s, ctx.profiles)}
    skipped = [n for n in defined if n not in enabled]
    if skipped:
        active = ", ".join(sorted(ctx.profiles)) or "none"
        ctx.notes.add(
            f"not in the stack: {', '.join(skipped)} (their profiles are not active; active: {active}; "
            "select them with COMPOSE_PROFILES)"
        )
    built = {n: s["build"] for n, s in enabled.items() if isinstance(s.get("build"), dict)}
    images = _images(built, enabled, ctx, known_images)
    tagged = {tag: n for n, spec in images.items() for tag in spec.also_tags}
    volumes: list[str] = []
    services = {
        name: _service(name, s, model, ctx=ctx, images=images, tagged=tagged, volumes=volumes)
        for name, s in enabled.items()
    }
    services = _dependencies(services, enabled, defined, ctx)
    _links(services, enabled, ctx)
    toml._check_env_names(services, _translated(ctx))
    return images, services, tuple(volumes)


def _enabled(service: dict[str, Any], active: frozenset[str]) -> bool:
    profiles = service.get("profiles") or []
    return not profiles or "*" in active or bool(set(profiles) & active)


def _top_level(model: dict[str, Any], ctx: Context) -> None:
    if "version" in model:
        ctx.notes.add("version is obsolete: ignored (as compose ignores it)")
    for key, fix in (
        ("include", "list the files in COMPOSE_FILE (or [stack] compose in envkit.toml) instead"),
        ("models", "run the model outside envkit"),
        ("jobs", "run the job as a one-shot service (depends_on condition: service_completed_successfully)"),
    ):
        if model.get(key):
            raise ctx.error((key,), "not supported by envkit", fix)
    for name, network in (model.get("networks") or {}).items():
        if network and any(k for k in network if not k.startswith("x-")):
            ctx.notes.add(
                f"networks.{name}: its settings are ignored: every service is on the stack's one private "
                "network, reachable by its name and aliases"
            )


def _images(
    built: dict[str, dict[str, Any]],
    enabled: dict[str, dict[str, Any]],
    ctx: Context,
    known: Mapping[str, ImageSpec],
) -> dict[str, ImageSpec]:
    # envkit.toml's images, with their references unsplit again: a compose image may be a parent.
    images = {
        n: ImageSpec(**{**i.__dict__, "parents": i.parents + i.externals, "externals": ()})
        for n, i in known.items()
    }
    for name, build in built.items():
        at: Key = ("services", name, "build")
        if name in known:
            raise ctx.error(at, f"envkit.toml has an image {name!r} too", "rename the service or the image")
        toml._check_name(name, f"services.{name}", _translated(ctx))
        for key, fix in _BUILD_REFUSED.items():
            if key in build:
                raise ctx.error((*at, key), "not supported by envkit's builds", fix)
        for key in build:
            if key not in _BUILD_KEYS and not key.startswith("x-"):
                ctx.notes.ignore(f"build.{key}", name)
        context = str(build.get("context", "."))
        if "://" in context or context.startswith("git@"):
            raise ctx.error(
                (*at, "context"),
                f"{context!r} is a remote build context: envkit keys images by their local files",
                "clone it and point context at the folder",
            )
        args = {k: v if v is not None else ctx.environ.get(k) for k, v in (build.get("args") or {}).items()}
        platforms = build.get("platforms") or []
        if len(platforms) > 1:
            ctx.notes.add(f"services.{name}.build.platforms: envkit builds one platform: {platforms[0]}")
        platform = enabled[name].get("platform") or (platforms[0] if platforms else None)
        entry = {
            "context": str(ctx.host_path(context)),
            "dockerfile": build.get("dockerfile", "Dockerfile"),
            "args": {k: v for k, v in args.items() if v is not None},
            **({"target": build["target"]} if build.get("target") is not None else {}),
            **({"platform": platform} if platform else {}),
        }
        spec = toml._image(name, entry, ctx.project_dir, _translated(ctx))
        tags = [enabled[name]["image"]] if enabled[name].get("image") else []
        tags += [t for t in build.get("tags") or [] if t not in tags]
        for i, tag in enumerate(tags):
            if not toml._valid_reference(tag):
                where: Key = (
                    ("services", name, "image")
                    if i == 0 and enabled[name].get("image")
                    else (*at, "tags", list(build["tags"]).index(tag))
                )
                raise ctx.error(where, f"{tag!r} is not a valid image reference", 'write e.g. "myapp:latest"')
        images[name] = ImageSpec(**{**spec.__dict__, "also_tags": tuple(tags)})
    return toml._resolve_parents(images, _translated(ctx))


_TOML_KEY = re.compile(
    r"^(images|services)\.(.+?)(?:\.(context|dockerfile|recipe|args|target|platform)(\..*)?)?$"
)


def _translated(ctx: Context) -> toml._Err:
    """envkit.toml's error keys (``images.NAME.KEY``, ``services.NAME``) as the compose file's
    (``services.NAME.build.KEY``), with the file and line that said it."""

    def err(key: str, problem: str, fix: str) -> ConfigError:
        match = _TOML_KEY.match(key)
        if match is None:
            return ctx.error((key,), problem, fix)
        section, name, sub, rest = match.groups()
        path: Key = ("services", name)
        if section == "images":
            path += ("build",) + ((sub,) if sub else ()) + tuple((rest or "").split(".")[1:])
        return ctx.error(path, problem, fix)

    return err


def _service(
    name: str,
    s: dict[str, Any],
    model: dict[str, Any],
    *,
    ctx: Context,
    images: Mapping[str, ImageSpec],
    tagged: Mapping[str, str],
    volumes: list[str],
) -> ServiceSpec:
    at: Key = ("services", name)
    toml._check_name(name, f"services.{name}", _translated(ctx))
    for key, fix in REFUSED.items():
        if key in s:
            raise ctx.error((*at, key), "not supported by envkit", fix)
    for key in s:
        if key not in _HANDLED and key not in REFUSED and not key.startswith("x-"):
            ctx.notes.ignore(key, name)
    _replicas(name, s, ctx)
    image, pull_policy = _image_of(name, s, ctx, images, tagged)
    ports = _ports(name, s, ctx)
    check, start_timeout = _healthcheck(s.get("healthcheck"), (*at, "healthcheck"), ctx)
    mounts = (
        _volumes(name, s, model, ctx, volumes)
        + _tmpfs(name, s, ctx)
        + _files(name, s, model, ctx, "secrets")
        + _files(name, s, model, ctx, "configs")
    )
    seen: set[str] = set()
    for mount in mounts:
        if mount.target in seen:
            raise ctx.error((*at, "volumes"), f"two mounts at {mount.target}", "mount one thing per path")
        seen.add(mount.target)
    return ServiceSpec(
        name=name,
        image=image,
        ports=ports,
        environment=_environment(name, s, ctx),
        command=_words(s.get("command"), (*at, "command"), ctx, empty_is_none=True),
        depends_on=(),  # filled in by _dependencies, once every service is known
        healthcheck=check,
        start_timeout=start_timeout,
        entrypoint=_words(s.get("entrypoint"), (*at, "entrypoint"), ctx, empty_is_none=False),
        user=_text(s.get("user")),
        working_dir=_text(s.get("working_dir")),
        mounts=mounts,
        aliases=_aliases(name, s, model, ctx),
        labels={k: v or "" for k, v in (s.get("labels") or {}).items()},
        stop_signal=_text(s.get("stop_signal")),
        tty=bool(s.get("tty", False)),
        stdin_open=bool(s.get("stdin_open", False)),
        pull_policy=pull_policy,
    )


def _text(value: Any) -> str | None:
    return None if value is None else scalar_text(value)


def _replicas(name: str, s: dict[str, Any], ctx: Context) -> None:
    at: Key = ("services", name)
    deploy = s.get("deploy") or {}
    replicas = deploy.get("replicas", s.get("scale", 1))
    if replicas != 1:
        key = (*at, "deploy", "replicas") if "replicas" in deploy else (*at, "scale")
        raise ctx.error(
            key, f"envkit runs one container per service, not {replicas}", "remove it (or set it to 1)"
        )
    if any(k != "replicas" for k in deploy):
        ctx.notes.ignore("deploy", name)
    mode = s.get("network_mode")
    if mode is not None and mode not in ("bridge", "default"):
        raise ctx.error(
            (*at, "network_mode"),
            f"{mode!r}: envkit runs every service on the stack's own network",
            "remove it; services reach each other by service name",
        )


def _image_of(
    name: str, s: dict[str, Any], ctx: Context, images: Mapping[str, ImageSpec], tagged: Mapping[str, str]
) -> tuple[str, str | None]:
    """The service's image (an image of the stack, or an external reference) and its pull policy."""
    at: Key = ("services", name)
    policy = s.get("pull_policy")
    if isinstance(s.get("build"), dict):
        return name, None  # built by envkit when its inputs change: compose's pull policies do not apply
    ref = s.get("image")
    if not ref:
        where = (*at, "image") if "image" in s else at  # an empty image: said at its line, with its variables
        raise ctx.error(where, "has neither image nor build", "add image: (a reference) or build: (a folder)")
    if ref in tagged:
        return tagged[ref], None  # the image another service builds and tags so
    if ref in images:
        raise ctx.error(
            (*at, "image"),
            f"{ref!r} is also the name of the image envkit builds for service {ref!r}",
            f"write the full reference (docker.io/library/{ref}) to mean the registry's image",
        )
    if not toml._valid_reference(ref):
        raise ctx.error((*at, "image"), f"{ref!r} is not a valid image reference", 'write e.g. "redis:7"')
    if policy == "build":
        raise ctx.error(
            (*at, "pull_policy"), "build, but the service has no build section", "add build:, or remove it"
        )
    if policy is not None and policy not in _PULL:
        ctx.notes.add(f"services.{name}.pull_policy: {policy} is taken as missing (pull only when absent)")
    if s.get("platform"):
        ctx.notes.add(f"services.{name}.platform: ignored for a pulled image (the daemon's platform is used)")
    return ref, None if policy is None else _PULL.get(policy, "missing")


def _ports(name: str, s: dict[str, Any], ctx: Context) -> tuple[int, ...]:
    ports: list[int] = []
    for entry in s.get("ports") or []:
        target = entry["target"]
        shown = entry.get("short") or f"{entry.get('published') or ''}:{target}".lstrip(":")
        if entry.get("protocol", "tcp") != "tcp":
            ctx.notes.add(f"services.{name}.ports: {shown} is not published: envkit publishes TCP ports")
            continue
        if entry.get("published") or entry.get("host_ip"):
            ctx.notes.add(
                f"services.{name}.ports: {shown} is published on 127.0.0.1 at a port the engine picks "
                f"(reach it with endpoint({name!r}, {target}))"
            )
        if target not in ports:
            ports.append(target)
    return tuple(ports)


def _environment(name: str, s: dict[str, Any], ctx: Context) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, entry in enumerate(s.get("env_file") or []):
        path = ctx.host_path(str(entry["path"]))
        if not path.is_file():
            if entry.get("required", True):
                raise ctx.error(
                    ("services", name, "env_file", i),
                    f"the env file {path} does not exist",
                    "create it, or mark it required: false",
                )
            continue
        if entry.get("format") not in (None, "raw"):
            raise ctx.error(
                ("services", name, "env_file", i), f"format {entry['format']!r} is unknown", "remove it"
            )
        env.update(read_dotenv(path, ctx.environ))
    for key, value in (s.get("environment") or {}).items():
        if value is not None:
            env[key] = value
        elif key in ctx.environ:
            env[key] = ctx.environ[key]
        else:
            env.pop(key, None)  # `- NAME` with NAME unset: compose leaves it out
    return env


def _words(value: Any, at: Key, ctx: Context, *, empty_is_none: bool) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as err:
            raise ctx.error(
                at, f"cannot be split into words: {err}", "close the quote, or write a list"
            ) from None
    else:
        words = [scalar_text(v) for v in value]
    if not words and empty_is_none:
        return None
    return tuple(words)


def duration(text: Any, at: Key, ctx: Context) -> float:
    """Compose's durations (Go's: ``1m30s``, ``500ms``, ``2h``) in seconds."""
    value = scalar_text(text).strip()
    if value == "0":
        return 0.0
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ctx.error(at, f"{value!r} is not a duration", 'write e.g. "10s", "1m30s" or "500ms"')
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _healthcheck(value: Any, at: Key, ctx: Context) -> tuple[HealthCheck, float]:
    if value is None:
        return HealthCheck("image"), DEFAULT_START_TIMEOUT
    if value.get("disable") is True:
        return HealthCheck("none"), DEFAULT_START_TIMEOUT
    test = value.get("test")
    if test is None:
        check = HealthCheck("image")
    elif isinstance(test, str):
        if not test.strip():
            raise ctx.error((*at, "test"), "is empty", 'write the check, e.g. test: ["CMD", "pg_isready"]')
        check = HealthCheck("cmd", cmd=("/bin/sh", "-c", test))
    elif not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
        raise ctx.error(
            (*at, "test"),
            "a list must start with CMD, CMD-SHELL or NONE",
            'write ["CMD", "program", "arg"] or ["CMD-SHELL", "a shell command"]',
        )
    elif test[0] == "NONE":
        check = HealthCheck("none")
    elif len(test) < 2:
        raise ctx.error((*at, "test"), f"{test[0]} needs a command after it", f'write ["{test[0]}", "..."]')
    elif test[0] == "CMD":
        check = HealthCheck("cmd", cmd=tuple(test[1:]))
    else:
        check = HealthCheck("cmd", cmd=("/bin/sh", "-c", " ".join(test[1:])))
    timing = [k for k in ("interval", "retries", "start_period") if value.get(k) is not None]
    for key in ("timeout", "start_interval"):
        if value.get(key) is not None:
            duration(value[key], (*at, key), ctx)  # checked, not used: envkit polls at its own pace
    if not timing:
        return check, DEFAULT_START_TIMEOUT
    interval = duration(value["interval"], (*at, "interval"), ctx) if "interval" in timing else 30.0
    start = duration(value["start_period"], (*at, "start_period"), ctx) if "start_period" in timing else 0.0
    retries = value.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, (int, float)) or retries < 0:
        raise ctx.error((*at, "retries"), f"{retries!r} is not a number of retries", "write e.g. retries: 5")
    total = float(retries) * interval + start
    return check, total if total > 0 else DEFAULT_START_TIMEOUT


def _volumes(
    name: str, s: dict[str, Any], model: dict[str, Any], ctx: Context, used: list[str]
) -> tuple[Mount, ...]:
    mounts: list[Mount] = []
    declared = model.get("volumes") or {}
    for i, entry in enumerate(s.get("volumes") or []):
        at: Key = ("services", name, "volumes", i)
        kind, target = entry.get("type"), str(entry.get("target") or "")
        if not target.startswith("/"):
            raise ctx.error(
                at, f"the target {target!r} is not an absolute path", "write the path in the container"
            )
        read_only = entry.get("read_only") is True
        source = str(entry.get("source") or "")
        if kind == "volume":
            if source:
                _named_volume(source, at, declared, ctx)
                if source not in used:
                    used.append(source)
            if (entry.get("volume") or {}).get("subpath"):
                raise ctx.error(
                    (*at, "volume", "subpath"), "not supported by envkit", "mount the whole volume"
                )
            if (entry.get("volume") or {}).get("nocopy"):
                ctx.notes.ignore("volume nocopy", name)
            mounts.append(Mount("volume", target, source, read_only))
        elif kind == "bind":
            if not source:
                raise ctx.error(at, "a bind mount needs a source", "add source: (a path on the host)")
            path = ctx.host_path(source)
            bind = entry.get("bind") or {}
            if not path.exists():
                if "short" not in entry and not bind.get("create_host_path"):
                    raise ctx.error(
                        at,
                        f"the bind source {path} does not exist",
                        "create it, or add bind: {create_host_path: true}",
                    )
                ctx.notes.add(f"services.{name}.volumes: {path} does not exist: it is created at start")
            if bind.get("selinux") or bind.get("propagation"):
                ctx.notes.ignore("bind mount options (SELinux z/Z, propagation)", name)
            mounts.append(Mount("bind", target, str(path), read_only))
        elif kind == "tmpfs":
            if entry.get("tmpfs"):
                ctx.notes.ignore("tmpfs size and mode", name)
            mounts.append(Mount("tmpfs", target))
        else:
            raise ctx.error(
                (*at, "type"), f"{kind} mounts are not supported by envkit", "use volume, bind or tmpfs"
            )
    return tuple(mounts)


def _named_volume(source: str, at: Key, declared: Mapping[str, Any], ctx: Context) -> None:
    if source not in declared:
        raise ctx.error(
            at,
            f"the volume {source!r} is not declared under the top-level volumes",
            f"add it: volumes: {{{source}: {{}}}} (or write ./{source} for a folder of the host)",
        )
    spec = declared[source] or {}
    if spec.get("external"):
        raise ctx.error(
            ("volumes", source, "external"),
            "envkit's volumes belong to the stack: created with it and removed with it",
            "use a named volume of the stack (envkit creates it), or a bind mount of a host folder",
        )
    if spec.get("driver") not in (None, "local") or spec.get("driver_opts"):
        raise ctx.error(
            ("volumes", source),
            "a volume driver or driver_opts would give the service other data than envkit's plain volume",
            "use a bind mount of the host folder instead",
        )
    if spec.get("name"):
        ctx.notes.add(f"volumes.{source}.name: ignored: the stack's volumes are named after the stack")


def _tmpfs(name: str, s: dict[str, Any], ctx: Context) -> tuple[Mount, ...]:
    mounts = []
    for i, item in enumerate(s.get("tmpfs") or []):
        target, colon, _ = scalar_text(item).partition(":")
        if not target.startswith("/"):
            raise ctx.error(
                ("services", name, "tmpfs", i), f"{target!r} is not an absolute path", "write /path"
            )
        if colon:
            ctx.notes.ignore("tmpfs size and mode", name)
        mounts.append(Mount("tmpfs", target))
    return tuple(mounts)


def _files(name: str, s: dict[str, Any], model: dict[str, Any], ctx: Context, key: str) -> tuple[Mount, ...]:
    """Secrets (at /run/secrets/NAME) and configs (at /NAME) from files: read-only binds."""
    declared = model.get(key) or {}
    mounts = []
    for i, entry in enumerate(s.get(key) or []):
        at: Key = ("services", name, key, i)
        source = entry["source"]
        if source not in declared:
            raise ctx.error(
                at,
                f"{source!r} is not declared under the top-level {key}",
                f"declare it: {key}: {{{source}: {{file: ./PATH}}}}",
            )
        spec = declared[source] or {}
        if "file" not in spec:
            raise ctx.error(
                (key, source),
                f"only {key} from files are supported by envkit",
                "write the value to a file and name it with file:",
            )
        path = ctx.host_path(str(spec["file"]))
        if not path.exists():
            raise ctx.error((key, source, "file"), f"{path} does not exist", "create it, or correct the path")
        prefix = "/run/secrets/" if key == "secrets" else "/"
        target = str(entry.get("target") or source)
        if any(entry.get(k) is not None for k in ("uid", "gid", "mode")):
            ctx.notes.ignore(f"{key} uid, gid and mode (a bind mount keeps the file's own)", name)
        mounts.append(Mount("bind", target if target.startswith("/") else prefix + target, str(path), True))
    return tuple(mounts)


def _aliases(name: str, s: dict[str, Any], model: dict[str, Any], ctx: Context) -> tuple[str, ...]:
    declared = model.get("networks") or {}
    aliases: list[str] = []
    for network, spec in (s.get("networks") or {}).items():
        if network != "default" and network not in declared:
            raise ctx.error(
                ("services", name, "networks", network),
                f"the network {network!r} is not declared under the top-level networks",
                f"declare it (networks: {{{network}: {{}}}}), or remove it",
            )
        for key in spec or {}:
            if key != "aliases" and not key.startswith("x-"):
                ctx.notes.ignore(f"networks.{key}", name)
        aliases += [a for a in (spec or {}).get("aliases") or [] if a not in aliases and a != name]
    return tuple(aliases)


def _dependencies(
    services: dict[str, ServiceSpec],
    enabled: Mapping[str, dict[str, Any]],
    defined: Mapping[str, dict[str, Any]],
    ctx: Context,
) -> dict[str, ServiceSpec]:
    out: dict[str, ServiceSpec] = {}
    oneshots = set()
    for name, spec in services.items():
        depends: list[str] = []
        conditions: dict[str, str] = {}
        for dep, entry in (enabled[name].get("depends_on") or {}).items():
            at: Key = ("services", name, "depends_on", dep)
            if dep not in enabled:
                why = (
                    "is not in the stack: its profiles are not active"
                    if dep in defined
                    else "is not a service"
                )
                if not entry.get("required", True):
                    ctx.notes.add(f"services.{name}.depends_on: {dep} {why}; left out (required: false)")
                    continue
                fix = (
                    f"activate a profile of {dep} (COMPOSE_PROFILES), or give {name} the same profiles"
                    if dep in defined
                    else f"name a service of the file ({', '.join(enabled)}), or remove it"
                )
                raise ctx.error(at, f"{dep!r} {why}", fix)
            if entry.get("restart"):
                ctx.notes.ignore("depends_on restart", name)
            depends.append(dep)
            conditions[dep] = entry["condition"]
            if entry["condition"] == COMPLETED:
                oneshots.add(dep)
        out[name] = ServiceSpec(**{**spec.__dict__, "depends_on": tuple(depends), "conditions": conditions})
    cycle = graph.find_cycle({n: s.depends_on for n, s in out.items()})
    if cycle:
        raise ctx.error(
            ("services", cycle[0], "depends_on"),
            f"the services depend on each other in a cycle: {' -> '.join(cycle)}",
            "remove one of the depends_on entries in the cycle",
        )
    return {n: ServiceSpec(**{**s.__dict__, "oneshot": n in oneshots}) for n, s in out.items()}


def _links(services: dict[str, ServiceSpec], enabled: Mapping[str, dict[str, Any]], ctx: Context) -> None:
    """``links: [db:database]`` gives ``db`` the alias ``database`` on the stack's network."""
    for name, s in enabled.items():
        for i, link in enumerate(s.get("links") or []):
            target, _, alias = scalar_text(link).partition(":")
            if target not in services:
                raise ctx.error(
                    ("services", name, "links", i),
                    f"{target!r} is not a service of the stack",
                    "remove the link",
                )
            ctx.notes.add(
                f"services.{name}.links: not needed: every service reaches every other by name"
                + (f"; {alias!r} is an alias of {target}" if alias else "")
            )
            if alias and alias not in services[target].aliases and alias != target:
                spec = services[target]
                services[target] = ServiceSpec(**{**spec.__dict__, "aliases": (*spec.aliases, alias)})
