"""This repository's tasks: envkit's own collection (build, up, down, status, e2e, hooks, gc)
plus development tasks.

A project using envkit needs only ``from envkit.tasks import ns``.
"""

from __future__ import annotations

import shlex
import sys

from invoke import Collection, Context, task

from envkit.tasks import ns as envkit_ns

# Tools run from the environment invoke itself runs in (the venv), whatever PATH says.
PYTHON = shlex.quote(sys.executable)


@task(help={"args": "extra arguments for pytest"})
def test(c: Context, args: str = "") -> None:
    """Run the test suite (unit, then integration against the real daemon)."""
    c.run(f"{PYTHON} -m pytest {args}", pty=False)


@task
def lint(c: Context) -> None:
    """ruff and mypy on the package."""
    c.run(f"{PYTHON} -m ruff check envkit tests bench tasks.py")
    c.run(f"{PYTHON} -m ruff format --check envkit tests bench tasks.py")
    c.run(f"{PYTHON} -m mypy")


@task
def bench(c: Context) -> None:
    """The benchmarks: no-op builds, the shared stack against one stack per process, the e2e suite."""
    c.run(f"{PYTHON} bench/build_noop.py")
    c.run(f"{PYTHON} bench/shared_stack.py")
    c.run(f"{PYTHON} bench/e2e.py")


ns = Collection(*envkit_ns.tasks.values(), test, lint, bench)
