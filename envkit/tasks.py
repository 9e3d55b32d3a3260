"""envkit's Invoke tasks. Re-export them from your own tasks.py::

    from envkit.tasks import ns

The same collection is the ``envkit`` console script. Each task parses its
options, calls the library, and prints; an :class:`~envkit.errors.EnvkitError`
becomes one clear message and a non-zero exit. A task imports what it runs
when it runs, so every command starts fast.
"""

from __future__ import annotations

import json as _json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from invoke import Collection, Context, Exit, task

from envkit.errors import EnvkitError

if TYPE_CHECKING:
    from envkit.config.model import StackConfig
    from envkit.docker.engine import Daemon
    from envkit.settings import Settings
    from envkit.stack.stack import Stack


@contextmanager
def user_errors() -> Iterator[None]:
    """Report envkit's errors as ``envkit: error: ...`` and exit 1, with no traceback."""
    try:
        yield
    except EnvkitError as err:
        raise Exit(f"envkit: error: {err}", code=1) from None
    except KeyboardInterrupt:
        raise Exit("envkit: interrupted", code=130) from None


def usage(message: str) -> Exit:
    """A usage error: one line, exit 2."""
    return Exit(f"envkit: error: {message}", code=2)


def _seconds(option: str, raw: str | None) -> float | None:
    from envkit.settings import seconds

    if raw is None:
        return None
    try:
        return seconds(raw)
    except ValueError:
        raise usage(f"{option} {raw!r} is not a number of seconds (>= 0)") from None


def _context() -> tuple[Settings, StackConfig, Daemon]:
    """The settings, the stack and a connection to the engine: what every command needs."""
    from envkit.config.find import load
    from envkit.docker.engine import Daemon
    from envkit.settings import Settings

    settings = Settings.from_env()
    config = load(settings=settings)
    return settings, config, Daemon(cache_dir=settings.cache_dir)


BUILDER_NAMES = {
    "assembler": "envkit's assembler",
    "classic": "the classic builder",
    "recipe": "mmdebstrap (a Debian recipe)",
}


@task(
    iterable=["image"],
    help={
        "image": "build only this image (and its parents); repeatable",
        "explain": "for every image, say why it was rebuilt or that it was cached, and which builder made it",
        "json": "print one JSON list on stdout: image, key, tag, status, seconds, reasons, builder",
        "quiet": "print nothing but errors (and the JSON, with --json)",
        "pull": "pull policy for external base images: missing (default), always or never",
        "jobs": "how many independent images to build at once (default 4)",
        "push": "push to the remote cache what was built, and any current image it lacks",
    },
)
def build(
    c: Context,
    image: list[str] | None = None,
    explain: bool = False,
    json: bool = False,
    quiet: bool = False,
    pull: str | None = None,
    jobs: str = "4",  # parsed here: invoke answers a bad int with a traceback
    push: bool = False,
) -> None:
    """Build the stack's images whose inputs changed (or pull them from the remote cache)."""
    from envkit.config.model import PULL_POLICIES

    if pull is not None and pull not in PULL_POLICIES:
        raise usage(f"--pull {pull!r} is not a pull policy; use one of {', '.join(PULL_POLICIES)}")
    if not jobs.isdigit() or int(jobs) < 1:
        raise usage(f"--jobs {jobs!r} is not a whole number of at least 1")
    started = time.monotonic()
    with user_errors():
        from envkit.images.build import ensure, tally
        from envkit.progress import for_terminal
        from envkit.remote import warn_cache_reach

        settings, config, daemon = _context()
        warn_cache_reach(config, settings, daemon.endpoint)  # a loopback cache, a remote engine
        with for_terminal(quiet) as progress:
            results = ensure(
                config,
                daemon,
                names=image or None,
                pull=pull,
                progress=progress,
                jobs=int(jobs),
                settings=settings,
                push=push or None,  # else ENVKIT_CACHE_PUSH decides
            )
    if json:
        print(_json.dumps([r.to_json() for r in results], indent=2))
        return
    if quiet:
        return
    width = max(len(r.image) for r in results) if results else 0
    for r in results:
        seconds = f"  {r.seconds:.1f}s" if r.status != "cached" else ""
        print(f"{r.image:<{width}}  {r.status:<6}  {r.tag}{seconds}")
        if explain:
            lines = list(r.reasons or ["inputs unchanged since the last build"])
            lines += [r.cache] if r.cache else []
            if r.builder:
                lines.append(f"made by {BUILDER_NAMES.get(r.builder, r.builder)}: {r.builder_reason}")
            lines += [f"pushed to {r.remote}"] if r.pushed else []
            for line in lines:
                print(f"{'':<{width}}    - {line}")
        elif r.pushed:
            print(f"{'':<{width}}    pushed to {r.remote}")
    print(f"{len(results)} images: {tally(results)} in {time.monotonic() - started:.1f}s")


@task(
    help={
        "dry_run": "list what would be removed, remove nothing",
        "json": "print the result as JSON",
    }
)
def gc(c: Context, dry_run: bool = False, json: bool = False) -> None:
    """Remove this stack's images whose keys are no longer current."""
    with user_errors():
        from envkit.images.gc import gc as collect
        from envkit.progress import for_terminal

        settings, config, daemon = _context()
        with for_terminal(quiet=json) as progress:
            result = collect(config, daemon, dry_run=dry_run, progress=progress, settings=settings)
    if json:
        print(_json.dumps(result.to_json(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for tag in result.removed:
        print(f"{verb} {tag}")
    for tag in result.kept_in_use:
        print(f"kept {tag} (a container uses it)")
    for container in result.containers:
        print(f"{verb} container {container[:12]} (a killed build looked into a parent through it)")
    print(f"{len(result.removed)} image tags {verb}")


def _stack(progress: Any = None) -> Stack:
    from envkit.stack.stack import Stack  # not imported by `envkit build`

    settings, config, daemon = _context()
    return Stack(config, daemon, progress, settings=settings)


@task(
    iterable=["service"],
    help={
        "service": "start only this service (and what it depends on); repeatable; default: all",
        "keep": "hold the stack until `envkit down`, whatever ENVKIT_TTL says (the default; excludes --ttl)",
        "ttl": "hold it for SECONDS only: then it stops, unless something else holds it",
        "json": "print the stack id and endpoints as JSON",
        "quiet": "print nothing but errors (and the JSON, with --json)",
    },
)
def up(
    c: Context,
    service: list[str] | None = None,
    keep: bool = False,
    ttl: str | None = None,
    json: bool = False,
    quiet: bool = False,
) -> None:
    """Start the shared stack (or attach to it) and pin it up until `envkit down`.

    Without --keep or --ttl, ENVKIT_TTL (or ENVKIT_KEEP) from the environment applies.
    """
    seconds = _seconds("--ttl", ttl)
    if keep and seconds is not None:
        raise usage("--keep and --ttl exclude each other; pass one")
    started = time.monotonic()
    with user_errors():
        from envkit.progress import for_terminal

        with for_terminal(quiet) as progress:
            stack = _stack(progress)
            forever, seconds = stack.settings.stay(keep, seconds)
            if forever:
                seconds = None
            held = stack.acquire(service or None)
            try:
                stack.pin(seconds)
            finally:
                held.release()
    handle = held.handle
    if json:
        print(
            _json.dumps(
                {"stack": handle.stack, "endpoints": handle.endpoints(), "env": handle.env()}, indent=2
            )
        )
        return
    if quiet:
        return
    until = "until `envkit down`" if seconds is None else f"for {seconds:g}s (or until `envkit down`)"
    print(f"stack {handle.stack} is up in {time.monotonic() - started:.1f}s, held {until}")
    for name, ports in handle.endpoints().items():
        for port, address in ports.items():
            print(f"  {name}:{port} -> {address}")


@task(
    name="down",
    help={
        "all": "stop the stack now, even while other processes hold it",
        "json": "print the result as JSON",
    },
)
def down(c: Context, all: bool = False, json: bool = False) -> None:
    """Release `envkit up`'s pin and stop the stack, unless other processes still hold it."""
    with user_errors():
        stack = _stack()
        done = stack.down(force=all)
    removed, holders = done.removed, done.holders
    stopped = all or not holders
    if json:
        print(
            _json.dumps(
                {
                    "stack": stack.id,
                    "stopped": stopped,
                    "containers_removed": removed,
                    "holders": [h.describe() for h in holders],
                    # only when --all went ahead without the state lock: who held it
                    **({"lock_owner": done.lock_owner} if done.lock_owner else {}),
                },
                indent=2,
            )
        )
        return
    if done.lock_owner:
        print(f"the state lock is held by {done.lock_owner}: stopped the stack by its labels without it")
    if stopped:
        outcome = f"stopped ({removed} containers removed)" if removed else "not running"
        print(f"stack {stack.id}: {outcome}")
        return
    print(f"stack {stack.id} stays up: still held by")
    for holder in holders:
        print(f"  - {holder.describe()}")
    print("it stops when they finish; `envkit down --all` stops it now")


@task(name="status", help={"json": "print the status as JSON"})
def status(c: Context, json: bool = False) -> None:
    """Show the stack: its engine, services, health, endpoints, holders and how long it stays up."""
    with user_errors():
        from envkit.images.cache import resolve

        stack = _stack()
        info = stack.status()
        remote = resolve(stack.config, stack.settings)
        info["cache"] = None if remote is None else {**remote.to_json(), "push": stack.settings.cache_push}
    if json:
        print(_json.dumps(info, indent=2))
        return
    engine = info["engine"]
    print(f"stack {info['stack']}: {'running' if info['running'] else 'not running'} ({info['state_dir']})")
    print(f"engine: {engine['host']} (from {engine['source']})")
    if engine.get("store"):
        product = "Podman" if engine["product"] == "podman" else "Docker Engine"
        stores = {"classic": "classic image store", "containerd": "containerd image store"}
        store = stores.get(engine["store"], engine["store"])
        print(f"  {product} {engine['version']}, API {engine['api_version']}, {store}")
    print(f"service host: {info['host']} (from {info['host_source']})")
    print(f"ports published on: {info['publish']} (from {info['publish_source']})")
    if info["client_container"]:
        client = info["client_container"]["name"]
        print(f"reached: over the stack's network, from the container {client} ({info['reach_source']})")
    else:
        print(f"reached: at the published ports ({info['reach_source']})")
    if info["network_clients"]:
        print(f"network clients: {', '.join(info['network_clients'])}")
    if info.get("warden"):
        warden = info["warden"]
        print(f"warden: on the engine, leased at {warden['endpoint']} ({warden['container']})")
    remote = info["cache"]
    if remote:
        pushing = "; builds push to it (ENVKIT_CACHE_PUSH)" if remote["push"] else ""
        print(f"cache: {remote['repository']} (from {remote['source']}){pushing}")
    else:
        print("cache: none (set [stack] cache, or ENVKIT_CACHE)")
    if info["state_error"]:
        print(f"state file: {info['state_error']}")
    rows = [("SERVICE", "STATUS", "CONTAINER", "ENDPOINTS", "IMAGE")]
    for name, svc in info["services"].items():
        endpoints = ", ".join(f"{p}->{a}" for p, a in svc["endpoints"].items()) or "-"
        rows.append((name, svc["status"], svc["container"] or "-", endpoints, svc["image"] or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[4])
    for name, svc in info["services"].items():
        if svc["error"]:
            print(f"  {name} failed: {svc['error']}")
    holders = info["holders"]
    print(f"holders: {sum(h['alive'] for h in holders)} alive")
    for h in holders:
        if h["kind"] == "pin":
            until = "until `envkit down`" if h["expires_in"] is None else f"{h['expires_in']:.0f}s left"
            who = f"pin from `envkit up` ({until})"
        else:
            who = f"pid {h['pid']} on {h['host']}: {h['command']}"
        services = f" [{', '.join(h['services'])}]" if h["services"] else ""
        print(f"  - {who}{services}; {'alive' if h['alive'] else 'dead'}, holding for {h['age']:.0f}s")
    idle = info["idle"]
    if idle:
        left = "until `envkit down`" if idle["keep"] else f"for {idle['ttl_left']:.0f}s more"
        print(f"no holder for {idle['since']:.0f}s; kept up {left}")
    if info["lock"]:
        print(f"state lock: held by {info['lock']}")
    if info["reaper_started"]:
        print("reaper: was not running (killed?); started a new one")
    else:
        print(f"reaper: {'watching' if info['reaper'] else 'not running'}")


@task(name="config", help={"json": "print the resolved stack as JSON"})
def config_(c: Context, json: bool = False) -> None:
    """Show the resolved stack (envkit.toml or compose files): images, services, and what was left out.

    Like `docker compose config`; it needs no Docker daemon.
    """
    with user_errors():
        from envkit.config import show
        from envkit.config.find import load
        from envkit.docker.transport import discover
        from envkit.images.cache import resolve
        from envkit.remote import service_host
        from envkit.settings import Settings

        settings = Settings.from_env()
        stack = load(settings=settings)
        remote = resolve(stack, settings)  # the cache in use: ENVKIT_CACHE wins over [stack] cache
        reach = service_host(discover(), stack, settings)  # the engine's address, not a connection
    if json:
        data = show.to_json(stack)
        data["cache"] = None if remote is None else {**remote.to_json(), "push": settings.cache_push}
        data.update(reach.to_json())  # host, host_source, publish, publish_source
        print(_json.dumps(data, indent=2))
        return
    print(show.to_text(stack))
    if remote is not None:
        pushing = ", builds push to it" if settings.cache_push else ""
        print(f"cache: {remote.repository} (from {remote.source}{pushing})")
    print(f"service host: {reach.host} (from {reach.source})")
    print(f"ports published on: {reach.publish} (from {reach.publish_source})")


@task(
    help={
        "path": "the tests to run (default: tests/e2e)",
        "workers": "pytest-xdist workers: a number, or auto (default)",
        "keep": "leave the stack up afterwards, until `envkit down` (the next run attaches to it)",
        "ttl": "leave the stack up SECONDS afterwards; a run within that time attaches to it",
        "no_build": "fail if an image is not built, instead of building it",
    },
)
def e2e(
    c: Context,
    path: str = "tests/e2e",
    workers: str = "auto",
    keep: bool = False,
    ttl: str | None = None,
    no_build: bool = False,
) -> None:
    """Build the images (cached), start the stack, run pytest -n WORKERS PATH, stop the stack.

    Arguments after `--` go to pytest: `invoke e2e -- -k login -x`.
    """
    seconds = _seconds("--ttl", ttl)
    if keep and seconds is not None:
        raise usage("--keep and --ttl exclude each other; pass one")
    if workers != "auto" and not workers.isdigit():
        raise usage(f"--workers {workers!r} is not a number or 'auto'")
    extra = _pytest_args(getattr(c, "remainder", "") or "")
    with user_errors():
        from envkit import e2e as e2e_mod
        from envkit.progress import for_terminal

        settings, config, daemon = _context()
        tests = config.root / path
        if not tests.exists():
            raise usage(f"{tests} does not exist; pass --path to the e2e tests")
        with for_terminal() as progress:
            run = e2e_mod.prepare(
                config, daemon, settings, keep=keep, ttl=seconds, build=not no_build, progress=progress
            )
    print(run.line(), file=sys.stderr, flush=True)
    kept = (
        "kept up until `envkit down`" if keep else (None if seconds is None else f"kept up for {seconds:g}s")
    )
    with user_errors():
        code = e2e_mod.run_tests(run, tests, workers, extra, kept=kept)
    print(run.line(), flush=True)
    if code:
        raise Exit(code=code)


def _pytest_args(remainder: str) -> list[str]:
    """The arguments after `--`, as given: Invoke joins them into one string, losing their quoting
    (`-k "not slow"`), so they are taken from the command line when it holds them."""
    import shlex

    if "--" in sys.argv:
        given = sys.argv[sys.argv.index("--") + 1 :]
        if " ".join(given) == remainder:
            return given
    try:
        return shlex.split(remainder)
    except ValueError as err:
        raise usage(f"cannot split the pytest arguments after `--`: {err}") from None


@task(
    iterable=["image"],
    help={
        "image": "re-lock only this recipe image; repeatable (default: every recipe image)",
        "check": "write nothing; exit 1 if a pin is not what the mirror serves now",
        "json": "print the result as JSON",
    },
)
def relock(c: Context, image: list[str] | None = None, check: bool = False, json: bool = False) -> None:
    """Pin each Debian recipe's packages to the versions its mirror serves now."""
    with user_errors():
        from envkit.config.find import load
        from envkit.images import recipe
        from envkit.progress import for_terminal

        config = load()
        unknown = [n for n in image or [] if n not in config.images or config.images[n].recipe is None]
        if unknown:
            recipes = [n for n, spec in config.images.items() if spec.recipe is not None]
            raise usage(
                f"{unknown[0]!r} is not an image made from a recipe "
                f"(those are: {', '.join(recipes) or 'none'})"
            )
        with for_terminal(quiet=json) as progress:
            results = recipe.relock(config, image or None, check=check, progress=progress)
    if json:
        print(_json.dumps([r.to_json() for r in results], indent=2))
    else:
        for r in results:
            if not r.changed:
                print(f"{r.image}: every pin is current ({r.recipe})")
                continue
            verb = "re-locked" if r.written else "stale (--check: nothing written)"
            print(f"{r.image}: {verb}: {r.recipe}")
            for package, (old, new) in r.changed.items():
                print(f"  {package}: {old} -> {new}")
    if check and any(r.changed for r in results):
        raise Exit(code=1)


@task(
    help={
        "force": "replace a pre-push hook that envkit did not install (it is kept as pre-push.envkit-backup)",
        "uninstall": "remove envkit's pre-push hook (a hook envkit did not install is left alone)",
        "ttl": "how long the stack stays warm after a push, for the next one (default 900 s)",
    }
)
def hooks(c: Context, force: bool = False, uninstall: bool = False, ttl: str = "900") -> None:
    """Install a git pre-push hook that runs `envkit e2e`, keeping the stack warm between pushes."""
    from envkit import hooks as hooks_mod

    seconds = _seconds("--ttl", ttl)
    assert seconds is not None
    with user_errors():
        done = hooks_mod.uninstall() if uninstall else hooks_mod.install(seconds, force=force)
    for line in done:
        print(line)


ns = Collection(build, gc, up, down, status, config_, e2e, hooks, relock)
