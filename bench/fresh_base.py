"""Benchmark: the first assembled build on a base envkit did not make, on a fresh machine.

Run by hand from the repository root, against the engine envkit finds (not a test)::

    .venv/bin/python bench/fresh_base.py [--reps N] [--megabytes M]

A base of M MB (busybox plus incompressible files under /opt/data, ``docker import``-ed: a
base pulled from a registry or a remote cache is the same to envkit) and the 14-instruction app
image of bench/hot_path.py on it. Each run is a fresh machine's first build: a new, empty user
cache (no facts of the base) and the app's image removed. The build is in-process
(``envkit.images.build.ensure``, as the pytest plugin and ``envkit e2e`` run it), timed:

- looked up: what envkit does: the base's config from inspect and history, the paths the
  instructions ask about from a container created and never started;
- saved: the base's facts read from its ``docker save`` (what envkit did before, and still
  does on Docker's containerd image store and on Podman, and where a lookup cannot tell).

Both give the same image (the same ID: checked). The figure is the ratio of the medians, in
one run, interleaved. Everything it creates carries envkit's labels and is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conftest import busybox_rootfs_tar, remove_stack_images  # noqa: E402
from engine_client import docker_api_client  # noqa: E402
from hot_path import DOCKERFILE  # noqa: E402

from envkit.docker import labels  # noqa: E402


def say(text: str = "") -> None:
    print(text, flush=True)


def base_tar(megabytes: int) -> bytes:
    """The busybox rootfs plus ``megabytes`` of random data in 4 MB files."""
    import io
    import tarfile

    buffer = io.BytesIO(busybox_rootfs_tar())
    buffer.seek(0, io.SEEK_END)
    buffer.seek(buffer.tell() - 1024)  # over the end-of-archive blocks
    with tarfile.open(fileobj=buffer, mode="a") as archive:
        for i in range(max(1, megabytes // 4)):
            data = os.urandom(4 << 20)
            info = tarfile.TarInfo(f"opt/data/blob-{i:03d}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = docker_api_client()
        self.stack = f"envkit-bench-{uuid.uuid4().hex[:8]}"
        self.tmp = Path(tempfile.mkdtemp(prefix="envkit-fresh-base-"))

    def project(self) -> Path:
        say(f"importing a {self.args.megabytes} MB base ...")
        self.client.import_image_from_data(
            base_tar(self.args.megabytes),
            repository=f"envkit-bench/{self.stack}",
            tag="base",
            changes=[f"LABEL {labels.PROJECT}={self.stack}", "ENV PATH=/bin", 'CMD ["sh"]'],
        )
        root = self.tmp / "app"
        context = root / "images/app"
        (context / "lib").mkdir(parents=True)
        (context / "config").mkdir()
        (root / "envkit.toml").write_text(f'[stack]\nname = "{self.stack}"\n\n[images.app]\n')
        (context / "Dockerfile").write_text(DOCKERFILE.format(base=f"envkit-bench/{self.stack}:base"))
        (context / "requirements.txt").write_text("flask==3.0.0\n")
        for i in range(50):
            (context / "lib" / f"module_{i:02d}.py").write_text(f"VALUE = {i}\n" * 200)
        for i in range(8):
            (context / "config" / f"settings_{i}.toml").write_text(f"key = {i}\n")
        (context / "app.py").write_text("print('app')\n")
        return root

    def first_build(self, root: Path, *, saved: bool) -> tuple[float, str, int]:
        """A fresh machine's first build of the app: seconds, image ID, saves made."""
        from envkit.config.find import load
        from envkit.docker.engine import Daemon
        from envkit.errors import DaemonError
        from envkit.images import build

        os.environ["XDG_CACHE_HOME"] = str(self.tmp / f"cache-{uuid.uuid4().hex[:8]}")
        os.environ["ENVKIT_LOCK_DIR"] = str(self.tmp / "locks")
        daemon = Daemon()
        saves: list[str] = []
        original = daemon.save

        def counted(image: str, *, stall: float | None) -> Any:
            saves.append(image)
            return original(image, stall=stall)

        daemon.save = counted  # type: ignore[method-assign]
        if saved:

            def no_history(ref: str) -> Any:  # the base cannot be looked up: its save is read
                raise DaemonError("bench: read the save", 500)

            daemon.history_entries = no_history  # type: ignore[method-assign]
        try:
            started = time.monotonic()
            [result] = build.ensure(load(root, {}), daemon)
            seconds = time.monotonic() - started
        finally:
            daemon.close()
        assert result.status == "built" and result.builder == "assembler", result
        image_id = str(self.client.inspect_image(result.tag)["Id"])
        self.client.remove_image(result.tag)
        return seconds, image_id, len(saves)

    def run(self) -> None:
        root = self.project()
        looked, saved, ids, save_counts = [], [], set(), []
        for _ in range(self.args.reps):
            seconds, image_id, saves = self.first_build(root, saved=False)
            looked.append(seconds)
            ids.add(image_id)
            save_counts.append(saves)
            seconds, image_id, _ = self.first_build(root, saved=True)
            saved.append(seconds)
            ids.add(image_id)

        def runs(samples: list[float]) -> str:
            return " ".join(f"{s:.2f}" for s in samples)

        a, b = statistics.median(looked), statistics.median(saved)
        say(f"first build, base looked up: median {a:.3f}s  runs {runs(looked)}  (saves: {save_counts})")
        say(f"first build, base saved:     median {b:.3f}s  runs {runs(saved)}")
        say(f"saved / looked up: {b / a:.1f}x; one image ID for both ways: {len(ids) == 1}")

    def cleanup(self) -> None:
        import shutil

        remove_stack_images(self.client, self.stack)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=400)
    bench = Bench(parser.parse_args())
    try:
        bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
