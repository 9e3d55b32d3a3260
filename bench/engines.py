"""Benchmark: build_noop.py and hot_path.py on another engine of the engine matrix.

Run by hand from the repository root (not a test)::

    .venv/bin/python bench/engines.py [--engine containerd] [--bench build_noop] [--bench hot_path]
                                      [--reps N] [--demo [--warm W]]

It starts the engine as tests/engines/run.py does (``running()``: a container of this
machine's engine, its image built by envkit from tests/engines/envkit.toml, the checkout
and the Python base prefix mounted at the same paths), then runs each bench inside it with
``docker exec``: the client beside that engine (``DOCKER_HOST`` unset there, so envkit,
docker-py and the docker CLI all talk to the inner engine's /var/run/docker.sock). Both
benches set ``DOCKER_BUILDKIT=0``, so their baseline is ``docker build`` with the classic
builder, which the inner engine's CLI (docker 26.1, no buildx) has. Every figure it prints
is against ``docker build`` on that same engine, in the same run: ratios, which a loaded
machine moves less than the times. ``docker-compose`` (v1) is not in the engine's image,
so build_noop.py's (e) says "skipped".

``--engine``: ``containerd`` (Docker 26.1 with the containerd image store, the default)
or ``classic`` (Docker 26.1, classic image store). ``--reps``: the benches' ``--reps``
(3 by default: a small count, for a 2-CPU machine). hot_path.py runs with
``--skip-demo`` unless ``--demo`` is given: its part (2) times the demo's edit-to-first-
test (``--warm`` runs, 1 by default), an absolute time, after a cold build of the demo's
stack on that engine (its Debian base made by mmdebstrap from the mirror, which the
engine's image has; postgres by the classic builder): minutes more.

The engine's container, with its volumes (its image store, and so every image and
container the benches made in it), is removed at the end, however the run ends (an
error, Ctrl-C, SIGTERM). Exit code: 0 when every bench ran to its end (a MISS is a
result, not an error).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "engines"))

from run import ENGINES, VENV, Engine, build_engine_images, running  # noqa: E402  (tests/engines/run.py)

BENCHES = ("build_noop", "hot_path")
DOCKER_ENGINES = ("containerd", "classic")  # the benches' baseline is the docker CLI
CONTAINERD_SNAPSHOTTER = ["driver-type", "io.containerd.snapshotter.v1"]  # GET /info DriverStatus
# the benches' own ratio, verdict and demo lines, repeated in the summary
SUMMARY_MARKS = ("docker build / ", "PASS", "MISS", "edit to first test")


def say(text: str = "") -> None:
    print(f"bench/engines: {text}" if text else "", flush=True)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # runs every finally: the engine's container goes


def engine_facts(engine: Engine, container: str) -> str:
    """What the engine in ``container`` is (server version, image store), checked against
    what was asked for."""
    done = subprocess.run(
        ["docker", "exec", container, "docker", "info", "--format", "{{json .}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"bench/engines: docker info in {container} failed: {done.stderr.strip()}")
    info = json.loads(done.stdout)
    containerd = CONTAINERD_SNAPSHOTTER in (info.get("DriverStatus") or [])
    if containerd != (engine.name == "containerd"):
        store = "the containerd image store" if containerd else "the classic image store"
        raise SystemExit(f"bench/engines: the {engine.name} engine runs {store}")
    store = "containerd image store" if containerd else "classic image store"
    return f"Docker {info.get('ServerVersion')}, {store}, storage driver {info.get('Driver')}"


def run_bench(container: str, bench: str, options: argparse.Namespace) -> tuple[int, list[str]]:
    """One bench inside the engine's container, its output streamed; (exit code, lines)."""
    args = ["--reps", str(options.reps)]
    if bench == "hot_path":
        args += ["--warm", str(options.warm)] if options.demo else ["--skip-demo"]
    command = [
        "docker", "exec", "--workdir", str(ROOT), container,
        str(VENV / "bin" / "python"), f"bench/{bench}.py", *args,
    ]  # fmt: skip
    say(f"running bench/{bench}.py {' '.join(args)} inside {container}")
    lines: list[str] = []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"  | {line}", end="", flush=True)
            lines.append(line.rstrip("\n"))
        return proc.wait(), lines
    finally:
        if proc.poll() is None:  # interrupted: the container's removal ends the bench inside
            proc.kill()
            proc.wait()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=DOCKER_ENGINES, default="containerd")
    parser.add_argument("--bench", action="append", choices=BENCHES, help="repeatable; default: both")
    parser.add_argument("--reps", type=int, default=3, help="the benches' --reps (default 3)")
    parser.add_argument("--demo", action="store_true", help="hot_path.py's part (2) too")
    parser.add_argument("--warm", type=int, default=1, help="with --demo: hot_path.py's --warm (default 1)")
    options = parser.parse_args(argv)
    if not (VENV / "bin" / "python").exists():
        raise SystemExit("bench/engines: no venv at .venv: run `make setup` first")
    signal.signal(signal.SIGTERM, _on_sigterm)
    engine = ENGINES[options.engine]
    benches = options.bench or list(BENCHES)
    images = build_engine_images()
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, tuple[int, list[str]]] = {}
    load_before = os.getloadavg()
    started = time.monotonic()
    with running(engine, images[engine.image], run_id) as container:
        facts = engine_facts(engine, container)
        say(f"engine: {facts}, in container {container}; the client beside it")
        for bench in benches:
            results[bench] = run_bench(container, bench, options)
    load_after = os.getloadavg()
    say("")
    say(
        f"summary: on {options.engine} ({facts}), the benches run inside its container; "
        f"every ratio is to `docker build` (classic builder) on that engine, in this run"
    )
    say(
        f"--reps {options.reps}, {time.monotonic() - started:.0f}s in all; load average "
        f"{load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end ({os.cpu_count()} CPUs)"
    )
    for bench, (code, lines) in results.items():
        verdict = "" if code == 0 else f"  FAILED (exit {code})"
        print(f"  bench/{bench}.py{verdict}", flush=True)
        for line in lines:
            if any(mark in line for mark in SUMMARY_MARKS):
                print(f"    {line.strip()}", flush=True)
    return 0 if all(code == 0 for code, _ in results.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
