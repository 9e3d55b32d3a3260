"""Benchmark: the demo stack's e2e suite on one shared stack, against one stack per worker.

Run by hand from the repository root, against the local Docker daemon (not a test)::

    .venv/bin/python bench/e2e.py [--reps R] [--workers 1,2,4] [--warm W]

It builds the demo stack's images (``envkit build``; cached after the first
time), then, for each N in ``--workers`` and R times each, in one run:

  shared      ``pytest -n N tests/e2e``: every worker attaches to one stack,
              started by the first that needs it (what envkit's plugin does);
  per-worker  the same, with each worker given its own state directory, hence
              its own stack, which it tears down itself as it ends (what a
              hand-rolled docker fixture does under xdist): N copies of
              postgres, redis, auth and api.

For each: the wall time from the pytest process's start until the run's
containers are gone (stack start and teardown included, whether pytest or the
reaper removes them), the pytest process's own wall time, the tests that
passed, and the containers created (docker ``create`` events of the demo's containers over the run). Then
the warm path of a pre-push hook: one ``envkit e2e --ttl 300`` leaves the stack
up, and W more ``envkit e2e --ttl 300`` runs each report the time from their
start to the first test's call (a ``-p`` plugin records it) and their wall
time; ``envkit down`` ends it. The target is a first test under 2 s.

Every run uses a state directory under a temporary directory, so a stack this
checkout already has is left alone, and waits until the run's containers are
gone before the next. Everything the runs create carries envkit's labels and is
removed at the end, also on an error or Ctrl-C (the images are the demo's own,
cached by key, and stay). A MISS is a result, not an error: the exit code is
non-zero only when the bench itself failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests"))

from engine_client import docker_api_client  # noqa: E402  (tests/engine_client.py: the engine envkit uses)

PROJECT = "envkit-demo"
SERVICES = 4
WARM_TARGET = 2.0  # seconds to the first test of a second e2e run on a warm stack

PER_WORKER_PLUGIN = """
import os

import pytest


def pytest_configure(config):
    workerinput = getattr(config, "workerinput", None)
    if workerinput:  # each worker: a state directory, hence a stack, of its own
        os.environ["ENVKIT_STATE_DIR"] = os.path.join(os.environ["BENCH_PER_WORKER"], workerinput["workerid"])


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    # Each worker tears its own stack down as it ends (after envkit's plugin released its
    # lease), as a per-worker fixture would, instead of leaving it to the reaper.
    workerinput = getattr(session.config, "workerinput", None)
    if not workerinput:
        return
    from envkit.config.find import find_root, load
    from envkit.docker.engine import Daemon
    from envkit.stack import lease, stack

    pid, started = workerinput["envkit_session"]
    root = find_root(session.config.rootpath)
    stack.Stack(load(root), Daemon()).end_session(lease.session_holder(pid, started, "").id)
"""

FIRST_TEST_PLUGIN = """
import os, time

_seen = []

def pytest_runtest_call(item):
    if not _seen:
        _seen.append(True)
        with open(os.environ["BENCH_FIRST_TEST"], "a") as f:
            f.write(f"{time.time()}\\n")
"""


def say(text: str = "") -> None:
    print(text, flush=True)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="envkit-bench-e2e-"))
        self.client = docker_api_client(timeout=120)
        self.python = sys.executable
        self.state_dirs: list[Path] = []
        self._ids: dict[Path, str] = {}  # state directory -> stack id
        (self.tmp / "plugins").mkdir()
        (self.tmp / "plugins" / "bench_per_worker.py").write_text(PER_WORKER_PLUGIN)
        (self.tmp / "plugins" / "bench_first_test.py").write_text(FIRST_TEST_PLUGIN)

    def env(self, state_dir: Path, **extra: str) -> dict[str, str]:
        self.state_dirs.append(state_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
        env.update(
            ENVKIT_ROOT=str(ROOT),
            ENVKIT_STATE_DIR=str(state_dir),
            PYTHONPATH=str(self.tmp / "plugins"),
            **extra,
        )
        return env

    def stack_ids(self) -> set[str]:
        """The stack ids of this bench's state directories (the stack name plus a hash of the dir)."""
        from envkit.config.find import load

        for d in set(self.state_dirs) - set(self._ids):  # the stack file is read once per directory
            self._ids[d] = load(ROOT, {"ENVKIT_STATE_DIR": str(d)}).id
        return set(self._ids.values())

    def created(self, since: float, until: float) -> int:
        """Containers of this bench's stacks created between ``since`` and ``until`` (docker events)."""
        ids = self.stack_ids()
        events = self.client.events(
            since=int(since),
            until=int(until) + 1,
            filters={"type": "container", "event": "create", "label": [f"envkit.project={PROJECT}"]},
            decode=True,
        )
        return sum(1 for e in events if e.get("Actor", {}).get("Attributes", {}).get("envkit.stack") in ids)

    def mine(self) -> list[dict[str, object]]:
        """The containers of this bench's stacks, running or not."""
        ids = self.stack_ids()
        found = self.client.containers(all=True, filters={"label": f"envkit.project={PROJECT}"})
        return [c for c in found if (c.get("Labels") or {}).get("envkit.stack") in ids]

    def wait_gone(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.mine():
            if time.monotonic() > deadline:
                raise RuntimeError("the run's containers were not removed within 60 s")
            time.sleep(0.2)

    def pytest(self, workers: int, env: dict[str, str], *extra: str) -> tuple[float, int, str]:
        command = [
            self.python,
            "-m",
            "pytest",
            "-n",
            str(workers),
            "tests/e2e",
            "-q",
            "-p",
            "no:cacheprovider",
        ]
        started = time.monotonic()
        proc = subprocess.run([*command, *extra], cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        if proc.returncode != 0:
            raise RuntimeError(f"pytest -n {workers} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
        passed = int(last.split(" passed")[0].split()[-1]) if " passed" in last else 0
        return seconds, passed, last

    def run_mode(self, mode: str, workers: int, rep: int) -> dict[str, float]:
        state = self.tmp / f"{mode}-{workers}-{rep}"
        extra: dict[str, str] = {}
        args: list[str] = []
        if mode == "per-worker":
            extra["BENCH_PER_WORKER"] = str(state)
            args = ["-p", "bench_per_worker"]
            for w in range(workers):
                self.state_dirs.append(state / f"gw{w}")
        env = self.env(state, **extra)
        since = time.time()
        started = time.monotonic()
        seconds, passed, _ = self.pytest(workers, env, *args)
        self.wait_gone()  # a run is done when its stack is gone, whoever removes it
        total = time.monotonic() - started
        created = self.created(since, time.time())
        return {"seconds": seconds, "total": total, "passed": passed, "created": created}

    def warm(self) -> list[tuple[float, float, int]]:
        state = self.tmp / "warm"
        first = self.tmp / "first-test"
        env = self.env(state, BENCH_FIRST_TEST=str(first))
        envkit = [self.python, "-m", "envkit", "e2e", "--ttl", "300", "--", "-q", "-p", "bench_first_test"]
        subprocess.run(envkit, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        out = []
        for _ in range(self.args.warm):
            first.unlink(missing_ok=True)
            since = time.time()
            started = time.monotonic()
            proc = subprocess.run(envkit, cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.monotonic() - started
            if proc.returncode != 0:
                raise RuntimeError(f"envkit e2e failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
            firsts = [float(x) for x in first.read_text().split()]
            out.append((min(firsts) - since, wall, self.created(since, time.time())))
        subprocess.run(
            [self.python, "-m", "envkit", "down"], cwd=ROOT, env=env, capture_output=True, check=True
        )
        self.wait_gone()
        return out

    def main(self) -> int:
        say(f"bench/e2e.py: demo stack, tests/e2e, workers {self.args.workers}, {self.args.reps} reps each")
        started = time.monotonic()
        subprocess.run([self.python, "-m", "envkit", "build", "--quiet"], cwd=ROOT, check=True)
        say(f"images ready in {time.monotonic() - started:.1f}s")
        rows = []
        for workers in self.args.workers:
            for mode in ("shared", "per-worker"):
                samples = [self.run_mode(mode, workers, rep) for rep in range(self.args.reps)]
                rows.append((workers, mode, samples))
                secs = ", ".join(f"{s['total']:.1f}" for s in samples)
                own = ", ".join(f"{s['seconds']:.1f}" for s in samples)
                say(
                    f"  -n {workers} {mode:<10} until gone {secs} s (pytest itself {own} s); "
                    f"passed {samples[0]['passed']:.0f}; "
                    f"containers created {', '.join(str(int(s['created'])) for s in samples)}"
                )
        say()
        say(
            "| -n | shared: wall (median) | per-worker: wall (median) | per-worker / shared "
            "| containers shared / per-worker |"
        )
        say("|---|---|---|---|---|")
        ok = True
        for workers in self.args.workers:
            shared = [s for w, m, ss in rows if w == workers and m == "shared" for s in ss]
            per = [s for w, m, ss in rows if w == workers and m == "per-worker" for s in ss]
            ms = statistics.median(s["total"] for s in shared)
            mp = statistics.median(s["total"] for s in per)
            cs = sorted({int(s["created"]) for s in shared})
            cp = sorted({int(s["created"]) for s in per})
            ok = ok and cs == [SERVICES]
            say(f"| {workers} | {ms:.1f} s | {mp:.1f} s | {mp / ms:.2f}x | {cs} / {cp} |")
        say(f"one stack per shared run ({SERVICES} containers): {'PASS' if ok else 'MISS'}")
        warm = self.warm()
        say()
        for first, wall, created in warm:
            say(
                f"warm envkit e2e: first test after {first:.2f}s, wall {wall:.1f}s, "
                f"containers created {created}"
            )
        best = statistics.median(f for f, _, _ in warm)
        verdict = "PASS" if best < WARM_TARGET else "MISS"
        say(f"warm time to first test (median): {best:.2f}s (target < {WARM_TARGET:g}s): {verdict}")
        return 0

    def cleanup(self) -> None:
        for state_dir in set(self.state_dirs):
            if state_dir.is_dir():
                env = self.env(state_dir)
                subprocess.run(
                    [self.python, "-m", "envkit", "down", "--all"], cwd=ROOT, env=env, capture_output=True
                )
        for c in self.mine():
            self.client.remove_container(c["Id"], force=True, v=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--warm", type=int, default=3)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(args)
    try:
        return bench.main()
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
