"""Benchmark: the demo's e2e suite under ``-n 4``, on envkit's shared stack and the way its peers run it.

Run by hand from the repository root, against the local Docker daemon (not a test)::

    .venv/bin/python bench/peers.py [--reps R] [--kills K] [--workers N] [--grace S]

It builds the demo stack's images (``envkit build --json``; cached after the
first time) and runs ``tests/e2e`` (40 tests against postgres, redis, auth and
api) under ``pytest -n N`` three ways, interleaved, R times each:

  envkit          ``python -m envkit e2e --workers N``: one stack for every
                  worker, held by the command and released when pytest ends.
  compose         the pytest-docker way: each worker runs Debian's docker-compose
                  v1 on a compose file derived from the demo's ``compose.yaml``
                  (every ``build:`` replaced by the tag envkit built, since v1
                  cannot build FROM a recipe-made base), as its own project
                  (``-p <run>_gw0`` ...): ``up -d`` on the worker's first test
                  that needs the stack, one ``port`` call per published port
                  (as pytest-docker's ``port_for``), a wait until it responds
                  (HTTP checks from the host, ``docker exec`` for command
                  checks, every 0.1 s), ``down -v`` when the worker's session
                  ends. v1 is a Python program: each call pays its start-up
                  (about 1 s alone, several seconds with four at once on two
                  CPUs), which the Go ``docker compose`` (v2) would not.
  testcontainers  testcontainers-python as its docs show: per worker, a
                  ``Network`` and one ``DockerContainer`` per service (exposed
                  ports, the service's name as network alias, its environment),
                  started in depends_on order, each waited for with an
                  ``ExecWaitStrategy`` (command checks) or an ``HttpWaitStrategy``
                  (HTTP checks) polling every 0.1 s; stopped when the worker's
                  session ends. Ryuk, its reaper, is off: its image cannot be
                  pulled here (``TESTCONTAINERS_RYUK_DISABLED=true``).

The two peers reach the tests through a ``-p`` plugin written into a temporary
directory that replaces envkit's (``-p no:envkit``): it provides
``envkit_stack`` (``endpoint``/``url`` from the worker's own containers),
``envkit_worker_id`` and the ``services`` marker. Services, ports,
environment, start order and checks are the demo's (compose.yaml for compose,
envkit.toml for testcontainers: the same stack).

For each run: the time from the start of the command to the first test's call
and to the end of the last test's call (a ``-p`` plugin records them), to the
command's exit, and until the run's containers are gone; the tests that passed;
the containers created (docker ``create`` events of the run's containers).
Then K runs of each mode are killed: started again, and as soon as a first test
has ended, the whole process group gets SIGKILL; after S seconds (default 10:
envkit's reaper waits out its grace, 3 s, first) the bench counts the run's
containers, networks and volumes still present, and says when they were gone.

Everything the bench creates carries labels it cleans up by:
``envkit-bench.peers=<session>`` (the compose file's ``labels:`` on services,
the default network and volumes; testcontainers' ``with_kwargs(labels=...)`` and
the network's labels) or envkit's own ``envkit.stack`` of a state directory
under the bench's temporary directory. All of it is removed at the end, also
on an error, Ctrl-C or SIGTERM (the images are the demo's own, cached by key,
and stay). No target: the figures are the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from engine_client import docker_api_client  # noqa: E402  (tests/engine_client.py: the engine envkit uses)

COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
MODES = ("envkit", "compose", "testcontainers")
LABEL = "envkit-bench.peers"  # every container, network and volume of the peers: the session
RUN_LABEL = "envkit-bench.run"  # ... and the run

TIMES_PLUGIN = """
import os, time

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with open(os.environ["BENCH_PEERS_TIMES"], "a") as f:
        f.write(f"call {time.time()}\\n")
    try:
        return (yield)
    finally:
        with open(os.environ["BENCH_PEERS_TIMES"], "a") as f:
            f.write(f"end {time.time()}\\n")
"""

STACK_PLUGIN = '''
"""A stand-in for envkit's plugin: a stack per worker, by docker-compose v1 or testcontainers."""
import json, os, subprocess, time, urllib.request

import pytest

with open(os.environ["BENCH_PEERS_SPEC"]) as spec_file:
    SPEC = json.load(spec_file)
POLL = 0.1  # seconds between readiness checks
TIMEOUT = 120.0


def pytest_configure(config):
    config.addinivalue_line("markers", "services(*names): the services a test needs (all start)")


def note(what, worker):
    """For the bench: when this worker's stack began to start, was ready, began and ended to stop."""
    with open(os.environ["BENCH_PEERS_TIMES"], "a") as f:
        f.write(f"{what} {time.time()} {worker}\\n")


class Stack:
    def __init__(self, host, ports):
        self.host, self.ports = host, ports

    def endpoint(self, service, port):
        return self.host, self.ports[service][port]

    def url(self, service, port, scheme="http"):
        host, port = self.endpoint(service, port)
        return f"{scheme}://{host}:{port}"


@pytest.fixture(scope="session")
def envkit_worker_id(request):
    workerinput = getattr(request.config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


@pytest.fixture(scope="session")
def envkit_stack(envkit_worker_id):
    note("start", envkit_worker_id)
    if SPEC["mode"] == "compose":
        yield from compose_stack(envkit_worker_id)
    else:
        yield from testcontainers_stack(envkit_worker_id)
    note("stopped", envkit_worker_id)


def wait_until_responsive(check, what):
    """pytest-docker's wait: call ``check`` until it is true, every POLL seconds."""
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not respond within {TIMEOUT:g} s")
        time.sleep(POLL)


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def compose_stack(worker):
    project = f"{SPEC['project']}_{worker}"
    base = [SPEC["compose"], "-f", SPEC["file"], "-p", project]

    def compose(*args):
        done = subprocess.run([*base, *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"docker-compose {' '.join(args)}: {done.stderr[-2000:]}")
        return done.stdout

    try:
        compose("up", "-d")
        ports = {}
        for name, svc in SPEC["services"].items():
            for port in svc["ports"]:
                published = compose("port", name, str(port)).strip()  # 0.0.0.0:49153
                ports.setdefault(name, {})[port] = int(published.rsplit(":", 1)[1])
        stack = Stack("127.0.0.1", ports)
        for name, svc in SPEC["services"].items():
            check = svc["check"]
            if check["kind"] == "http":
                url = stack.url(name, check["port"]) + check["path"]
                wait_until_responsive(lambda url=url: http_ok(url), url)
            elif check["kind"] == "cmd":
                command = ["docker", "exec", f"{project}_{name}_1", *check["cmd"]]
                wait_until_responsive(
                    lambda command=command: subprocess.run(command, capture_output=True).returncode == 0, name
                )
        note("ready", worker)
        yield stack
    finally:
        note("stop", worker)
        subprocess.run([*base, "down", "-v"], capture_output=True)


def testcontainers_stack(worker):
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    from testcontainers.core.wait_strategies import ExecWaitStrategy, HttpWaitStrategy

    labels = SPEC["labels"]
    network = Network(docker_network_kw={"labels": labels}).create()
    containers = {}
    try:
        for name, svc in SPEC["services"].items():  # in depends_on order
            check = svc["check"]
            if check["kind"] == "http":
                strategy = HttpWaitStrategy(check["port"], check["path"])
            else:
                strategy = ExecWaitStrategy(check["cmd"])
            container = (
                DockerContainer(svc["image"])
                .with_exposed_ports(*svc["ports"])
                .with_envs(**svc["environment"])
                .with_network(network)
                .with_network_aliases(name)
                .with_kwargs(labels=labels)
                .waiting_for(strategy.with_poll_interval(POLL).with_startup_timeout(int(TIMEOUT)))
            )
            containers[name] = container
            container.start()
        ports = {
            name: {port: int(c.get_exposed_port(port)) for port in SPEC["services"][name]["ports"]}
            for name, c in containers.items()
        }
        stack = Stack(next(iter(containers.values())).get_container_host_ip(), ports)
        note("ready", worker)
        yield stack
    finally:
        note("stop", worker)
        for container in reversed(list(containers.values())):
            container.stop()
        network.remove()
'''


def say(text: str = "") -> None:
    print(text, flush=True)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(seconds: float) -> str:
    """``12.3s``, or ``-`` for what was not measured (NaN)."""
    return "-" if math.isnan(seconds) else f"{seconds:.1f}s"


def after_kill(k: dict[str, Any]) -> str:
    """``16 / 4 / 0 (still there)``: what a kill -9 left after the grace, and when it was gone."""
    gone = f"all gone {k['zero_at']:.1f} s after" if k["zero_at"] is not None else "still there"
    return f"{' / '.join(map(str, k['after']))} ({gone})"


def mounted(containers: list[dict[str, Any]]) -> set[str]:
    """The names of the volumes (named or anonymous) the containers mount."""
    return {m["Name"] for c in containers for m in c.get("Mounts") or [] if m.get("Type") == "volume"}


class Creates:
    """Counts the ``create`` events of containers carrying a label, live: the daemon keeps only
    its last 256 events, which a busy daemon replaces within a minute."""

    def __init__(self, label: tuple[str, str]) -> None:
        self.count = 0
        self.client = docker_api_client(timeout=None)
        filters = {"type": "container", "event": "create", "label": [f"{label[0]}={label[1]}"]}
        self.stream = self.client.events(filters=filters, decode=True)  # subscribed from now on
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream's socket closed under it: the end
            for _ in self.stream:
                self.count += 1

    def stop(self) -> int:
        time.sleep(0.2)  # the last events on their way
        self.stream.close()
        self.thread.join(5)
        self.client.close()
        return self.count


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.session = uuid.uuid4().hex[:6]
        self.client = docker_api_client(timeout=120)
        self.python = sys.executable
        self.procs: list[subprocess.Popen[bytes]] = []
        self.state_dirs: list[Path] = []
        self.stack_ids: set[str] = set()
        self.volumes: set[str] = set()  # volumes seen mounted in the runs' containers
        self.tags: dict[str, str] = {}
        self.compose: dict[str, Any] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="envkit-bench-peers-"))
        plugins = self.tmp / "plugins"
        plugins.mkdir()
        (plugins / "bench_peers_times.py").write_text(TIMES_PLUGIN)
        (plugins / "bench_peers_stack.py").write_text(STACK_PLUGIN)

    # --- setup ---------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
        pythonpath = [str(self.tmp / "plugins"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env.update(ENVKIT_ROOT=str(ROOT), PYTHONPATH=os.pathsep.join(pythonpath), **extra)
        return env

    def prepare(self) -> None:
        """Build the demo's images; read its compose file and its services' checks."""
        source = ROOT / "compose.yaml"
        if not source.is_file():
            raise SystemExit(f"bench/peers.py needs the demo's compose file, {source}")
        started = time.monotonic()
        done = subprocess.run(
            [self.python, "-m", "envkit", "build", "--json", "--quiet"],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(f"envkit build failed ({done.returncode}):\n{done.stderr[-3000:]}")
        results = json.loads(done.stdout)
        self.tags = {r["image"]: r["tag"] for r in results}
        statuses = ", ".join(f"{r['image']} {r['status']}" for r in results)
        say(f"images ({statuses}) in {time.monotonic() - started:.1f}s")
        self.compose = YAML(typ="safe").load(source.read_text())  # anchors and << merges resolved

        from envkit.config.find import load

        config = load(ROOT, self.env())
        for name in config.service_order():
            spec = config.services[name]
            check = spec.healthcheck
            self.services[name] = {
                "image": self.tags.get(spec.image, spec.image),
                "ports": list(spec.ports),
                "environment": dict(spec.environment),
                "check": {"kind": check.kind, "cmd": list(check.cmd), "path": check.path, "port": check.port},
            }

    def compose_file(self, run: str, labels: dict[str, str]) -> Path:
        """The demo's compose.yaml with each built service's ``build:`` replaced by envkit's tag, and
        the bench's labels on every container, network and volume."""
        data = json.loads(json.dumps(self.compose))
        data.pop("name", None)  # v1 names the project from -p only
        for key in [k for k in data if k.startswith("x-")]:
            del data[key]
        for name, svc in data["services"].items():
            if "build" in svc:
                del svc["build"]
                svc["image"] = self.tags[name]
            svc["labels"] = {**(svc.get("labels") or {}), **labels}
        networks = data.setdefault("networks", {})
        for net in [*networks, "default"]:
            networks[net] = {**(networks.get(net) or {}), "labels": labels}
        for vol in data.get("volumes") or {}:
            data["volumes"][vol] = {**(data["volumes"][vol] or {}), "labels": labels}
        path = self.tmp / f"compose-{run}.yaml"
        path.write_text(json.dumps(data, indent=1))  # JSON is YAML
        return path

    # --- one run -------------------------------------------------------------------------------

    def command(self, mode: str, run: str) -> tuple[list[str], dict[str, str], tuple[str, str]]:
        """The command of a run, its environment, and the label that marks its containers."""
        workers = str(self.args.workers)
        times = self.tmp / f"times-{run}"
        if mode == "envkit":
            state = self.tmp / f"state-{run}"
            self.state_dirs.append(state)
            env = self.env(ENVKIT_STATE_DIR=str(state), BENCH_PEERS_TIMES=str(times))
            from envkit.config.find import load

            stack_id = load(ROOT, env).id
            self.stack_ids.add(stack_id)
            cmd = [self.python, "-m", "envkit", "e2e", "--workers", workers, "--"]
            cmd += ["-q", "-p", "no:cacheprovider", "-p", "bench_peers_times"]
            return cmd, env, ("envkit.stack", stack_id)
        labels = {LABEL: self.session, RUN_LABEL: run}
        spec: dict[str, Any] = {"mode": mode, "labels": labels}
        if mode == "compose":
            spec["file"] = str(self.compose_file(run, labels))
            spec["compose"] = COMPOSE
            spec["project"] = run.replace("-", "")
        spec["services"] = self.services
        spec_file = self.tmp / f"spec-{run}.json"
        spec_file.write_text(json.dumps(spec))
        env = self.env(
            BENCH_PEERS_SPEC=str(spec_file),
            BENCH_PEERS_TIMES=str(times),
            TESTCONTAINERS_RYUK_DISABLED="true",
        )
        cmd = [self.python, "-m", "pytest", "-n", workers, "tests/e2e", "-q", "-p", "no:cacheprovider"]
        cmd += ["-p", "no:envkit", "-p", "bench_peers_stack", "-p", "bench_peers_times"]
        return cmd, env, (RUN_LABEL, run)

    def start(self, cmd: list[str], env: dict[str, str], run: str) -> subprocess.Popen[bytes]:
        out = (self.tmp / f"out-{run}").open("wb")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        self.procs.append(proc)
        return proc

    def containers(self, label: tuple[str, str]) -> list[dict[str, Any]]:
        """The containers carrying ``label``; the volumes they mount are noted for the cleanup."""
        found = self.client.containers(all=True, filters={"label": f"{label[0]}={label[1]}"})
        self.volumes.update(mounted(found))
        return found

    def left(self, label: tuple[str, str], volumes: set[str]) -> tuple[int, int, int]:
        """The run's containers, networks and volumes present now."""
        selector = {"label": f"{label[0]}={label[1]}"}
        containers = len(self.client.containers(all=True, filters=selector))
        networks = len(self.client.networks(filters=selector))
        present = {v["Name"] for v in self.client.volumes(filters=selector).get("Volumes") or []}
        present |= {v["Name"] for v in self.client.volumes().get("Volumes") or [] if v["Name"] in volumes}
        return containers, networks, len(present)

    def timed(self, mode: str, rep: int) -> dict[str, float]:
        run = f"p{self.session}-{mode[:2]}{rep}"
        cmd, env, label = self.command(mode, run)
        creates = Creates(label)
        load = os.getloadavg()[0]
        try:
            since = time.time()
            started = time.monotonic()
            proc = self.start(cmd, env, run)
            proc.wait()
            exited = time.monotonic() - started
            deadline = time.monotonic() + 60
            while self.containers(label):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{mode}: the run's containers were not removed within 60 s")
                time.sleep(0.1)
            gone = time.monotonic() - started
        finally:
            created = creates.stop()
        output = (self.tmp / f"out-{run}").read_text(errors="replace")
        passed = [int(n) for n in re.findall(r"(\d+) passed", output)]
        if proc.returncode != 0 or not passed:
            raise RuntimeError(f"{mode}: the run failed ({proc.returncode}):\n{output[-4000:]}")
        times = self.times(run)
        if mode == "envkit":  # envkit e2e starts the stack before pytest, and says how long it took
            took = re.search(r"stack \S+: \d+ started in ([\d.]+)s", output)
            stack_up = float(took.group(1)) if took else float("nan")
            stack_down = float("nan")
        else:  # each worker's own stack: the median over the workers
            stack_up = median([times["ready"][w] - times["start"][w] for w in times["ready"]])
            stack_down = median([times["stopped"][w] - times["stop"][w] for w in times["stopped"]])
        return {
            "first": min(times["call"].values()) - since,
            "last": max(times["end"].values()) - since,
            "exit": exited,
            "gone": gone,
            "passed": passed[-1],
            "created": created,
            "stack_up": stack_up,
            "stack_down": stack_down,
            "load": load,
        }

    def times(self, run: str) -> dict[str, dict[str, float]]:
        """What the -p plugins wrote: {"call"|"end"|"start"|"ready"|"stop"|"stopped": {key: time}};
        a test's call and end are keyed by their line, a stack's steps by its worker."""
        path = self.tmp / f"times-{run}"
        out: dict[str, dict[str, float]] = {
            k: {} for k in ("call", "end", "start", "ready", "stop", "stopped")
        }
        text = path.read_text() if path.exists() else ""
        for i, line in enumerate(text.splitlines(keepends=True)):
            if not line.endswith("\n"):  # still being written (the plugins append while we read)
                break
            what, at, *worker = line.split()
            out[what][worker[0] if worker else str(i)] = float(at)
        return out

    def killed(self, mode: str, rep: int) -> dict[str, Any]:
        run = f"p{self.session}-{mode[:2]}k{rep}"
        cmd, env, label = self.command(mode, run)
        started = time.monotonic()
        proc = self.start(cmd, env, run)
        while not self.times(run)["end"]:
            if proc.poll() is not None or time.monotonic() - started > 180:
                output = (self.tmp / f"out-{run}").read_text(errors="replace")
                raise RuntimeError(
                    f"{mode}: no test ended before the kill ({proc.returncode}):\n{output[-3000:]}"
                )
            time.sleep(0.05)
        at = time.monotonic() - started
        volumes = mounted(self.containers(label))  # this run's: its anonymous volumes carry no label
        before = self.left(label, volumes)
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait()
        volumes |= mounted(self.containers(label))  # a container created just before the kill
        zero_at = None
        while (waited := time.monotonic() - killed) < self.args.grace:
            now = self.left(label, volumes)
            if now != (0, 0, 0):
                zero_at = None
            elif zero_at is None:
                zero_at = waited
            time.sleep(0.2)
        after = self.left(label, volumes)
        self.remove(label)
        return {
            "at": at,
            "before": before,
            "after": after,
            "zero_at": zero_at if after == (0, 0, 0) else None,
        }

    # --- cleanup -------------------------------------------------------------------------------

    def remove(self, label: tuple[str, str]) -> None:
        """Remove every container, network and volume carrying ``label``."""
        selector = {"label": f"{label[0]}={label[1]}"}
        for c in self.client.containers(all=True, filters=selector):
            with contextlib.suppress(docker.errors.NotFound):
                self.client.remove_container(c["Id"], force=True, v=True)
        for net in self.client.networks(filters=selector):
            with contextlib.suppress(docker.errors.NotFound):
                self.client.remove_network(net["Id"])
        for vol in self.client.volumes(filters=selector).get("Volumes") or []:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.remove_volume(vol["Name"], force=True)

    def cleanup(self) -> None:
        """Kill what still runs, stop the envkit stacks, remove what carries the bench's labels or
        the stacks' ids, and the temporary directory. Each step runs even if one before failed;
        a second Ctrl-C or SIGTERM does not cut it short."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        try:
            killed = False
            for proc in self.procs:
                if proc.poll() is None:
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    killed = True
            if killed:
                time.sleep(1)  # a create a killed docker-compose had sent is done, then removed
            for state in self.state_dirs:
                if state.is_dir():
                    subprocess.run(
                        [self.python, "-m", "envkit", "down", "--all"],
                        cwd=ROOT,
                        env=self.env(ENVKIT_STATE_DIR=str(state)),
                        capture_output=True,
                        timeout=120,
                    )
        except Exception as err:
            say(f"cleanup: {type(err).__name__}: {err}")
        left = 0
        for label in [(LABEL, self.session), *(("envkit.stack", s) for s in self.stack_ids)]:
            try:
                left += len(self.containers(label))
                self.remove(label)
            except Exception as err:
                say(f"cleanup: removing {label[0]}={label[1]}: {type(err).__name__}: {err}")
        with contextlib.suppress(Exception):
            names = {v["Name"] for v in self.client.volumes().get("Volumes") or []}
            for vol in self.volumes & names:
                with contextlib.suppress(docker.errors.APIError):
                    self.client.remove_volume(vol, force=True)
        if left:
            say(f"cleanup: removed {left} container(s) left by the runs")
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- the report ----------------------------------------------------------------------------

    def main(self) -> int:
        load = os.getloadavg()[0]
        say(
            f"bench/peers.py: tests/e2e under -n {self.args.workers}, {self.args.reps} timed run(s) and "
            f"{self.args.kills} kill -9 run(s) per mode; {os.cpu_count()} CPUs, load average {load:.1f}"
        )
        self.prepare()
        timed: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for rep in range(self.args.reps):
            for mode in MODES:
                s = self.timed(mode, rep)
                timed[mode].append(s)
                say(
                    f"  {mode:<14} first test {s['first']:5.1f}s  last test {s['last']:5.1f}s  "
                    f"exit {s['exit']:5.1f}s  gone {s['gone']:5.1f}s  passed {s['passed']:.0f}  "
                    f"containers created {s['created']:.0f}  stack up {fmt(s['stack_up'])}  "
                    f"stack down {fmt(s['stack_down'])}  (load {s['load']:.1f})"
                )
        kills: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        for rep in range(self.args.kills):
            for mode in MODES:
                k = self.killed(mode, rep)
                kills[mode].append(k)
                gone = f"all gone {k['zero_at']:.1f}s after" if k["zero_at"] is not None else "still there"
                say(
                    f"  {mode:<14} kill -9 at {k['at']:.1f}s: containers/networks/volumes "
                    f"{'/'.join(map(str, k['before']))} before, {'/'.join(map(str, k['after']))} "
                    f"{self.args.grace:g}s after ({gone})"
                )
        say()
        say(
            f"| -n {self.args.workers} | first test | last test | until gone | stack up | stack down "
            f"| passed | containers created "
            f"| {self.args.grace:g} s after kill -9: containers / networks / volumes |"
        )
        say("|---|---|---|---|---|---|---|---|---|")
        base = median([s["last"] for s in timed["envkit"]])

        def secs(values: list[float]) -> str:
            m = median([v for v in values if not math.isnan(v)])  # NaN: not measured
            return "-" if math.isnan(m) else f"{m:.1f} s"

        for mode in MODES:
            ss = timed[mode]
            last = median([s["last"] for s in ss])
            ratio = f" ({last / base:.2f}x)" if mode != "envkit" else ""
            left = "; ".join(map(after_kill, kills[mode])) or "-"
            say(
                f"| {mode} | {secs([s['first'] for s in ss])} | {last:.1f} s{ratio} "
                f"| {secs([s['gone'] for s in ss])} | {secs([s['stack_up'] for s in ss])} "
                f"| {secs([s['stack_down'] for s in ss])} "
                f"| {', '.join(sorted({str(int(s['passed'])) for s in ss}))} "
                f"| {', '.join(sorted({str(int(s['created'])) for s in ss}))} | {left} |"
            )
        say(
            f"(medians of {self.args.reps}; times from the command's start; x: last test against envkit's; "
            "until gone: until the run's containers are gone; stack up/down: envkit's one stack, "
            "a peer's per worker; kill -9 of the process group once a first test has ended)"
        )
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2, help="timed runs per mode (default 2)")
    parser.add_argument("--kills", type=int, default=1, help="kill -9 runs per mode (default 1)")
    parser.add_argument("--workers", type=int, default=4, help="pytest -n (default 4)")
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds after a kill -9 before counting (default 10)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(args)  # makes the temporary directory last: nothing to clean up if it fails
    try:
        return bench.main()
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
