"""envkit's Invoke tasks. Re-export them from your own tasks.py::

    from envkit.tasks import ns

The same collection is the ``envkit`` console script. Each task is a thin
layer over library calls: it parses options, calls envkit, and turns an
:class:`~envkit.errors.EnvkitError` into one clear message and a non-zero exit.
"""

from __future__ import annotations

import json as _json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from invoke import Collection, Context, Exit, task

from envkit import build as build_mod
from envkit import config as config_mod
from envkit import runtime
from envkit.errors import EnvkitError
from envkit.progress import Lines, Progress, Silent

if TYPE_CHECKING:
    from envkit import stack as stack_mod


@contextmanager
def user_errors() -> Iterator[None]:
    """Report envkit's errors as ``envkit: error: ...`` and exit 1, with no traceback."""
    try:
        yield
    except EnvkitError as err:
        raise Exit(f"envkit: error: {err}", code=1) from None
    except KeyboardInterrupt:
        raise Exit("envkit: interrupted", code=130) from None


def _progress(quiet: bool) -> Progress:
    return Silent() if quiet else Lines(sys.stderr)


@task(
    iterable=["image"],
    help={
        "image": "build only this image (and its parents); repeatable",
        "explain": "for every image, say why it was rebuilt or that it was cached",
        "json": "print one JSON list on stdout: image, key, tag, status, seconds",
        "quiet": "print nothing but errors (and the JSON, with --json)",
        "pull": "pull policy for external base images: missing (default), always or never",
        "jobs": "how many independent images to build at once (default 4)",
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
) -> None:
    """Build the stack's images whose inputs changed; the rest are cached."""
    if pull is not None and pull not in config_mod.PULL_POLICIES:
        raise Exit(
            f"envkit: error: --pull {pull!r} is not a pull policy; "
            f"use one of {', '.join(config_mod.PULL_POLICIES)}",
            code=2,
        )
    if not jobs.isdigit() or int(jobs) < 1:
        raise Exit(f"envkit: error: --jobs {jobs!r} is not a whole number of at least 1", code=2)
    started = time.monotonic()
    with user_errors():
        config = config_mod.load()
        daemon = runtime.Daemon()
        results = build_mod.ensure(
            config, daemon, names=image or None, pull=pull, progress=_progress(quiet), jobs=int(jobs)
        )
    if json:
        print(_json.dumps([r.to_json() for r in results], indent=2))
        return
    if quiet:
        return
    width = max(len(r.image) for r in results) if results else 0
    for r in results:
        seconds = f"  {r.seconds:.1f}s" if r.status == "built" else ""
        print(f"{r.image:<{width}}  {r.status:<6}  {r.tag}{seconds}")
        if explain:
            for reason in r.reasons or ["inputs unchanged since the last build"]:
                print(f"{'':<{width}}    - {reason}")
    built = sum(r.status == "built" for r in results)
    print(
        f"{len(results)} images: {built} built, {len(results) - built} cached "
        f"in {time.monotonic() - started:.1f}s"
    )


@task(
    help={
        "dry_run": "list what would be removed, remove nothing",
        "json": "print the result as JSON",
    }
)
def gc(c: Context, dry_run: bool = False, json: bool = False) -> None:
    """Remove this stack's images whose keys are no longer current."""
    with user_errors():
        config = config_mod.load()
        daemon = runtime.Daemon()
        result = build_mod.gc(config, daemon, dry_run=dry_run, progress=_progress(json))
    if json:
        print(_json.dumps(result.to_json(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for tag in result.removed:
        print(f"{verb} {tag}")
    for tag in result.kept_in_use:
        print(f"kept {tag} (a container uses it)")
    print(f"{len(result.removed)} image tags {verb}")


def _seconds(option: str, raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise Exit(f"envkit: error: {option} {raw!r} is not a number of seconds (>= 0)", code=2)
    return value


def _stack(quiet: bool = True) -> stack_mod.Stack:
    from envkit import stack as stack_mod  # not imported by `envkit build`

    config = config_mod.load()
    return stack_mod.Stack(config, runtime.Daemon(), _progress(quiet))


@task(
    iterable=["service"],
    help={
        "service": "start only this service (and what it depends on); repeatable; default: all",
        "keep": "hold the stack until `envkit down` (the default; excludes --ttl)",
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
    """Start the shared stack (or attach to it) and pin it up until `envkit down`."""
    seconds = _seconds("--ttl", ttl)
    if keep and seconds is not None:
        raise Exit("envkit: error: --keep and --ttl exclude each other; pass one", code=2)
    started = time.monotonic()
    with user_errors():
        stack = _stack(quiet)
        held = stack.acquire(service or None)
        try:
            stack.pin(seconds)
        finally:
            held.release()
    handle = held.handle
    if json:
        print(
            _json.dumps(
                {"stack": handle.stack, "endpoints": _endpoints(handle), "env": handle.env()}, indent=2
            )
        )
        return
    if quiet:
        return
    until = "until `envkit down`" if seconds is None else f"for {seconds:g}s (or until `envkit down`)"
    print(f"stack {handle.stack} is up in {time.monotonic() - started:.1f}s, held {until}")
    for name, ports in _endpoints(handle).items():
        for port, address in ports.items():
            print(f"  {name}:{port} -> {address}")


def _endpoints(handle: stack_mod.StackHandle) -> dict[str, dict[str, str]]:
    return {
        name: {str(p): f"{handle.host}:{hp}" for p, hp in sorted(ports.items())}
        for name, ports in sorted(handle.ports.items())
    }


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
        removed, holders = stack.down(force=all)
    stopped = all or not holders
    if json:
        print(
            _json.dumps(
                {
                    "stack": stack.id,
                    "stopped": stopped,
                    "containers_removed": removed,
                    "holders": [h.describe() for h in holders],
                },
                indent=2,
            )
        )
        return
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
    """Show the stack: services, health, endpoints, holders and how long it stays up."""
    with user_errors():
        info = _stack().status()
    if json:
        print(_json.dumps(info, indent=2))
        return
    print(f"stack {info['stack']}: {'running' if info['running'] else 'not running'} ({info['state_dir']})")
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
        print(f"  - {who}; {'alive' if h['alive'] else 'dead'}, holding for {h['age']:.0f}s")
    idle = info["idle"]
    if idle:
        left = "until `envkit down`" if idle["keep"] else f"for {idle['ttl_left']:.0f}s more"
        print(f"no holder for {idle['since']:.0f}s; kept up {left}")
    print(f"reaper: {'watching' if info['reaper'] else 'not running'}")


ns = Collection(build, gc, up, down, status)
