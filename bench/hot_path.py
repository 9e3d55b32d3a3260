"""Benchmark: the hot path of a developer's day, "edit one source file, run the e2e tests".

Run by hand from the repository root, against the local Docker daemon (not a test)::

    .venv/bin/python bench/hot_path.py [--reps N] [--warm W] [--skip-demo]

(1) The rebuild after a one-file edit of a 14-instruction app image without RUN
    (``FROM`` a locally imported busybox, ARG, ENV, LABEL, WORKDIR, 4 COPYs, EXPOSE,
    USER, HEALTHCHECK, CMD; 60 source files): ``python -m envkit build --quiet``
    (envkit's assembler: no container, no context upload) against ``docker build``
    of the same Dockerfile and context (the CLI with the classic builder) with a
    warm layer cache. Each run of either faces an edit it has not seen: the file
    gets new content before every run, so neither can answer from a cache. The
    figure is the median of N runs of each, interleaved; the target is docker
    build / envkit >= 20x. Also the same rebuild in-process
    (``envkit.images.build.ensure``, as the pytest plugin and ``envkit e2e`` run
    it: no interpreter start, no imports), and how long its ``docker load`` took.

(2) The demo's edit-to-first-test: a copy of this repository (so the checkout's
    own stack and files are left alone) runs ``envkit e2e --ttl 300`` once to
    warm up, then W times: one edit in ``images/api/app.py`` (a new comment), then
    ``envkit e2e --ttl 300``, timed from its start to the first test's call (a
    ``-p`` plugin records it) and to its end; the api image is rebuilt (by the
    assembler) and its container replaced, the rest of the stack is reused.

Everything it creates carries envkit's labels and is removed at the end (the
demo copy's stack with ``envkit down --all``, its new images with ``envkit gc``),
also on an error or Ctrl-C. A MISS is a result, not an error.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conftest import import_busybox, remove_stack_images  # noqa: E402
from e2e import FIRST_TEST_PLUGIN  # noqa: E402
from engine_client import docker_api_client  # noqa: E402  (tests/engine_client.py: the engine envkit uses)

TARGET = 20.0
DOCKERFILE = """\
FROM {base}
ARG VERSION=1.0
ENV APP_HOME=/app PYTHONUNBUFFERED=1
LABEL org.example.app="hot-path" org.example.version="$VERSION"
WORKDIR /app
COPY requirements.txt ./
COPY lib/ ./lib/
COPY config/ ./config/
COPY app.py ./
EXPOSE 8000
USER 1000:1000
ENV PORT=8000
HEALTHCHECK --interval=5s CMD ["true"]
CMD ["python3", "app.py"]
"""


def say(text: str = "") -> None:
    print(text, flush=True)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = docker_api_client()
        self.stack = f"envkit-bench-{uuid.uuid4().hex[:8]}"
        self.tmp = Path(tempfile.mkdtemp(prefix="envkit-hot-path-"))
        self.python = sys.executable
        self.demo: Path | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
        env.update(DOCKER_BUILDKIT="0", ENVKIT_LOCK_DIR=str(self.tmp / "locks"), **extra)
        return env

    # -- (1) one app image -------------------------------------------------------------------

    def app_project(self) -> Path:
        base = import_busybox(self.client, f"envkit-bench/{self.stack}", "base", self.stack)
        root = self.tmp / "app"
        (root / "images/app/lib").mkdir(parents=True)
        (root / "images/app/config").mkdir()
        (root / "envkit.toml").write_text(f'[stack]\nname = "{self.stack}"\n\n[images.app]\n')
        context = root / "images/app"
        (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
        (context / "requirements.txt").write_text("flask==3.0.0\n")
        for i in range(50):
            (context / "lib" / f"module_{i:02d}.py").write_text(f"VALUE = {i}\n" * 200)
        for i in range(8):
            (context / "config" / f"settings_{i}.toml").write_text(f"key = {i}\n")
        (context / "app.py").write_text("print('app')\n")
        return root

    def edit(self, path: Path) -> None:
        with path.open("a") as f:
            f.write(f"# edit {uuid.uuid4().hex}\n")

    def envkit_build(self, root: Path) -> float:
        started = time.monotonic()
        subprocess.run(
            [self.python, "-m", "envkit", "build", "--quiet"], cwd=root, env=self.env(), check=True
        )
        return time.monotonic() - started

    def in_process(self, root: Path) -> tuple[float, float]:
        """``ensure`` in this process after an edit; its seconds and its docker load's."""
        from envkit.config.find import load
        from envkit.docker.engine import Daemon
        from envkit.images import build

        loads: list[float] = []
        daemon = Daemon()
        original = daemon.load

        def timed(*args: object, **kwargs: object) -> None:
            started = time.monotonic()
            original(*args, **kwargs)  # type: ignore[arg-type]
            loads.append(time.monotonic() - started)

        daemon.load = timed  # type: ignore[method-assign]
        try:
            os.environ["ENVKIT_LOCK_DIR"] = str(self.tmp / "locks")
            started = time.monotonic()
            [result] = build.ensure(load(root, {}), daemon)
            seconds = time.monotonic() - started
        finally:
            daemon.close()
        assert result.status == "built" and result.builder == "assembler", result
        return seconds, sum(loads)

    def docker_build(self, context: Path) -> float:
        started = time.monotonic()
        subprocess.run(
            [
                "docker", "build", "-q", "--force-rm",
                "--label", f"envkit.project={self.stack}",
                "-t", f"{self.stack}-docker/app:bench", str(context),
            ],
            env=self.env(),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return time.monotonic() - started

    def app(self) -> bool:
        root = self.app_project()
        context = root / "images/app"
        say(f"(1) a 14-instruction app image without RUN, one-file edit ({self.args.reps} runs each)")
        self.envkit_build(root)  # cold: the base's facts, the stat cache
        self.docker_build(context)  # cold: the layer cache
        ours, theirs, inside, loads = [], [], [], []
        for _ in range(self.args.reps):
            self.edit(context / "app.py")
            ours.append(self.envkit_build(root))
            self.edit(context / "app.py")
            theirs.append(self.docker_build(context))
            self.edit(context / "app.py")
            seconds, loaded = self.in_process(root)
            inside.append(seconds)
            loads.append(loaded)
        mine, docker_s = statistics.median(ours), statistics.median(theirs)
        ratio = docker_s / mine

        def runs(samples: list[float]) -> str:
            return " ".join(f"{s:.2f}" for s in samples)

        say(f"    envkit build (assembler): median {mine:.3f}s  runs {runs(ours)}")
        say(f"    docker build (classic):   median {docker_s:.3f}s  runs {runs(theirs)}")
        say(
            f"    in-process ensure:        median {statistics.median(inside):.3f}s "
            f"(its docker load {statistics.median(loads):.3f}s); docker build / that: "
            f"{docker_s / statistics.median(inside):.1f}x"
        )
        verdict = "PASS" if ratio >= TARGET else "MISS"
        say(f"    docker build / envkit build: {ratio:.1f}x (target >= {TARGET:g}x): {verdict}")
        return ratio >= TARGET

    # -- (2) the demo -----------------------------------------------------------------------

    def demo_copy(self) -> Path:
        copy = self.tmp / "demo"
        ignore = shutil.ignore_patterns(
            ".git", ".venv", ".envkit*", "__pycache__", "build", "dist", "*.egg-info"
        )
        shutil.copytree(ROOT, copy, ignore=ignore, symlinks=True)
        (self.tmp / "plugins").mkdir(exist_ok=True)
        (self.tmp / "plugins" / "bench_first_test.py").write_text(FIRST_TEST_PLUGIN)
        self.demo = copy
        return copy

    def e2e(self, copy: Path) -> tuple[float, float]:
        first = self.tmp / "first-test"
        first.unlink(missing_ok=True)
        env = self.env(BENCH_FIRST_TEST=str(first), PYTHONPATH=str(self.tmp / "plugins"))
        started_at, started = time.time(), time.monotonic()
        subprocess.run(
            [self.python, "-m", "envkit", "e2e", "--ttl", "300", "--", "-q", "-p", "bench_first_test"],
            cwd=copy,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wall = time.monotonic() - started
        return min(float(x) for x in first.read_text().split()) - started_at, wall

    def demo_run(self) -> None:
        copy = self.demo_copy()
        runs = self.args.warm
        say(f"\n(2) the demo: one edit in images/api/app.py, then `envkit e2e --ttl 300` ({runs} runs)")
        first, wall = self.e2e(copy)
        say(f"    warm-up run: first test after {first:.2f}s, wall {wall:.1f}s")
        firsts = []
        for _ in range(self.args.warm):
            self.edit(copy / "images/api/app.py")
            first, wall = self.e2e(copy)
            firsts.append(first)
            say(f"    after an edit: first test after {first:.2f}s, wall {wall:.1f}s")
        say(f"    edit to first test (median): {statistics.median(firsts):.2f}s")

    def cleanup(self) -> None:
        if self.demo is not None:
            # the copy's app.py as the checkout has it again, so that gc finds the edits' images
            # no longer current and removes them (the checkout's own stay)
            shutil.copy(ROOT / "images/api/app.py", self.demo / "images/api/app.py")
            for command in (["down", "--all"], ["build", "--quiet"], ["gc"]):
                subprocess.run(
                    [self.python, "-m", "envkit", *command],
                    cwd=self.demo,
                    env=self.env(),
                    capture_output=True,
                )
        remove_stack_images(self.client, self.stack)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(args)
    try:
        bench.app()
        if not args.skip_demo:
            bench.demo_run()
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
