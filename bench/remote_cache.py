"""Benchmark: a fresh machine with a warm remote cache, against building the demo stack.

Run by hand from the repository root, against the local Docker daemon and Debian's
``docker-registry`` (not a test; about 5 minutes, most of it the cold build and its push)::

    .venv/bin/python bench/remote_cache.py [--lookups N]

A copy of the demo stack runs ``envkit e2e`` three ways, each timed from its start to
the first test's call (a ``-p`` plugin records it) and to its end. The copy has a stack
name of its own (``envkit-bench-<random>``: its images are the bench's, and the classic
builder reuses no layer of this checkout's demo images) and a recipe snapshot time of
its own (the rootfs's mtimes: its base layer is not one the daemon holds already), so a
cold build is cold and a pull downloads every layer:

  cold, no cache     machine A, nothing built: mmdebstrap makes the Debian base, the
                     classic builder makes postgres, the assembler the rest; then
                     ``envkit build --push`` fills a registry started for the bench
                     (127.0.0.1, a config and storage of its own) and is timed too;
  cold, warm cache   machine B: another checkout path, another HOME and cache, none
                     of the stack's images here, no state: every image is pulled;
  warm local         machine B again: every image is here (no registry call).

Then the lookup cost, in this process through the engine: one lookup of a present
entry and of an absent one (median of N), and all five images at once (``lookup``, as
``ensure`` does it); and the baseline where it applies, the pull itself: with the
images removed again, ``docker pull`` of the five references at once (what
``docker compose pull`` does with tags it is given), against envkit's images phase on
B (lookups, pulls, label checks, tags). The target: B's first test at least 5x sooner
than A's. Everything it creates (images labelled ``envkit.project=envkit-bench-...``,
the stacks, the registry and its storage, the copies) is removed at the end, also on
an error or Ctrl-C. A MISS is a result, not an error.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conftest import remove_stack_images  # noqa: E402
from e2e import FIRST_TEST_PLUGIN  # noqa: E402
from engine_client import docker_api_client  # noqa: E402  (tests/engine_client.py: the engine envkit uses)
from integration.registry import running_registry  # noqa: E402

from envkit.config.find import load  # noqa: E402
from envkit.docker.engine import Daemon  # noqa: E402
from envkit.images import cache  # noqa: E402

TARGET = 5.0
IMAGES_LINE = re.compile(r"images: (.*?) in ([\d.]+)s")


def say(text: str = "") -> None:
    print(text, flush=True)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = docker_api_client(timeout=600)
        self.stack = f"envkit-bench-{uuid.uuid4().hex[:8]}"
        self.tmp = Path(tempfile.mkdtemp(prefix="envkit-bench-cache-"))
        self.python = sys.executable
        seconds = uuid.uuid4().int % 86400
        self.clock = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
        self.copies: list[tuple[Path, dict[str, str]]] = []
        (self.tmp / "plugins").mkdir()
        (self.tmp / "plugins" / "bench_first_test.py").write_text(FIRST_TEST_PLUGIN)

    def machine(self, name: str, registry: str, like: Path | None = None) -> tuple[Path, dict[str, str]]:
        """A checkout of the demo (renamed stack) and its environment: a HOME of its own."""
        root = self.tmp / f"checkout-{name}"
        if like is None:
            ignore = shutil.ignore_patterns(
                ".git", ".venv", ".envkit*", "__pycache__", "build", "dist", "*.egg-info"
            )
            shutil.copytree(ROOT, root, ignore=ignore, symlinks=True)
            toml = root / "envkit.toml"
            toml.write_text(toml.read_text().replace('name = "envkit-demo"', f'name = "{self.stack}"'))
            # A snapshot time of its own (the rootfs's mtimes): the base's layer is the bench's, not
            # one this checkout's demo images already hold here, so machine B really pulls it.
            recipe = root / "images/base/recipe.toml"
            text, n = re.subn(
                r'snapshot = "(\d{8})T\d{6}Z"', rf'snapshot = "\1T{self.clock}Z"', recipe.read_text()
            )
            assert n == 1, "the demo's recipe has no snapshot"
            recipe.write_text(text)
        else:
            shutil.copytree(like, root, ignore=shutil.ignore_patterns(".envkit*"), symlinks=True)
        home = self.tmp / f"home-{name}"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
        env.update(
            DOCKER_BUILDKIT="0",
            HOME=str(home),
            XDG_CACHE_HOME=str(home / ".cache"),
            ENVKIT_CACHE=registry,
            PYTHONPATH=str(self.tmp / "plugins"),
        )
        self.copies.append((root, env))
        return root, env

    def e2e(self, root: Path, env: dict[str, str]) -> tuple[float, float, str]:
        """``envkit e2e`` in ``root``: seconds to the first test, to the end; its images phase."""
        first = self.tmp / "first-test"
        first.unlink(missing_ok=True)
        started_at, started = time.time(), time.monotonic()
        proc = subprocess.run(
            [self.python, "-m", "envkit", "e2e", "--", "-q", "-p", "bench_first_test"],
            cwd=root,
            env={**env, "BENCH_FIRST_TEST": str(first)},
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
        if proc.returncode != 0:
            tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            raise RuntimeError(f"envkit e2e failed ({proc.returncode}):\n{tail}")
        found = IMAGES_LINE.search(proc.stdout)
        images = f"{found.group(1)} in {found.group(2)}s" if found else "?"
        return min(float(x) for x in first.read_text().split()) - started_at, wall, images

    def build(self, root: Path, env: dict[str, str], *args: str) -> float:
        started = time.monotonic()
        subprocess.run(
            [self.python, "-m", "envkit", "build", "--quiet", *args], cwd=root, env=env, check=True
        )
        return time.monotonic() - started

    def run(self, registry_host: str) -> bool:
        cache_path = f"{registry_host}/{self.stack}"
        a, a_env = self.machine("a", "")  # no cache for the cold build
        say(f"stack {self.stack}, cache {cache_path}")
        say("(1) cold, no cache: envkit e2e on machine A (mmdebstrap, the classic builder, the assembler)")
        cold_first, cold_wall, cold_images = self.e2e(a, a_env)
        say(f"    first test after {cold_first:.1f}s, wall {cold_wall:.1f}s; images: {cold_images}")
        a_env["ENVKIT_CACHE"] = cache_path
        pushed = self.build(a, a_env, "--push")
        say(f"    envkit build --push (5 images to the empty cache): {pushed:.1f}s")

        remove_stack_images(self.client, self.stack)
        b, b_env = self.machine("b", cache_path, like=a)
        say(
            "(2) cold, warm cache: envkit e2e on machine B (another path, HOME and cache; no image, no state)"
        )
        pull_first, pull_wall, pull_images = self.e2e(b, b_env)
        say(f"    first test after {pull_first:.1f}s, wall {pull_wall:.1f}s; images: {pull_images}")
        say("(3) warm local: envkit e2e on machine B again")
        warm_first, warm_wall, warm_images = self.e2e(b, b_env)
        say(f"    first test after {warm_first:.1f}s, wall {warm_wall:.1f}s; images: {warm_images}")

        self.lookups(b, b_env, cache_path)
        self.baseline(b, cache_path, pull_images)

        ratio = cold_first / pull_first
        verdict = "PASS" if ratio >= TARGET else "MISS"
        say(f"\nfirst e2e test: cold build {cold_first:.1f}s / warm cache {pull_first:.1f}s = {ratio:.1f}x "
            f"(target >= {TARGET:g}x): {verdict}")  # fmt: skip
        return ratio >= TARGET

    def lookups(self, root: Path, env: dict[str, str], cache_path: str) -> None:
        config = load(root, env)
        keys = {n: load_key(root, env, n) for n in config.images}
        remote = cache.Remote(cache_path, "bench")
        daemon = Daemon(environ=env)
        n = self.args.lookups
        try:
            present = remote.ref("base", keys["base"])
            absent = remote.ref("base", "0" * 64)
            one = median(n, lambda: daemon.distribution(present, timeout=cache.LOOKUP_TIMEOUT))
            none = median(n, lambda: daemon.distribution(absent, timeout=cache.LOOKUP_TIMEOUT))
            batch = median(max(3, n // 4), lambda: cache.lookup(daemon, remote, keys))
        finally:
            daemon.close()
        say(f"(4) lookups through the engine (median of {n}): a present entry {one * 1000:.1f} ms, "
            f"an absent one {none * 1000:.1f} ms; all {len(keys)} images at once "
            f"{batch * 1000:.1f} ms ({batch * 1000 / len(keys):.1f} ms per image)")  # fmt: skip

    def baseline(self, root: Path, cache_path: str, pull_images: str) -> None:
        """``docker pull`` of the five references at once, as compose pulls tags it is given."""
        refs = [
            f"{cache_path}/{name}:{load_key(root, {}, name)}"
            for name in ("base", "postgres", "redis", "auth", "api")
        ]
        remove_stack_images(self.client, self.stack)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(refs)) as pool:
            list(pool.map(pull, refs))
        pulled = time.monotonic() - started
        remove_stack_images(self.client, self.stack)
        say(f"(5) baseline, the pull itself: `docker pull` of the {len(refs)} references at once "
            f"{pulled:.1f}s; envkit's images phase on B (lookups, pulls, label checks, tags): "
            f"{pull_images}")  # fmt: skip

    def cleanup(self) -> None:
        for root, env in self.copies:
            if root.is_dir():
                subprocess.run(
                    [self.python, "-m", "envkit", "down", "--all"], cwd=root, env=env, capture_output=True
                )
        remove_stack_images(self.client, self.stack)
        shutil.rmtree(self.tmp, ignore_errors=True)


def pull(ref: str) -> None:
    subprocess.run(["docker", "pull", "-q", ref], check=True, capture_output=True)


def load_key(root: Path, env: dict[str, str], image: str) -> str:
    """An image's current key, from the manifests envkit recorded for it in ``root``."""
    latest = root / ".envkit" / "manifests" / image / "latest"
    return latest.read_text().strip()


def median(n: int, call: Callable[[], object]) -> float:
    seconds = []
    for _ in range(n):
        started = time.monotonic()
        call()
        seconds.append(time.monotonic() - started)
    return statistics.median(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=20)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(args)
    try:
        with ExitStack() as stack:
            registry = stack.enter_context(running_registry(bench.tmp / "registry"))
            bench.run(registry.host)
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
