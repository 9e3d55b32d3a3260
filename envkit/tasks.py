"""envkit's Invoke tasks. Re-export them from your own tasks.py::

    from envkit.tasks import ns

The same collection is the ``envkit`` console script. Each task is a thin
layer over library calls: it parses options, calls envkit, and turns an
:class:`~envkit.errors.EnvkitError` into one clear message and a non-zero exit.
"""

from __future__ import annotations

import json as _json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from invoke import Collection, Context, Exit, task

from envkit import build as build_mod
from envkit import config as config_mod
from envkit import runtime
from envkit.errors import EnvkitError
from envkit.progress import Lines, Progress, Silent


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


ns = Collection(build, gc)
