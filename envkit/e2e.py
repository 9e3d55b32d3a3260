"""``envkit e2e``: build (cached) -> start the whole stack -> pytest -n WORKERS -> stop it.

The stack is started before pytest, so its progress is on the user's terminal
and the workers attach at once; it is held for the run and released with no
grace afterwards (or kept, with keep or a TTL). The run ends with one summary
line, and its exit code is pytest's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from envkit import settings as settings_mod
from envkit.config.model import StackConfig
from envkit.docker.engine import Daemon
from envkit.images.build import ensure, tally
from envkit.progress import Progress
from envkit.remote import warn_cache_reach
from envkit.settings import Settings
from envkit.stack.stack import Lease, Stack


@dataclass
class Run:
    """One e2e run: its held stack and the parts of its summary line."""

    config: StackConfig
    lease: Lease
    started: float
    parts: list[str] = field(default_factory=list)

    def line(self) -> str:
        return "envkit e2e: " + "; ".join(self.parts)


def prepare(
    config: StackConfig,
    daemon: Daemon,
    settings: Settings,
    *,
    keep: bool,
    ttl: float | None,
    build: bool,
    progress: Progress,
) -> Run:
    """Ensure every image and hold the whole stack; the run, whose summary so far says how long
    each took."""
    started = time.monotonic()
    warn_cache_reach(config, settings, daemon.endpoint)  # a loopback cache, a remote engine
    results = ensure(config, daemon, progress=progress, build=build, settings=settings)
    images = f"images: {tally(results)} in {time.monotonic() - started:.1f}s"
    stack = Stack(config, daemon, progress, settings=settings)
    before = stack.state_file.read()
    running = {n for n, s in (before.services.items() if before else ()) if s.status == "healthy"}
    up_started = time.monotonic()
    held = stack.acquire(None, keep=keep, ttl=ttl)
    wanted = set(config.service_order())
    how = "attached" if wanted <= running else f"{len(wanted - running)} started"
    return Run(
        config, held, started, [images, f"stack {stack.id}: {how} in {time.monotonic() - up_started:.1f}s"]
    )


def run_tests(run: Run, tests: Path, workers: str, pytest_args: list[str], *, kept: str | None) -> int:
    """Run pytest on ``tests`` against the held stack, then release it; pytest's exit code.

    ``kept`` says how the stack stays up afterwards (None: it stops).
    """
    try:
        report = run.config.state_dir / "e2e-junit.xml"
        report.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            workers,
            str(tests),
            f"--junit-xml={report}",
            *pytest_args,
        ]
        env = {**os.environ, settings_mod.ROOT: str(run.config.root)}
        pytest_started = time.monotonic()
        try:
            code = subprocess.run(command, cwd=run.config.root, env=env, check=False).returncode
        except KeyboardInterrupt:
            code = 130
        run.parts.append(
            f"tests: {junit_counts(report)} in {time.monotonic() - pytest_started:.1f}s (exit {code})"
        )
    finally:
        run.lease.release(grace=0.0)
    run.parts.append(f"stack {kept or 'stopped'}")
    run.parts.append(f"total {time.monotonic() - run.started:.1f}s")
    return code


def junit_counts(report: Path) -> str:
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
