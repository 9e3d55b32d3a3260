"""envkit's Invoke tasks. Re-export them from your own tasks.py::

    from envkit.tasks import ns

The same collection is the ``envkit`` console script. Each task is a thin
layer over library calls: it parses options, calls envkit, and turns an
:class:`~envkit.errors.EnvkitError` into one clear message and a non-zero exit.
"""

from __future__ import annotations

import json as _json
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    import subprocess

    from envkit import stack as stack_mod

    seconds = _seconds("--ttl", ttl)
    if keep and seconds is not None:
        raise Exit("envkit: error: --keep and --ttl exclude each other; pass one", code=2)
    if workers != "auto" and not workers.isdigit():
        raise Exit(f"envkit: error: --workers {workers!r} is not a number or 'auto'", code=2)
    extra = _pytest_args(getattr(c, "remainder", "") or "")
    progress = Lines(sys.stderr)
    started = time.monotonic()
    with user_errors():
        config = config_mod.load()
        tests = config.root / path
        if not tests.exists():
            raise Exit(f"envkit: error: {tests} does not exist; pass --path to the e2e tests", code=2)
        daemon = runtime.Daemon()
        results = build_mod.ensure(config, daemon, progress=progress, build=not no_build)
        built = sum(r.status == "built" for r in results)
        images = f"images: {built} built, {len(results) - built} cached in {time.monotonic() - started:.1f}s"
        stack = stack_mod.Stack(config, daemon, progress)
        before = stack.store.read()
        running = {n for n, s in (before.services.items() if before else ()) if s.status == "healthy"}
        up_started = time.monotonic()
        held = stack.acquire(None, keep=keep, ttl=seconds)
    try:
        wanted = config.service_order()
        how = "attached" if set(wanted) <= running else f"{len(set(wanted) - running)} started"
        stack_line = f"stack {stack.id}: {how} in {time.monotonic() - up_started:.1f}s"
        print(f"envkit e2e: {images}; {stack_line}", file=sys.stderr, flush=True)
        report = config.state_dir / "e2e-junit.xml"
        report.unlink(missing_ok=True)
        command = [sys.executable, "-m", "pytest", "-n", workers, str(tests), f"--junit-xml={report}", *extra]
        env = {**os.environ, "ENVKIT_ROOT": str(config.root)}
        pytest_started = time.monotonic()
        try:
            code = subprocess.run(command, cwd=config.root, env=env, check=False).returncode
        except KeyboardInterrupt:
            code = 130
        counts = _junit_counts(report)
        pytest_line = f"tests: {counts} in {time.monotonic() - pytest_started:.1f}s (exit {code})"
    finally:
        with user_errors():
            held.release(grace=0.0)
    if keep or seconds is not None:
        after = "kept up until `envkit down`" if keep else f"kept up for {seconds:g}s"
    else:
        after = "stopped"
    print(
        f"envkit e2e: {images}; {stack_line}; {pytest_line}; stack {after}; "
        f"total {time.monotonic() - started:.1f}s",
        flush=True,
    )
    if code:
        raise Exit(code=code)


def _pytest_args(remainder: str) -> list[str]:
    """The arguments after `--`, as given: Invoke joins them into one string, losing their quoting
    (`-k "not slow"`), so they are taken from the command line when it holds them."""
    if "--" in sys.argv:
        given = sys.argv[sys.argv.index("--") + 1 :]
        if " ".join(given) == remainder:
            return given
    try:
        return shlex.split(remainder)
    except ValueError as err:
        raise Exit(f"envkit: error: cannot split the pytest arguments after `--`: {err}", code=2) from None


def _junit_counts(report: Path) -> str:
    """``12 passed, 1 failed`` from a JUnit XML report (``no report`` if pytest wrote none)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return "no report"
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    passed = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    parts = [f"{passed} passed"]
    parts += [
        f"{total[k]} {name}"
        for k, name in (("failures", "failed"), ("errors", "errors"), ("skipped", "skipped"))
        if total[k]
    ]
    return ", ".join(parts)


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
    from envkit import recipe as recipe_mod
    from envkit.fsutil import atomic_write_text

    progress = Silent() if json else Lines(sys.stderr)
    results: list[dict[str, Any]] = []
    with user_errors():
        config = config_mod.load()
        recipes = [n for n, spec in config.images.items() if spec.recipe is not None]
        for name in image or []:
            if name not in recipes:
                raise Exit(
                    f"envkit: error: {name!r} is not an image made from a recipe "
                    f"(those are: {', '.join(recipes) or 'none'})",
                    code=2,
                )
        for name in image or recipes:
            spec = config.images[name]
            assert spec.recipe is not None
            now = recipe_mod.resolve(name, spec.recipe, progress)
            changed = {p: v for p, v in now.items() if spec.recipe.packages[p] != v}
            if changed and not check:
                snapshot = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                atomic_write_text(
                    spec.dockerfile, recipe_mod.relock_text(spec.dockerfile_text, changed, snapshot)
                )
            results.append(
                {
                    "image": name,
                    "recipe": str(spec.dockerfile),
                    "changed": {p: {"from": spec.recipe.packages[p], "to": v} for p, v in changed.items()},
                    "written": bool(changed) and not check,
                }
            )
    stale = any(r["changed"] for r in results)
    if json:
        print(_json.dumps(results, indent=2))
    else:
        for r in results:
            if not r["changed"]:
                print(f"{r['image']}: every pin is current ({r['recipe']})")
                continue
            verb = "re-locked" if r["written"] else "stale (--check: nothing written)"
            print(f"{r['image']}: {verb}: {r['recipe']}")
            for package, change in r["changed"].items():
                print(f"  {package}: {change['from']} -> {change['to']}")
    if check and stale:
        raise Exit(code=1)


HOOK_MARKER = "# envkit-hook: pre-push"


@task(
    help={
        "force": "replace a pre-push hook that envkit did not install (it is kept as pre-push.envkit-backup)",
        "uninstall": "remove envkit's pre-push hook (a hook envkit did not install is left alone)",
        "ttl": "how long the stack stays warm after a push, for the next one (default 900 s)",
    }
)
def hooks(c: Context, force: bool = False, uninstall: bool = False, ttl: str = "900") -> None:
    """Install a git pre-push hook that runs `envkit e2e`, keeping the stack warm between pushes."""
    import subprocess

    seconds = _seconds("--ttl", ttl)
    try:
        git_dir = subprocess.run(
            ["git", "rev-parse", "--git-path", "hooks"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise Exit(
            "envkit: error: not inside a git work tree; run `envkit hooks` in your repository", code=1
        ) from None
    hook = Path(git_dir).resolve() / "pre-push"
    ours = hook.is_file() and HOOK_MARKER in hook.read_text(encoding="utf-8", errors="replace")
    backup = hook.with_name("pre-push.envkit-backup")
    if uninstall:
        if not hook.exists():
            print(f"no pre-push hook at {hook}; nothing to remove")
        elif not ours:
            raise Exit(f"envkit: error: {hook} was not installed by envkit; left alone", code=1)
        else:
            hook.unlink()
            print(f"removed envkit's pre-push hook {hook}")
            if backup.exists():
                backup.rename(hook)
                print(f"restored the earlier hook from {backup.name}")
        return
    if hook.exists() and not ours:
        if not force:
            raise Exit(
                f"envkit: error: {hook} exists and was not installed by envkit\n"
                "  fix: merge `envkit e2e` into it by hand, or pass --force to replace it "
                "(it is kept as pre-push.envkit-backup)",
                code=1,
            )
        hook.replace(backup)
        print(f"kept the earlier hook as {backup}")
    hook.parent.mkdir(parents=True, exist_ok=True)
    python = shlex.quote(sys.executable)
    hook.write_text(
        "#!/bin/sh\n"
        f"{HOOK_MARKER}\n"
        "# Installed by `envkit hooks`; `envkit hooks --uninstall` removes it.\n"
        f"# Runs the e2e suite; the stack stays warm for {seconds:g}s, so the next push attaches to it.\n"
        "# Skip it once with `git push --no-verify`.\n"
        f"exec {python} -m envkit e2e --ttl {seconds:g} </dev/null\n",
        encoding="utf-8",
    )
    hook.chmod(0o755)
    print(f"installed {hook}: each push runs `envkit e2e` (stack kept warm for {seconds:g}s)")


ns = Collection(build, gc, up, down, status, e2e, hooks, relock)
