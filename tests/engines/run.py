"""envkit's engine matrix: its integration tiers run against the engines users run.

Each engine runs as a container on this machine's own engine, its image made by
envkit from tests/engines/envkit.toml (a Debian trixie recipe: docker.io 26.1 and
podman 5.4; nothing is pulled). The checkout and the Python its venv was made
from are mounted at the same paths, and the tiers run inside the engine's
container: the client beside the engine, as on a developer's machine or a CI
runner with its own daemon.

    python tests/engines/run.py                      # every engine, the default tiers
    python tests/engines/run.py --engine containerd  # one engine (repeatable)
    python tests/engines/run.py -- -k recipe         # extra pytest arguments

Engines: ``classic`` (Docker 26.1, classic image store), ``containerd`` (Docker
26.1 with the containerd image store, as Docker 29 installs by default),
``podman`` (Podman 5.4's Docker-compatible API). Every container this starts
carries envkit's labels and is removed with its volumes when the run ends,
however it ends. Exit code: 0 when every tier passed on every engine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENV = ROOT / ".venv"

# The tiers that exercise what differs between engines: image archives and IDs (assembler,
# recipe), the classic builder and keys (build), registries (remote cache), and running
# containers, health checks and teardown (the shared stack), what a killed build leaves (gc), the
# connection and its time bounds (daemon), and what envkit must do the same on every engine.
TIERS = (
    "tests/integration/test_assembler.py",
    "tests/integration/test_build.py",
    "tests/integration/test_recipe_build.py",
    "tests/integration/test_remote_cache.py",
    "tests/integration/test_shared_stack.py",
    "tests/integration/test_engines.py",
    "tests/integration/test_gc_leftovers.py",
    "tests/integration/test_daemon.py",
    "tests/integration/test_client_container.py",  # beside the engine in its container: ports
)


@dataclass(frozen=True)
class Engine:
    name: str
    image: str  # an image of tests/engines/envkit.toml
    env: tuple[str, ...] = ()
    # tiers left out on this engine, and why (run them anyway with --all-tiers)
    left_out: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return {
            "classic": "Docker 26.1, classic image store",
            "containerd": "Docker 26.1, containerd image store",
            "podman": "Podman 5.4",
        }[self.name]


ENGINES = {
    "classic": Engine("classic", "docker", ("ENVKIT_ENGINE_STORE=classic",)),
    "containerd": Engine("containerd", "docker", ("ENVKIT_ENGINE_STORE=containerd",)),
    "podman": Engine(
        "podman",
        "podman",
        left_out=(
            (
                "tests/integration/test_remote_cache.py",
                "Podman pushes to a plain-HTTP registry only if registries.conf names it insecure, "
                "and the tests' registry listens on a port chosen per run",
            ),
        ),
    ),
}

# What a dockerd or podman needs inside a container of this machine's engine (which lacks
# CAP_SYS_RESOURCE, so --privileged fails): every other capability, no seccomp or AppArmor
# profile, writable /sys and cgroups (the entrypoints remount them), every device.
PRIVILEGES = (
    "--cap-add=ALL",
    "--cap-drop=SYS_RESOURCE",
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
    "--security-opt=systempaths=unconfined",
    "--device-cgroup-rule=a *:* rwm",
)
STORES = ("/var/lib/docker", "/var/lib/containerd", "/var/lib/containers")  # anonymous volumes
READY_WITHIN = 90.0


def say(text: str) -> None:
    print(f"engines: {text}", flush=True)


def docker(*args: str, check: bool = True, capture: bool = True, timeout: float = 120) -> str:
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=capture, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"engines: docker {shlex.join(args)} did not finish within {timeout:g}s") from None
    if check and done.returncode != 0:
        raise SystemExit(f"engines: docker {shlex.join(args)} failed: {(done.stderr or '').strip()}")
    return done.stdout or ""


def build_engine_images() -> dict[str, str]:
    """The engines' images, built by envkit itself (a no-op when their inputs are unchanged)."""
    say("building the engine images with envkit (tests/engines/envkit.toml)")
    done = subprocess.run(
        [str(VENV / "bin" / "envkit"), "build", "--quiet", "--json"],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"engines: envkit build of the engine images failed:\n{done.stderr}")
    return {entry["image"]: entry["tag"] for entry in json.loads(done.stdout)}


@contextmanager
def running(engine: Engine, tag: str, run_id: str) -> Iterator[str]:
    """An engine's container, ready to answer; removed with its volumes at the end."""
    name = f"envkit-engines-{engine.name}-{run_id}"
    python = Path(sys.base_prefix)
    args = [
        "run", "--detach", "--name", name,
        "--label", "envkit.project=envkit-engines",
        "--label", f"envkit.stack=envkit-engines-{run_id}",
        *PRIVILEGES,
        *(f"--volume={store}" for store in STORES),
        f"--volume={python}:{python}:ro",
        f"--volume={ROOT}:{ROOT}",
        "--publish=127.0.0.1::2375",
        *(f"--env={item}" for item in engine.env),
        tag,
    ]  # fmt: skip
    try:
        docker(*args)
        deadline = time.monotonic() + READY_WITHIN
        while True:
            try:
                answer = subprocess.run(
                    ["docker", "exec", name, "docker", "version", "--format", "{{.Server.Version}}"],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=10,
                )
            except subprocess.TimeoutExpired:
                answer = subprocess.CompletedProcess([], 1, "", "")
            if answer.returncode == 0:
                say(f"{engine.name}: engine {answer.stdout.strip()} answers ({engine.describe()})")
                break
            if time.monotonic() > deadline:
                logs = docker("logs", "--tail", "30", name, check=False)
                raise SystemExit(f"engines: {engine.name} did not answer within {READY_WITHIN:.0f}s:\n{logs}")
            time.sleep(1)
        yield name
    finally:
        docker("rm", "--force", "--volumes", name, check=False)


def run_tiers(engine: Engine, container: str, tiers: Sequence[str], extra: Sequence[str]) -> int:
    python = VENV / "bin" / "python"
    command = [
        "docker", "exec", "--workdir", str(ROOT), "--env", f"ENVKIT_TEST_ENGINE={engine.name}",
        container, str(python), "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-q",
        *tiers, *extra,
    ]  # fmt: skip
    say(f"{engine.name}: pytest {' '.join(tiers)} {' '.join(extra)}".rstrip())
    return subprocess.run(command, check=False).returncode


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # runs every finally: the engines' containers go


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", action="append", choices=sorted(ENGINES), help="repeatable; default: all")
    parser.add_argument("--tier", action="append", help="a test path to run (repeatable); default: the tiers")
    parser.add_argument("--all-tiers", action="store_true", help="also the tiers an engine leaves out")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    options = parser.parse_args(argv)
    if not (VENV / "bin" / "python").exists():
        raise SystemExit("engines: no venv at .venv: run `make setup` first")
    signal.signal(signal.SIGTERM, _stop)
    names = options.engine or list(ENGINES)
    tiers = options.tier or list(TIERS)
    images = build_engine_images()
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, tuple[int, float]] = {}
    for name in names:
        engine = ENGINES[name]
        started = time.monotonic()
        left_out = {} if options.all_tiers or options.tier else dict(engine.left_out)
        for tier, why in left_out.items():
            say(f"{name}: {tier} left out: {why}")
        with running(engine, images[engine.image], run_id) as container:
            code = run_tiers(engine, container, [t for t in tiers if t not in left_out], options.pytest_args)
        results[name] = (code, time.monotonic() - started)
    say("summary")
    for name, (code, seconds) in results.items():
        verdict = "passed" if code == 0 else f"FAILED (pytest exit {code})"
        print(f"  {name:<11} {ENGINES[name].describe():<36} {verdict:<24} {seconds:6.0f}s", flush=True)
    return 0 if all(code == 0 for code, _ in results.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
