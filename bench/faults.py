"""Benchmark: how fast envkit cleans up after kill -9, and how long a hung engine can hold it.

Run by hand, against the local Docker daemon (not a test)::

    .venv/bin/python bench/faults.py [--reps 3] [--holders 3]

In a temporary project (one service, busybox httpd with an HTTP check), R times each:

  holders    HOLDERS processes hold the stack; all are killed (-9) at one instant: the time
             until no container or network of the stack is left, less the grace (goal < 2 s).
  reaper     the same, and the reaper is killed with them (its shadow is all that is left):
             the time until nothing is left, less the grace (goal < 5 s).
  hung       the engine (behind a proxy) stops answering `GET /containers/json`, which an
             acquire sends under the state lock: how long `envkit up` waits before its clear
             error, with ENVKIT_LOCK_TIMEOUT=10 (the bound is half of it); and, with
             ENVKIT_BUILD_STALL=5, a build by each builder (`POST /build`, the
             assembler's `POST /images/load`) and a base image pull (`POST
             /images/create`). The goal: an error within the lock timeout (a build's: 10 s).

Everything it creates carries envkit.project=<bench stack> and is removed at the end.
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
import uuid
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import import_busybox, remove_stack_images  # noqa: E402
from engine_client import docker_api_client  # noqa: E402  (tests/engine_client.py: the engine envkit uses)
from faults.proxy import EngineProxy  # noqa: E402

HOLDER = REPO / "tests" / "integration" / "holder_proc.py"
GRACE = 1.0


def say(text: str = "") -> None:
    print(text, flush=True)


class Bench:
    def __init__(self, holders: int) -> None:
        self.holders = holders
        self.client = docker_api_client()
        self.stack = f"envkit-bench-{uuid.uuid4().hex[:8]}"
        self.tmp = Path(tempfile.mkdtemp(prefix="envkit-bench-faults-"))
        self.root = self.tmp / "project"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
        env.update(ENVKIT_ROOT=str(self.root), ENVKIT_GRACE=str(GRACE), **extra)
        return env

    def setup(self) -> None:
        base = import_busybox(self.client, "envkit-bench/busybox", self.stack, self.stack)
        (self.root / "images" / "web").mkdir(parents=True)
        (self.root / "images" / "web" / "Dockerfile").write_text(f"FROM {base}\n")
        (self.root / "envkit.toml").write_text(
            f'[stack]\nname = "{self.stack}"\npull = "never"\n\n[images.web]\n\n'
            '[services.web]\nimage = "web"\nports = [8000]\n'
            'command = ["httpd", "-f", "-p", "8000", "-h", "/etc"]\n'
            'healthcheck = { http = "/hostname", port = 8000 }\n'
        )
        done = subprocess.run(
            [sys.executable, "-m", "envkit", "build"], cwd=self.root, env=self.env(), capture_output=True
        )
        if done.returncode:
            raise SystemExit(done.stderr.decode())

    def gone(self) -> bool:
        label = {"label": f"envkit.project={self.stack}"}
        return not self.client.containers(all=True, filters=label) and not self.client.networks(filters=label)

    def start_holders(self) -> list[subprocess.Popen[str]]:
        procs = [
            subprocess.Popen(
                [sys.executable, str(HOLDER), "--service", "web"],
                cwd=self.root,
                env=self.env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(self.holders)
        ]
        for proc in procs:
            assert proc.stdout is not None
            if not proc.stdout.readline():
                raise SystemExit("a holder did not acquire")
        return procs

    def reapers(self) -> list[psutil.Process]:
        state = str(self.root / ".envkit")
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if "envkit.stack.reaper" in cmd and state in cmd and "--shadow" not in cmd:
                found.append(proc)
        return found

    def reap_after_kill(self, *, with_reaper: bool) -> float:
        procs = self.start_holders()
        deadline = time.monotonic() + 10
        while with_reaper and not self.reapers() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the reaper has started its shadow
        killed = time.monotonic()
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        if with_reaper:
            for reaper in self.reapers():
                reaper.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.communicate(timeout=30)
        while not self.gone():
            if time.monotonic() - killed > 60:
                raise SystemExit("the stack was not reaped within 60 s")
            time.sleep(0.05)
        took = time.monotonic() - killed - GRACE
        while self.reapers():
            time.sleep(0.1)
        return took

    def hung(self, rule: str, command: list[str], **env: str) -> tuple[float, str]:
        with EngineProxy(self.tmp / f"proxy-{uuid.uuid4().hex[:6]}.sock") as proxy:
            proxy.on(rule, "hang")
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "envkit", *command],
                cwd=self.root,
                env=self.env(DOCKER_HOST=proxy.host, **env),
                capture_output=True,
                text=True,
                timeout=300,
            )
            took = time.monotonic() - started
        errors = [line for line in done.stderr.splitlines() if line.startswith("envkit: error:")]
        return took, (errors or ["(no error)"])[0]

    def cleanup(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "envkit", "down", "--all"],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
        )
        remove_stack_images(self.client, self.stack)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--holders", type=int, default=3)
    args = parser.parse_args()
    bench = Bench(args.holders)
    try:
        bench.setup()
        load = os.getloadavg()[0]
        say(f"{os.cpu_count()} CPUs, load average {load:.2f}; {args.holders} holders, grace {GRACE:g}s")
        holders = [bench.reap_after_kill(with_reaper=False) for _ in range(args.reps)]
        say(f"kill -9 of every holder: reaped {', '.join(f'{t:.2f}' for t in holders)} s after the grace")
        reaper = [bench.reap_after_kill(with_reaper=True) for _ in range(args.reps)]
        times = ", ".join(f"{t:.2f}" for t in reaper)
        say(f"kill -9 of the reaper and every holder: reaped {times} s after the grace")
        up, up_error = bench.hung(r"^GET /containers/json", ["up"], ENVKIT_LOCK_TIMEOUT="10")
        say(f"hung engine under the lock (ENVKIT_LOCK_TIMEOUT=10): `envkit up` gave up after {up:.1f}s:")
        say(f"  {up_error}")
        dockerfile = bench.root / "images" / "web" / "Dockerfile"
        original = dockerfile.read_text()
        stalls = []
        for what, text, rule, extra in (
            ("classic builder (a RUN)", original + "RUN true\n", r"^POST /build", []),
            ("assembler (its docker load)", original + "ENV CHANGED=1\n", r"^POST /images/load", []),
            (
                "base image pull",
                "FROM envkit-bench/absent:1\n",
                r"^POST /images/create",
                ["--pull", "missing"],
            ),
        ):
            dockerfile.write_text(text)
            took, error = bench.hung(rule, ["build", *extra], ENVKIT_BUILD_STALL="5")
            say(f"hung build, {what} (ENVKIT_BUILD_STALL=5): `envkit build` gave up after {took:.1f}s:")
            say(f"  {error}")
            stalls.append((f"hung build, {what}: gives up after (stall 5 s)", took, 10.0))
        dockerfile.write_text(original)
        say("")
        say("summary (medians)")
        for name, value, goal in (
            ("reap after kill -9 of every holder (after the grace)", statistics.median(holders), 2.0),
            ("reap after kill -9 of the reaper and every holder", statistics.median(reaper), 5.0),
            ("hung engine: `envkit up` gives up after (lock timeout 10 s)", up, 10.0),
            *stalls,
        ):
            say(f"  {name:<68} {value:6.2f} s   < {goal:g} s   {'PASS' if value < goal else 'MISS'}")
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
