"""Benchmark: the demo's e2e suite through a remote engine, against the local one.

Run by hand from the repository root (not a test)::

    .venv/bin/python bench/remote_engine.py [--reps R] [--workers 4]

The remote engine is Docker 26.1 (classic image store) running as a container on this
machine's engine, started as tests/engines/run.py starts the matrix's engines, and reached the
way CI reaches a ``docker:dind`` service: ``DOCKER_HOST=tcp://<its address>:2375`` from this
machine. So envkit's service host is that address, ports are published on the remote engine's
interfaces, and every health check and test goes over the network to it.

A copy of this repository (the checkout's own stack is left alone) builds the demo's images on
each engine once (``envkit build``: the Debian base by mmdebstrap here, loaded into the engine;
timed, for information), then R times each, interleaved, ``envkit e2e --workers N`` from a
stopped stack: the stack starts (health checks included), ``pytest -n N tests/e2e`` runs, the
stack goes. For each run: seconds from the command's start to the first test's call (a ``-p``
plugin records it), the whole run's seconds, and the tests that passed. The figures are the
medians and their ratios, remote / local, in one run.

Everything it creates carries envkit's labels and is removed at the end: the remote engine's
container with its volumes (every image and container made there), the local stack with
``envkit down --all``; the local demo images are the demo's own, cached by key, and stay.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "engines"))
sys.path.insert(0, str(ROOT / "bench"))

from e2e import FIRST_TEST_PLUGIN  # noqa: E402
from run import ENGINES, build_engine_images, running  # noqa: E402  (tests/engines/run.py)

PASSED = re.compile(r"(\d+) passed")


def say(text: str = "") -> None:
    print(text, flush=True)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Target:
    """One engine the demo runs against: its environment and its samples."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.first: list[float] = []
        self.wall: list[float] = []
        self.passed: list[int] = []


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="envkit-remote-engine-"))
        self.copy = self.tmp / "demo"
        shutil.copytree(
            ROOT,
            self.copy,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", ".envkit*", "__pycache__", "build", "dist", "*.egg-info"
            ),
            symlinks=True,
        )
        (self.tmp / "plugins").mkdir()
        (self.tmp / "plugins" / "bench_first_test.py").write_text(FIRST_TEST_PLUGIN)

    def env(self, name: str, docker_host: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_") and k != "DOCKER_HOST"}
        env.update(
            ENVKIT_STATE_DIR=str(self.tmp / f"state-{name}"),
            ENVKIT_LOCK_DIR=str(self.tmp / f"locks-{name}"),
            PYTHONPATH=str(self.tmp / "plugins"),
        )
        if docker_host:
            env["DOCKER_HOST"] = docker_host
        return env

    def envkit(self, target: Target, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "envkit", *args],
            cwd=self.copy,
            env=target.env,
            capture_output=True,
            text=True,
            check=check,
        )

    def build(self, target: Target) -> None:
        started = time.monotonic()
        done = self.envkit(target, "build", check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench/remote_engine: the demo did not build on {target.name}:\n{done.stderr}")
        say(f"  {target.name}: demo images built in {time.monotonic() - started:.1f}s")

    def e2e(self, target: Target) -> None:
        first = self.tmp / "first-test"
        first.unlink(missing_ok=True)
        env = {**target.env, "BENCH_FIRST_TEST": str(first)}
        started_at, started = time.time(), time.monotonic()
        done = subprocess.run(
            [
                sys.executable, "-m", "envkit", "e2e", "--workers", str(self.args.workers),
                "--", "-q", "-p", "bench_first_test",
            ],
            cwd=self.copy,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        wall = time.monotonic() - started
        found = PASSED.findall(done.stdout)
        passed = int(found[-1]) if found else 0
        if done.returncode != 0:
            tail = f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
            say(f"  {target.name}: e2e failed ({done.returncode}):\n{tail}")
        target.passed.append(passed)
        target.wall.append(wall)
        target.first.append(
            min(float(x) for x in first.read_text().split()) - started_at if first.exists() else wall
        )
        say(f"  {target.name}: first test {target.first[-1]:.2f}s, run {wall:.2f}s, {passed} passed")

    def run(self) -> None:
        tags = build_engine_images()
        with running(ENGINES["classic"], tags["docker"], f"bench-{uuid.uuid4().hex[:8]}") as name:
            ip = subprocess.run(
                ["docker", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", name],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            local = Target("local", self.env("local", None))
            remote = Target("remote", self.env("remote", f"tcp://{ip}:2375"))
            say(f"remote engine: {name} at tcp://{ip}:2375 (Docker 26.1, classic store)")
            try:
                for target in (local, remote):
                    self.build(target)
                for _ in range(self.args.reps):
                    for target in (local, remote):
                        self.e2e(target)
            finally:
                self.envkit(local, "down", "--all", check=False)
        self.report(local, remote)

    def report(self, local: Target, remote: Target) -> None:
        say("")
        for target in (local, remote):
            say(
                f"{target.name:6}: first test median {statistics.median(target.first):.2f}s, "
                f"run median {statistics.median(target.wall):.2f}s, passed {target.passed}"
            )
        first = statistics.median(remote.first) / statistics.median(local.first)
        whole = statistics.median(remote.wall) / statistics.median(local.wall)
        say(f"remote / local: first test {first:.2f}x, whole run {whole:.2f}x")

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(parser.parse_args())
    try:
        bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
