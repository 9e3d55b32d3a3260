"""Benchmark: what a no-op ``envkit build`` costs next to ``docker build`` and compose.

Run by hand, against the local Docker daemon (not a test)::

    .venv/bin/python bench/build_noop.py [--reps N] [--keep-going]

It generates, in a temporary directory, a stack of 5 images over 10,000 files
and 200 MB of seeded random (incompressible, reproducible) bytes, then measures:

  (a) cold key computation: ``envkit.images.build.plan`` with an empty state dir,
  (b) the warm no-op: ``python -m envkit build --quiet`` in a subprocess, and
      ``envkit.images.build.ensure`` in-process, once every image exists,
  (c) the re-key after editing one file (in-process ``plan``),
  (d) the baseline: ``docker build`` (CLI, classic builder) of the same 5 images
      with a warm layer cache,
  (e) ``docker-compose build`` (v1) of the same 5 images, warm too.

Each timed figure is the median of several runs. Everything it creates in
Docker carries ``envkit.project=<bench stack>`` and is removed at the end, as is
the temporary directory, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import import_busybox  # noqa: E402  (tests/conftest.py: busybox rootfs -> docker import)
from engine_client import docker_api_client  # noqa: E402  (tests/engine_client.py: the engine envkit uses)

from envkit.config import find as config_mod  # noqa: E402
from envkit.config import model as config_model  # noqa: E402
from envkit.docker import labels  # noqa: E402
from envkit.docker.engine import Daemon  # noqa: E402
from envkit.images import build as build_mod  # noqa: E402
from envkit.images.digest import Hasher  # noqa: E402

SEED = 20240601
# name -> parent ("base" is another image of the stack; None means the imported busybox)
IMAGES: dict[str, str | None] = {
    "base": None,
    "api": "base",
    "worker": "base",
    "tools": "base",
    "web": None,
}
FILES_PER_IMAGE = 2000  # including the Dockerfile, .dockerignore and one ignored file
LARGE_PER_IMAGE = 10
BYTES_PER_IMAGE = 40_000_000  # 5 images -> 200 MB
SMALL_SIZES = (256, 8192)
FILES_PER_DIR = 100

NOOP_TARGET_RATIO = 20.0
REKEY_TARGET_SECONDS = 0.3
COMPOSE = "/usr/bin/docker-compose"


# --------------------------------------------------------------------------- helpers


class RecordingHasher(Hasher):
    """envkit's Hasher, remembered so the bench can read hashed_files/hashed_bytes."""

    instances: list[RecordingHasher] = []  # noqa: RUF012

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        RecordingHasher.instances.append(self)


def hashed() -> tuple[int, int]:
    """(files, bytes) hashed by the Hashers made since the last call."""
    files = sum(h.hashed_files for h in RecordingHasher.instances)
    size = sum(h.hashed_bytes for h in RecordingHasher.instances)
    RecordingHasher.instances.clear()
    return files, size


@dataclass
class Sample:
    seconds: list[float]
    files: int = 0  # hashed per run (last run)
    bytes: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def spread(self) -> str:
        return ", ".join(f"{s:.3f}" for s in self.seconds)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} B"


def say(text: str = "") -> None:
    print(text, flush=True)


def run(cmd: list[str], *, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; when interrupted, stop it and wait for it before re-raising.

    A docker client killed outright can leave the daemon finishing (and committing) a
    build after the bench has cleaned up; a SIGINT lets it cancel the build first.
    """
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise
    if proc.returncode != 0:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------- the stack on disk


def generate(root: Path, stack: str, busybox_ref: str) -> tuple[int, int]:
    """Write envkit.toml and the 5 contexts; return (files, bytes) written in the contexts."""
    total_files = total_bytes = 0
    toml = [f'[stack]\nname = "{stack}"\npull = "never"\n']
    for image, parent in IMAGES.items():
        context = root / "images" / image
        context.mkdir(parents=True)
        toml.append(f'[images.{image}]\ncontext = "images/{image}"\n')
        dockerfile = f"FROM {parent or busybox_ref}\nCOPY . /app\n"
        (context / "Dockerfile").write_text(dockerfile)
        # Real projects have ignore rules, and envkit must not pay for matching them on a no-op.
        # (".dockerignore" itself too: else the docker CLI, which appends to it when the
        # Dockerfile lies outside the context, would make the baseline's COPY miss its cache.)
        ignore = "# editor and build droppings\n**/*.tmp\n**/*.swp\n.dockerignore\n"
        (context / ".dockerignore").write_text(ignore)
        (context / "notes.tmp").write_text("ignored")
        extra = len(dockerfile) + len(ignore) + len("ignored")
        rng = random.Random(f"{SEED}/{image}")
        n_small = FILES_PER_IMAGE - 3 - LARGE_PER_IMAGE
        small = [rng.randint(*SMALL_SIZES) for _ in range(n_small)]
        large_total = BYTES_PER_IMAGE - extra - sum(small)
        weights = [rng.uniform(0.5, 1.5) for _ in range(LARGE_PER_IMAGE)]
        large = [int(large_total * w / sum(weights)) for w in weights]
        large[-1] += large_total - sum(large)
        for i, size in enumerate(small):
            path = context / "src" / f"pkg{i // FILES_PER_DIR:02d}" / f"mod{i:04d}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(size))
        for i, size in enumerate(large):
            path = context / "assets" / f"blob{i:02d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(size))
        total_files += 3 + len(small) + len(large)
        total_bytes += extra + sum(small) + sum(large)
    (root / "envkit.toml").write_text("\n".join(toml))
    return total_files, total_bytes


def count_tree(root: Path) -> tuple[int, int]:
    """Independent check of what is on disk: regular files and their bytes."""
    files = size = 0
    for directory, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(directory, name)).st_size
    return files, size


# --------------------------------------------------------------------------- Docker cleanup


def remove_stack(client: docker.APIClient, stack: str) -> int:
    """Remove every image (intermediates too) labelled envkit.project=<stack>, children first."""
    removed = 0
    for _ in range(6):
        images = client.images(all=True, filters={"label": f"{labels.PROJECT}={stack}"})
        images = [i for i in images if (i.get("Labels") or {}).get(labels.PROJECT) == stack]
        if not images:
            break
        for image in sorted(images, key=lambda i: i.get("Created", 0), reverse=True):
            try:
                client.remove_image(image["Id"], force=True)
                removed += 1
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as err:  # a child still uses it: next pass
                if err.status_code != 409:
                    raise
    return removed


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, reps: int) -> None:
        self.reps = reps
        self.stack = f"envkit-bench-{uuid.uuid4().hex[:8]}"
        self.daemon = Daemon()
        self.client = docker_api_client()  # docker-py, for the bench's own setup and cleanup
        self.tmp = Path(tempfile.mkdtemp(prefix="envkit-bench-"))
        self.root = self.tmp / "project"
        self.root.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
        self.env.update(
            ENVKIT_ROOT=str(self.root),
            ENVKIT_LOCK_DIR=str(self.tmp / "locks"),  # keep envkit's lock files out of ~/.cache
            DOCKER_BUILDKIT="0",  # the classic builder, as envkit uses
            COMPOSE_DOCKER_CLI_BUILD="0",
        )
        os.environ["ENVKIT_LOCK_DIR"] = self.env["ENVKIT_LOCK_DIR"]
        self.results: dict[str, Sample] = {}
        self.notes: list[str] = []

    def config(self, state_dir: Path | None = None) -> config_model.StackConfig:
        environ = {"ENVKIT_STATE_DIR": str(state_dir)} if state_dir else {}
        return config_mod.load(self.root, environ=environ)

    # -- setup

    def setup(self) -> None:
        busybox = import_busybox(self.client, "envkit-bench/busybox", self.stack, self.stack)
        say(f"stack {self.stack} in {self.root}")
        say(f"base image: {busybox} (docker import of /bin/busybox, labelled envkit.project={self.stack})")
        started = time.perf_counter()
        files, size = generate(self.root, self.stack, busybox)
        on_disk = count_tree(self.root / "images")
        say(
            f"generated {files:,} files, {mb(size)} in {len(IMAGES)} contexts "
            f"in {time.perf_counter() - started:.1f}s (on disk: {on_disk[0]:,} files, {mb(on_disk[1])})"
        )
        if on_disk != (files, size) or not 190e6 <= size <= 210e6:
            raise RuntimeError(f"generated tree is not what was intended: {on_disk} vs {(files, size)}")
        for image, parent in IMAGES.items():
            say(f"  {image:<7} FROM {parent or busybox}")

    # -- (a)

    def cold_plan(self) -> None:
        say("\n(a) cold key computation: envkit.images.build.plan, empty state dir")
        seconds = []
        for i in range(self.reps):
            state = self.tmp / f"state-cold-{i}"
            config = self.config(state)
            hashed()
            plan: build_mod.Plan | None = None

            def go(config: config_model.StackConfig = config) -> None:
                nonlocal plan
                plan = build_mod.plan(config, self.daemon)

            seconds.append(timed(go))
            files, size = hashed()
            assert plan is not None
            say(f"  run {i + 1}: {seconds[-1]:.3f}s  hashed {plan.hashed_files:,} files / {mb(size)}")
            shutil.rmtree(state)
        self.results["a"] = Sample(seconds, files, size)

    # -- first build, then (b)

    def first_build(self) -> None:
        say("\nfirst envkit build (builds all 5 images; not a benchmark figure)")
        config = self.config()
        hashed()
        results: list[build_mod.ImageResult] = []

        def go() -> None:
            results.extend(build_mod.ensure(config, self.daemon))

        seconds = timed(go)
        files, size = hashed()
        for r in results:
            say(f"  {r.image:<7} {r.status:<6} {r.tag}  {r.seconds:.1f}s")
        say(f"  total {seconds:.1f}s, hashed {files:,} files / {mb(size)}")
        if any(r.status != "built" for r in results):
            raise RuntimeError("the first build should have built every image")

    def noop(self) -> None:
        say("\n(b) warm no-op: `python -m envkit build --quiet` (subprocess, ENVKIT_ROOT set)")
        cmd = [sys.executable, "-m", "envkit", "build", "--quiet"]
        check = run([*cmd, "--json"], env=self.env, cwd=self.root)
        statuses = {r["image"]: r["status"] for r in json.loads(check.stdout)}
        if set(statuses.values()) != {"cached"}:
            raise RuntimeError(f"the no-op build rebuilt something: {statuses}")
        cache = self.root / ".envkit" / "stat-cache.json"
        before = cache.stat().st_mtime_ns
        seconds = [timed(lambda: run(cmd, env=self.env, cwd=self.root)) for _ in range(self.reps)]
        untouched = cache.stat().st_mtime_ns == before
        say(f"  runs: {', '.join(f'{s:.3f}' for s in seconds)}s  (all 5 images cached)")
        say(
            "  stat cache "
            + ("untouched by these runs -> 0 files hashed" if untouched else "REWRITTEN -> files were hashed")
        )
        self.results["b_cli"] = Sample(seconds, 0 if untouched else -1)

        startup = [
            timed(lambda: run([sys.executable, "-c", "import envkit.cli"], env=self.env))
            for _ in range(self.reps)
        ]
        self.results["b_import"] = Sample(startup)
        say(f"  of which interpreter start + `import envkit.cli`: {statistics.median(startup):.3f}s (median)")

        say("  in-process envkit.images.build.ensure (config loaded once):")
        config = self.config()
        seconds = []
        for _ in range(self.reps):
            hashed()
            started = time.perf_counter()
            results = build_mod.ensure(config, self.daemon)
            seconds.append(time.perf_counter() - started)
            files, size = hashed()
            if any(r.status != "cached" for r in results):
                raise RuntimeError("the in-process no-op rebuilt something")
        say(f"    runs: {', '.join(f'{s:.3f}' for s in seconds)}s, hashed {files} files / {mb(size)}")
        self.results["b_inproc"] = Sample(seconds, files, size)

        say("  in-process envkit.images.build.plan alone (keys only, no image lookup):")
        seconds = []
        for _ in range(self.reps):
            hashed()
            seconds.append(timed(lambda: build_mod.plan(config, self.daemon)))
            files, size = hashed()
        say(f"    runs: {', '.join(f'{s:.3f}' for s in seconds)}s, hashed {files} files / {mb(size)}")
        self.results["b_plan"] = Sample(seconds, files, size)

    # -- (d) and (e)

    def baseline_dockerfiles(self, tool: str, repo_prefix: str) -> dict[str, Path]:
        """Dockerfiles outside the contexts whose FROM base points at this tool's own base tag."""
        folder = self.tmp / "baseline" / tool
        folder.mkdir(parents=True)
        out = {}
        for image, parent in IMAGES.items():
            text = (self.root / "images" / image / "Dockerfile").read_text()
            if parent is not None:
                text = text.replace(f"FROM {parent}\n", f"FROM {repo_prefix}/{parent}:bench\n", 1)
            out[image] = folder / f"{image}.Dockerfile"
            out[image].write_text(text)
        return out

    def docker_build(self) -> None:
        say("\n(d) baseline: `docker build` CLI (classic builder) of the 5 images, warm layer cache")
        prefix = f"{self.stack}-docker"
        dockerfiles = self.baseline_dockerfiles("docker", prefix)

        def all_five() -> None:
            for image in IMAGES:  # parents first: base is first
                run(
                    [
                        "docker", "build", "-q", "--force-rm",
                        "--label", f"{labels.PROJECT}={self.stack}",
                        "-f", str(dockerfiles[image]),
                        "-t", f"{prefix}/{image}:bench",
                        str(self.root / "images" / image),
                    ],
                    env=self.env,
                )  # fmt: skip

        say(f"  warm-up (cold layer cache): {timed(all_five):.1f}s")
        seconds = [timed(all_five) for _ in range(self.reps)]
        say(f"  warm runs: {', '.join(f'{s:.3f}' for s in seconds)}s")
        self.results["d"] = Sample(seconds)

    def compose_build(self) -> None:
        say("\n(e) `docker-compose build` (v1) of the 5 images, warm")
        if not Path(COMPOSE).exists():
            say(f"  skipped: {COMPOSE} not found")
            return
        prefix = f"{self.stack}-compose"
        dockerfiles = self.baseline_dockerfiles("compose", prefix)
        services: dict[str, Any] = {}
        for image, parent in IMAGES.items():
            services[image] = {
                "image": f"{prefix}/{image}:bench",
                "build": {
                    "context": str(self.root / "images" / image),
                    "dockerfile": str(dockerfiles[image]),
                    "labels": {labels.PROJECT: self.stack},
                },
                **({"depends_on": [parent]} if parent else {}),
            }
        compose_file = self.tmp / "baseline" / "docker-compose.yml"
        # JSON is YAML: no YAML library needed.
        compose_file.write_text(json.dumps({"version": "3.8", "services": services}, indent=2))
        cmd = [COMPOSE, "--ansi", "never", "-p", self.stack, "-f", str(compose_file), "build"]
        try:
            say(f"  warm-up: {timed(lambda: run(cmd, env=self.env)):.1f}s")
            seconds = [timed(lambda: run(cmd, env=self.env)) for _ in range(self.reps)]
        except RuntimeError as err:
            say(f"  FAILED, continuing without it: {err}")
            self.notes.append("docker-compose build failed; see (e)")
            return
        say(f"  warm runs: {', '.join(f'{s:.3f}' for s in seconds)}s")
        self.results["e"] = Sample(seconds)

    # -- (c)

    def rekey(self) -> None:
        say("\n(c) re-key after a one-file edit: in-process envkit.images.build.plan")
        config = self.config()
        base_old = build_mod.plan(config, self.daemon)
        hashed()
        small = sorted((self.root / "images" / "base" / "src").rglob("*.dat"))
        rng = random.Random(f"{SEED}/edits")
        seconds = []
        for i in range(self.reps):
            path = small[(i * 397) % len(small)]
            size = path.stat().st_size
            path.write_bytes(rng.randbytes(size))  # same size: only the content (and mtime) differ
            plan: build_mod.Plan | None = None

            def go() -> None:
                nonlocal plan
                plan = build_mod.plan(config, self.daemon)

            seconds.append(timed(go))
            files, nbytes = hashed()
            assert plan is not None
            changed = [n for n in plan.order if plan.inputs[n].key != base_old.inputs[n].key]
            say(
                f"  run {i + 1}: {seconds[-1]:.3f}s  edited {path.relative_to(self.root)} ({size:,} B); "
                f"hashed {plan.hashed_files} file(s) / {mb(nbytes)}; keys changed: {', '.join(changed)}"
            )
            base_old = plan
        self.results["c"] = Sample(seconds, files, nbytes)

    # -- summary

    def summary(self) -> None:
        r = self.results
        say("\n" + "=" * 78)
        say(f"summary ({len(IMAGES)} images, {FILES_PER_IMAGE * len(IMAGES):,} files, "
            f"{mb(BYTES_PER_IMAGE * len(IMAGES))}; median of {self.reps} runs)")  # fmt: skip
        rows = [
            ("a", "(a) cold key computation, plan(), empty state"),
            ("b_cli", "(b) warm no-op `python -m envkit build --quiet`"),
            ("b_import", "      of which python start + import envkit.cli"),
            ("b_inproc", "(b) warm no-op ensure() in-process"),
            ("b_plan", "      of which plan() (keys) alone"),
            ("c", "(c) re-key after a one-file edit, plan()"),
            ("d", "(d) docker build x5, warm layer cache"),
            ("e", "(e) docker-compose build, warm"),
        ]
        for key, label in rows:
            if key in r:
                hashed_info = ""
                if key in ("a", "b_inproc", "b_plan", "c"):
                    hashed_info = f"   hashed {r[key].files:,} files / {mb(r[key].bytes)}"
                elif key == "b_cli":
                    hashed_info = "   hashed 0 files (stat cache untouched)" if r[key].files == 0 else ""
                say(f"  {label:<50} {r[key].median:8.3f} s{hashed_info}")
            else:
                say(f"  {label:<50}      n/a")
        say("")

        def verdict(label: str, value: str, target: str, passed: bool | None) -> None:
            mark = "" if passed is None else ("PASS" if passed else "MISS")
            say(f"  {label:<38} {value:>8}   {target:<14} {mark}".rstrip())

        if "d" in r:
            ratio = r["d"].median / r["b_cli"].median
            passed = ratio >= NOOP_TARGET_RATIO
            verdict("docker build / envkit no-op (CLI):", f"{ratio:.1f}x", ">= 20x", passed)
            ratio = r["d"].median / r["b_inproc"].median
            verdict("docker build / envkit no-op (ensure):", f"{ratio:.1f}x", "(info)", None)
        if "e" in r:
            ratio = r["e"].median / r["b_cli"].median
            verdict("compose build / envkit no-op (CLI):", f"{ratio:.1f}x", "(info)", None)
        if "c" in r:
            value = r["c"].median
            verdict("one-file re-key:", f"{value:.3f}s", "< 0.3s", value < REKEY_TARGET_SECONDS)
        for note in self.notes:
            say(f"  note: {note}")
        say("  (the files stayed in the OS page cache: 'cold' means envkit's cache, not the disk's)")

    def cleanup(self, *, settle: bool) -> None:
        """Remove the stack's images and the temp dir.

        After an interruption (``settle``) the daemon may still be finishing a build it
        was handed, so the images are looked for again until a few quiet seconds pass.
        """
        say("\ncleanup:")
        label = f"{labels.PROJECT}={self.stack}"
        try:
            removed = remove_stack(self.client, self.stack)
            quiet = 0
            while settle and quiet < 3:
                time.sleep(1)
                more = remove_stack(self.client, self.stack)
                removed += more
                quiet = 0 if more else quiet + 1
            left = self.client.images(all=True, filters={"label": label})
            say(f"  removed {removed} images labelled {label}; {len(left)} left")
        except Exception as err:  # still remove the temp dir
            say(f"  removing images failed: {err!r}; find them with: docker images -a --filter label={label}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        say(f"  removed {self.tmp}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed runs per figure (median reported)")
    args = parser.parse_args()
    build_mod.Hasher = RecordingHasher  # type: ignore[misc]  # plan() looks the name up at call time
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(args.reps)
    finished = False
    try:
        bench.setup()
        bench.cold_plan()
        bench.first_build()
        bench.noop()
        bench.docker_build()
        bench.compose_build()
        bench.rekey()  # last: it edits base's files, which would make (d) and (e) rebuild
        bench.summary()  # a MISS is a result to read, not a failure of the run
        finished = True
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        try:
            bench.cleanup(settle=not finished)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
