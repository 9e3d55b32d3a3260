"""Benchmark: a client killed with kill -9 inside a container; how soon the warden removes its stack.

Run by hand from the repository root (not a test)::

    .venv/bin/python bench/warden.py [--reps N] [--grace 10]

The remote engine is Docker 26.1 (classic image store) in a container of this machine's engine,
started as tests/engines/run.py starts the matrix's engines. The client runs inside a sibling
container (the matrix's Debian image, ``sleep infinity``) with envkit from this checkout (the
checkout and the venv's Python mounted read-only at their own paths) and
``DOCKER_HOST=tcp://<engine>:2375``. Each repetition: ``envkit up`` of a one-service stack
(busybox httpd) in that container, a look that the warden holds the reaper's lease, then
``docker kill --signal KILL`` of the client's container (envkit's reaper and its shadow die with
it), (``--freeze``: ``docker pause`` instead, a client that stops answering without closing its
connection, so the warden's lease ends by its 15 s of silence), then the seconds until the
stack's containers (the warden's too), network and volumes are
gone from the engine, looked at every 0.25 s. It prints each time, their median and max,
against the bound the issue sets: the warden's grace + 30 s.

Everything it creates carries envkit's labels and is removed at the end (the engine's container
with its volumes, every client container, the temporary project).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "engines"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import import_busybox  # noqa: E402  (tests/conftest.py: the busybox base)
from engine_client import docker_api_client  # noqa: E402
from run import ENGINES, build_engine_images, running  # noqa: E402  (tests/engines/run.py)

PYTHON = ROOT / ".venv" / "bin" / "python"
STACK = """[stack]
name = "{name}"
pull = "never"

[images.bb]

[services.web]
image = "bb"
ports = [8000]
command = ["httpd", "-f", "-p", "8000", "-h", "/etc"]
healthcheck = {{ http = "/hostname", port = 8000 }}
"""


def say(text: str = "") -> None:
    print(text, flush=True)


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=300).stdout


def one(
    engine_ip: str, image: str, project: Path, grace: float, run_id: str, *, freeze: bool = False
) -> float:
    """One kill -9 of a client container (or, ``freeze``, a ``docker pause``: a machine that
    stops answering sends no FIN); the seconds from then until the stack is gone."""
    name = f"ek5-bench-client-{uuid.uuid4().hex[:8]}"
    python = Path(sys.base_prefix)
    client = docker_api_client(environ={"DOCKER_HOST": f"tcp://{engine_ip}:2375"})
    docker(
        "run", "--detach", "--name", name,
        "--label", f"envkit.project=ek5-bench-{run_id}", "--label", f"envkit.stack={name}",
        "--entrypoint", "sleep",
        f"--volume={ROOT}:{ROOT}:ro", f"--volume={python}:{python}:ro", f"--volume={project}:{project}",
        image, "infinity",
    )  # fmt: skip
    try:
        env = {
            "ENVKIT_ROOT": str(project),
            "ENVKIT_WARDEN_GRACE": f"{grace:g}",
            "DOCKER_HOST": f"tcp://{engine_ip}:2375",
            "XDG_CACHE_HOME": "/tmp/xdg",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        command = ["exec", "--workdir", str(project), *(f"--env={k}={v}" for k, v in env.items()), name]
        status = json.loads(docker(*command, str(PYTHON), "-m", "envkit", "up", "--json"))
        stack = status["stack"]
        time.sleep(1.5)  # the reaper takes its lease (it looks twice a second)
        label = f"envkit.stack={stack}"
        wardens = client.containers(filters={"label": [label, "envkit.role=warden"]})
        if len(wardens) != 1:
            raise SystemExit(f"warden: expected one warden on the engine, found {len(wardens)}")
        docker(*(("pause", name) if freeze else ("kill", "--signal", "KILL", name)))
        killed = time.monotonic()
        while True:
            left = (
                client.containers(all=True, filters={"label": label})
                or client.networks(filters={"label": label})
                or client.volumes(filters={"label": label}).get("Volumes")
            )
            if not left:
                return time.monotonic() - killed
            if time.monotonic() - killed > grace + 120:
                raise SystemExit(f"warden: stack {stack} still on the engine 120 s past the grace: {left}")
            time.sleep(0.25)
    finally:
        docker("rm", "--force", name, check=False)
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--grace", type=float, default=10.0, help="ENVKIT_WARDEN_GRACE (default 10)")
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="docker pause the client instead: no FIN, the lease falls silent",
    )
    args = parser.parse_args()
    tags = build_engine_images()
    run_id = f"ek5-bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="ek5-bench-"))
    try:
        with running(ENGINES["classic"], tags["docker"], run_id) as engine:
            ip = json.loads(docker("inspect", engine))[0]["NetworkSettings"]["IPAddress"]
            remote = docker_api_client(environ={"DOCKER_HOST": f"tcp://{ip}:2375"})
            base = import_busybox(remote, "envkit-bench/busybox", run_id, run_id)
            remote.close()
            started = time.monotonic()
            code = "from envkit.docker.engine import Daemon; from envkit.settings import Settings;"
            code += "from envkit.stack import warden; s = Settings.from_env();"
            code += "print(warden.image(Daemon(cache_dir=s.cache_dir), s))"
            built = subprocess.run(
                [str(PYTHON), "-c", code],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(Path.home()), "DOCKER_HOST": f"tcp://{ip}:2375"},
                capture_output=True, text=True, check=True, timeout=900,
            )  # fmt: skip
            say(f"warden image {built.stdout.strip()} on the engine in {time.monotonic() - started:.1f}s")
            times = []
            for rep in range(args.reps):
                project = work / f"p{rep}"
                (project / "images" / "bb").mkdir(parents=True)
                (project / "images" / "bb" / "Dockerfile").write_text(f"FROM {base}\n")
                (project / "envkit.toml").write_text(STACK.format(name=f"ek5-bench-{rep}"))
                took = one(ip, tags["docker"], project, args.grace, run_id, freeze=args.freeze)
                times.append(took)
                how = "pause" if args.freeze else "kill -9"
                say(f"  {how} #{rep + 1}: the stack was gone {took:.1f}s after it")
            bound = args.grace + 30
            say(
                f"warden (grace {args.grace:g}s): gone after a median {statistics.median(times):.1f}s, "
                f"max {max(times):.1f}s, over {args.reps} {'pauses' if args.freeze else 'kills'}; "
                f"bound grace + 30 = {bound:g}s: " + ("within" if max(times) <= bound else "OVER")
            )
            return 0 if max(times) <= bound else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
