"""This repository's tasks: envkit's own collection plus development tasks.

A project using envkit needs only ``from envkit.tasks import ns``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from invoke import Collection, Context, Exit, task

from envkit import shared_stack
from envkit.tasks import ns as envkit_ns
from envkit.tasks import user_errors

ROOT = Path(__file__).resolve().parent
# Tools run from the environment invoke itself runs in (the venv), whatever PATH says.
PYTHON = shlex.quote(sys.executable)
BUSYBOX = Path("/bin/busybox")
ROOTFS = ROOT / "images" / "busybox" / "rootfs"


@task
def rootfs(c: Context) -> None:
    """Make images/busybox/rootfs from Debian's busybox-static (the demo's base, no pull)."""
    if not BUSYBOX.is_file():
        raise Exit("rootfs: /bin/busybox is missing; install it: apt-get install busybox-static", code=1)
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout
    shutil.rmtree(ROOTFS, ignore_errors=True)
    (ROOTFS / "bin").mkdir(parents=True)
    (ROOTFS / "tmp").mkdir()
    shutil.copy2(BUSYBOX, ROOTFS / "bin" / "busybox")
    for applet in applets.split():
        if applet != "busybox":
            (ROOTFS / "bin" / applet).symlink_to("busybox")


@task(pre=[rootfs])
def e2e(c: Context) -> None:
    """Build the demo stack's images (cached by key), start its services once, check web answers."""
    envkit_ns["build"](c)
    with user_errors(), shared_stack(ttl=0) as stack:
        url = stack.url("web", 8000) + "/health"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode().strip()
        print(f"web answered {response.status} {body!r} at {url} (stack {stack.stack})")


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
    """The benchmarks: no-op builds, and the shared stack against one stack per process."""
    c.run(f"{PYTHON} bench/build_noop.py")
    c.run(f"{PYTHON} bench/shared_stack.py")


ns = Collection(*envkit_ns.tasks.values(), rootfs, e2e, test, lint, bench)
