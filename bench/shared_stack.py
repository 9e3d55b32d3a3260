"""Benchmark: one shared service stack for N processes, against one stack per process.

Run by hand, against the local Docker daemon (not a test)::

    .venv/bin/python bench/shared_stack.py [--reps R] [--grace SECONDS] [--warm W]

It makes, in a temporary directory, a project whose stack has 2 services from
one image built on a locally imported busybox (``web``: busybox httpd with an
HTTP check; ``echo``: a TCP echo server that depends on ``web``, with a TCP
check), builds that image once, then for N = 1, 2, 4, 8, R times each:

  shared    N holder processes acquire the cold stack at the same instant
            (like N pytest-xdist workers): the time to first healthy (the
            acquire of the process that started the stack) and until all N
            hold it; then N *joiners* acquire at one instant while the stack is
            up: each one's acquire() latency, measured inside the process from
            the call to its return (interpreter start and the import of
            envkit's stack modules excluded: a conftest or the pytest plugin
            imports them when the session starts); then every holder releases, the last one alone: the
            teardown time from that release() call to the destroy event of the
            last container / the network; and the containers created (docker
            ``create`` events carrying the stack's label) over the whole run.
  baseline  N processes each with its own ENVKIT_STATE_DIR, hence its own stack
            (what pytest-docker does under xdist), all at one instant: the time
            until every one is healthy, and the containers created.

and once, the warm reuse: a holder acquires with a TTL and releases (the stack
stays up, idle), then W fresh processes, one after another, acquire (and
release, with the TTL too): their acquire() latency, and the containers they
created (none is the target); ``envkit down`` ends it.

The holders are small subprocesses (the script ``HOLDER_SOURCE`` below, written
to the temporary directory) that also time the phases of acquire() by wrapping
envkit's functions in their own process, so the bench shows where a joiner's
milliseconds go. ENVKIT_GRACE is 0 unless ``--grace`` says otherwise: the last
release tears the stack down itself, so the teardown figure is the mechanism's
own cost (with a grace, add the grace and up to 0.5 s of reaper polling).

Everything it creates in Docker carries its labels (``envkit.project=<bench
stack>``: the busybox base, the built image, the containers and networks) and
is removed at the end, as is the
temporary directory, also on an error, Ctrl-C or SIGTERM. A MISS is a result,
not an error: the exit code is non-zero only when the bench itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from build_noop import remove_stack  # noqa: E402  (bench/: images labelled for a stack, children first)
from conftest import import_busybox  # noqa: E402  (tests/conftest.py: busybox rootfs -> docker import)
from engine_client import docker_api_client  # noqa: E402  (tests/engine_client.py: the engine envkit uses)

from envkit.config import find as config_mod  # noqa: E402
from envkit.docker import labels  # noqa: E402
from envkit.docker.engine import Daemon  # noqa: E402
from envkit.images import build as build_mod  # noqa: E402

NS = (1, 2, 4, 8)
JOINER_TARGET_MS = 50.0
WARM_TARGET_MS = 300.0
SERVICES = 2  # one start per run = this many containers
TIMEOUT = 180.0  # seconds a holder may take to say anything
GO_DELAY = 0.3  # seconds between "go" being sent and the common start instant

# The tests' 2-service stack (tests/integration/stack_fixtures.py): a web server and a TCP echo server.
SERVICES_TOML = """
[services.web]
image = "bb"
ports = [8000]
command = ["httpd", "-f", "-p", "8000", "-h", "/etc"]
healthcheck = { http = "/hostname", port = 8000 }

[services.echo]
image = "bb"
ports = [9000]
command = ["nc", "-ll", "-p", "9000", "-e", "cat"]
healthcheck = { tcp = 9000 }
depends_on = ["web"]
"""

# A holder process: imports envkit, says it is ready, and on "go T" calls envkit.acquire() at the
# wall-clock instant T; prints what it measured; on "release T" (or EOF) releases at T and exits.
# It imports nothing envkit would not, so acquire() pays for the same lazy imports as in real use.
HOLDER_SOURCE = r'''
"""A holder of the benchmark's stack (written by bench/shared_stack.py): python holder.py TTL|-"""
import importlib
import json
import os
import sys
import time
from contextlib import contextmanager

import envkit
from envkit.docker.engine import Daemon
from envkit.stack import health, lease, launch, objects, reaper, stack, state

phases = {}
started = []
holding = []  # non-empty while this process holds the state lock


def add(name, seconds):
    phases[name] = phases.get(name, 0.0) + seconds


def first_import(module):
    """Import a module envkit imports lazily just before envkit would, timing it apart."""
    if module not in sys.modules:
        t = time.perf_counter()
        importlib.import_module(module)
        add("imports", time.perf_counter() - t)


def wrap(owner, attr, name, before=None, note=None):
    """Time calls of owner.attr as the phase ``name``, less the lazy imports made meanwhile."""
    original = getattr(owner, attr)

    def timed(*args, **kwargs):
        if before is not None:
            before()
        if note is not None:
            note(args, kwargs)
        t = time.perf_counter()
        imports = phases.get("imports", 0.0)
        try:
            return original(*args, **kwargs)
        finally:
            phase = name(args) if callable(name) else name
            add(phase, time.perf_counter() - t - (phases.get("imports", 0.0) - imports))

    setattr(owner, attr, timed)


wrap(stack, "load", "config")  # the stack file, as envkit.acquire() loads it
wrap(Daemon, "__init__", "daemon")
wrap(stack, "desired", "images")
wrap(lease, "new_holder", "holder")
wrap(state.StateFile, "read", lambda args: "load_state" if holding else "reads")  # under the lock, or not
wrap(lease, "prune", "prune")
wrap(objects.StackObjects, "containers", "sync")
wrap(stack, "reconcile", "reconcile")
wrap(lease, "register", "register")
wrap(state.StateFile, "save", "save")
wrap(reaper, "spawn", "reaper_check")
wrap(launch.Launcher, "run", "bring_up")
wrap(objects.StackObjects, "ensure_network", "network")
wrap(
    objects.StackObjects,
    "run",
    lambda args: "create:" + args[1].aliases[0],
    note=lambda args, kwargs: started.append(kwargs["service"]),
)
wrap(health, "wait_healthy", lambda args: "healthy:" + args[1].name)
_state_lock = lease.state_lock


@contextmanager
def state_lock(*args, **kwargs):
    t = time.perf_counter()
    with _state_lock(*args, **kwargs):
        got = time.perf_counter()
        add("lock_wait", got - t)
        imports = phases.get("imports", 0.0)
        holding.append(True)
        try:
            yield
        finally:
            holding.pop()
            add("lock_held", time.perf_counter() - got - (phases.get("imports", 0.0) - imports))


lease.state_lock = state_lock


def say(**data):
    print(json.dumps(data), flush=True)


def command():
    return sys.stdin.readline().split()


def at(words):
    if len(words) > 1:
        time.sleep(max(0.0, float(words[1]) - time.time()))


ttl = None if sys.argv[1] == "-" else float(sys.argv[1])
say(ready=os.getpid())
words = command()
if not words or words[0] != "go":
    sys.exit(0)
at(words)
before = set(sys.modules)
t0 = time.time()
c0 = time.process_time()
p0 = time.perf_counter()
try:
    held = envkit.acquire(ttl=ttl)
except envkit.EnvkitError as err:
    say(error=type(err).__name__, message=str(err))
    sys.exit(3)
p1 = time.perf_counter()
c1 = time.process_time()
t1 = time.time()
new = {m.split(".")[0] for m in set(sys.modules) - before}
say(
    pid=os.getpid(),
    stack=held.handle.stack,
    acquire_s=p1 - p0,
    cpu_s=c1 - c0,
    t0=t0,
    t1=t1,
    phases=phases,
    started=started,
    ports={s: {str(p): hp for p, hp in ps.items()} for s, ps in held.handle.ports.items()},
    imported=sorted(new - {"envkit"}),
)
at(command())
r0 = time.time()
p0 = time.perf_counter()
held.release()
say(release_t0=r0, release_s=time.perf_counter() - p0)
'''

# Phases the holder times, as shown in the breakdown; indented ones are part of the one above.
PHASES = [
    ("imports", "lazy imports (psutil, filelock...)"),
    ("config", "load the stack file"),
    ("daemon", "connect (GET /version)"),
    ("images", "ensure images + input hashes"),
    ("holder", "holder record (psutil start time)"),
    ("lock_wait", "wait for the state lock"),
    ("lock_held", "under the state lock:"),
    ("load_state", "  read state.json"),
    ("prune", "  prune holders (flock+psutil)"),
    ("sync", "  list the stack's containers (ps)"),
    ("reconcile", "  decide what to do (pure)"),
    ("register", "  write+flock holder file"),
    ("save", "  write state.json"),
    ("reaper_check", "  is the reaper running"),
    ("bring_up", "wait until healthy (reads)"),
    ("other", "rest (setup, exit hooks, handle)"),
]
TOP_PHASES = ("imports", "config", "daemon", "images", "holder", "lock_wait", "lock_held", "bring_up")


# --------------------------------------------------------------------------- helpers


def say(text: str = "") -> None:
    print(text, flush=True)


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class Events:
    """Docker's container and network events, collected from a background thread for the whole run."""

    def __init__(self, client: docker.APIClient) -> None:
        self._stream = client.events(decode=True, filters={"type": ["container", "network"]})
        self.items: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                self.items.append(event)
        except BaseException as err:
            if not self._closed:
                self.error = err

    def select(
        self, kind: str, action: str, stacks: set[str], since: float = 0.0, until: float = math.inf
    ) -> list[dict[str, Any]]:
        """Events of ``kind`` and ``action`` of these stack ids, between two wall-clock times."""
        found = []
        for event in list(self.items):
            if event.get("Type") != kind or event.get("Action") != action:
                continue
            attributes = (event.get("Actor") or {}).get("Attributes") or {}
            # A container's event carries its labels; a network's carries its name (= the stack id).
            owner = attributes.get(labels.STACK) if kind == "container" else attributes.get("name")
            when = int(event.get("timeNano", 0)) / 1e9
            if owner in stacks and since <= when <= until:
                found.append(event)
        return found

    def wait_for(self, kind: str, action: str, stacks: set[str], count: int, since: float) -> None:
        """Wait (a few seconds at most) until ``count`` such events have arrived."""
        deadline = time.monotonic() + 10
        while len(self.select(kind, action, stacks, since)) < count:
            if self.error is not None:
                raise RuntimeError(f"the docker events stream failed: {self.error!r}")
            if time.monotonic() > deadline:
                got = len(self.select(kind, action, stacks, since))
                raise RuntimeError(f"expected {count} {kind} {action} event(s) of {stacks}, saw {got}")
            time.sleep(0.02)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._stream.close()
        self._thread.join(timeout=5)


class Holder:
    """One holder subprocess."""

    def __init__(self, bench: Bench, name: str, env: dict[str, str], ttl: float | None = None) -> None:
        self.name = name
        self.err_path = bench.tmp / "logs" / f"{name}.err"
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(bench.holder_script), "-" if ttl is None else str(ttl)],
                cwd=bench.root,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        bench.procs.append(self.proc)
        self.acquired: dict[str, Any] = {}
        self.released: dict[str, Any] = {}

    def read(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"holder {self.name} said nothing within {timeout:.0f}s{self._stderr()}")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"holder {self.name} exited {self.proc.returncode}{self._stderr()}")
        data = dict(json.loads(line))
        if "error" in data:
            raise RuntimeError(f"holder {self.name}: {data['error']}: {data['message']}")
        return data

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = TIMEOUT) -> None:
        """Read the release report and wait for the process to exit 0."""
        self.released = self.read(timeout)
        code = self.proc.wait(timeout=timeout)
        if code != 0:
            raise RuntimeError(f"holder {self.name} exited {code}{self._stderr()}")

    def _stderr(self) -> str:
        with contextlib.suppress(OSError):
            text = self.err_path.read_text().strip()
            if text:
                return ":\n  " + "\n  ".join(text.splitlines()[-15:])
        return ""


def go(holders: list[Holder], word: str = "go") -> float:
    """Tell every holder to act at one common wall-clock instant; returns that instant."""
    instant = time.time() + GO_DELAY
    for holder in holders:
        holder.send(f"{word} {instant:.6f}")
    return instant


def spawn(bench: Bench, prefix: str, count: int, env: dict[str, str] | list[dict[str, str]]) -> list[Holder]:
    """Start ``count`` holders and wait until each has imported envkit."""
    envs = env if isinstance(env, list) else [env] * count
    holders = [Holder(bench, f"{prefix}-{i}", envs[i]) for i in range(count)]
    for holder in holders:
        holder.read()
    return holders


@dataclass
class Round:
    """One run of N shared holders."""

    n: int
    first_healthy: float = 0.0  # the starter's acquire()
    all_holding: float = 0.0  # from the common start instant until the last of the N held it
    starters: int = 0  # processes that started a service
    starter_phases: dict[str, float] = field(default_factory=dict)
    joiners: list[float] = field(default_factory=list)  # acquire() seconds
    joiner_phases: list[dict[str, float]] = field(default_factory=list)
    joiner_cpu: list[float] = field(default_factory=list)  # CPU seconds of each joiner's acquire()
    imported: set[str] = field(default_factory=set)
    teardown: float = 0.0
    last_release: float = 0.0  # the last holder's release() call
    containers: int = 0
    networks: int = 0
    same_endpoints: bool = True


@dataclass
class Baseline:
    n: int
    all_healthy: float = 0.0
    containers: int = 0
    networks: int = 0


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, reps: int, grace: float, warm: int) -> None:
        self.reps = reps
        self.grace = grace
        self.warm_count = warm
        self.name = f"envkit-bench-{uuid.uuid4().hex[:8]}"
        self.daemon = Daemon()
        self.client = docker_api_client()  # the bench's own setup, looks and cleanup
        self.tmp = Path(tempfile.mkdtemp(prefix="envkit-bench-"))
        self.root = self.tmp / "project"
        self.root.mkdir()
        (self.tmp / "logs").mkdir()
        self.holder_script = self.tmp / "holder.py"
        self.holder_script.write_text(HOLDER_SOURCE)
        self.procs: list[subprocess.Popen[str]] = []
        self.events: Events | None = None
        self.shared_id = ""
        self.rounds: list[Round] = []
        self.baselines: list[Baseline] = []
        self.warm: list[float] = []
        self.warm_created = 0
        self.warm_phases: list[dict[str, float]] = []
        self.warm_cpu: list[float] = []

    def env(self, state_dir: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENVKIT_")}
        env.update(
            ENVKIT_ROOT=str(self.root),
            ENVKIT_GRACE=f"{self.grace:g}",
            ENVKIT_LOCK_DIR=str(self.tmp / "locks"),  # envkit's build locks out of ~/.cache
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        )
        if state_dir is not None:
            env["ENVKIT_STATE_DIR"] = str(state_dir)
        return env

    def stack_of(self, state_dir: Path | None = None) -> str:
        environ = {"ENVKIT_STATE_DIR": str(state_dir)} if state_dir else {}
        return config_mod.load(self.root, environ=environ).id

    @property
    def project_label(self) -> str:
        return f"{labels.PROJECT}={self.name}"

    def mine(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Only the containers / networks whose envkit.project label is this bench's."""
        return [o for o in objects if (o.get("Labels") or {}).get(labels.PROJECT) == self.name]

    def leftovers(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        containers = self.mine(self.client.containers(all=True, filters={"label": self.project_label}))
        networks = self.mine(self.client.networks(filters={"label": self.project_label}))
        return containers, networks

    def wait_gone(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while any(self.leftovers()):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the stacks were not torn down within {timeout:.0f}s{self.state_report()}"
                )
            time.sleep(0.1)

    def state_report(self) -> str:
        """The shared stack's state file, holder files and reaper log, to diagnose a failure."""
        state_dir = self.root / ".envkit"
        out = []
        for path in [
            state_dir / "state.json",
            *sorted((state_dir / "holders").glob("*")),
            state_dir / "reaper.log",
        ]:
            with contextlib.suppress(OSError):
                text = path.read_text().strip()
                out.append(f"--- {path.relative_to(self.root)}:\n" + "\n".join(text.splitlines()[-60:]))
        return ("\n" + "\n".join(out)) if out else ""

    # -- setup

    def setup(self) -> None:
        say(f"bench stack {self.name} in {self.root}")
        say(
            f"{os.cpu_count()} CPUs, Docker {self.client.version().get('Version')}, "
            f"ENVKIT_GRACE={self.grace:g}, load average {os.getloadavg()[0]:.2f}"
        )
        self.events = Events(self.client)
        base = import_busybox(self.client, "envkit-bench/busybox", self.name, self.name)
        say(f"base image: {base} (docker import of /bin/busybox, labelled envkit.project={self.name})")
        (self.root / "images" / "bb").mkdir(parents=True)
        (self.root / "images" / "bb" / "Dockerfile").write_text(f"FROM {base}\n")
        (self.root / "envkit.toml").write_text(
            f'[stack]\nname = "{self.name}"\npull = "never"\n\n[images.bb]\n{SERVICES_TOML}'
        )
        config = config_mod.load(self.root, environ={})
        started = time.perf_counter()
        results = build_mod.ensure(config, self.daemon)
        say(
            "built "
            + ", ".join(f"{r.image} -> {r.tag} ({r.status})" for r in results)
            + f" in {time.perf_counter() - started:.1f}s (not a figure: images are built before every run)"
        )
        self.shared_id = self.stack_of()
        say(f"shared stack id: {self.shared_id}; services: web (http check), echo (tcp check, after web)")

    # -- one shared run

    def shared(self, n: int, rep: int) -> Round:
        assert self.events is not None
        r = Round(n)
        stacks = {self.shared_id}
        env = self.env()
        holders = spawn(self, f"shared{n}.{rep}", n, env)
        begin = go(holders)
        for h in holders:
            h.acquired = h.read()
        starters = [h for h in holders if h.acquired["started"]]
        r.starters = len(starters)
        first = min(starters or holders, key=lambda h: h.acquired["acquire_s"])
        r.first_healthy = first.acquired["acquire_s"]
        r.starter_phases = {**first.acquired["phases"], "total": r.first_healthy}
        r.all_holding = max(h.acquired["t1"] for h in holders) - begin

        joiners = spawn(self, f"join{n}.{rep}", n, env)
        go(joiners)
        for h in joiners:
            h.acquired = h.read()
            if h.acquired["started"]:
                raise RuntimeError(f"joiner {h.name} started {h.acquired['started']}: the stack was up")
            r.joiners.append(h.acquired["acquire_s"])
            r.joiner_phases.append(h.acquired["phases"])
            r.joiner_cpu.append(h.acquired["cpu_s"])
            r.imported.update(h.acquired["imported"])
        everyone = holders + joiners
        ports = {json.dumps(h.acquired["ports"], sort_keys=True) for h in everyone}
        r.same_endpoints = len(ports) == 1 and {h.acquired["stack"] for h in everyone} == stacks

        # Every holder but one leaves at once; then the last one leaves alone, and the stack goes.
        last, others = everyone[0], everyone[1:]
        go(others, "release")
        for h in others:
            h.finish()
        go([last], "release")
        last.finish()
        r.last_release = last.released["release_t0"]
        self.wait_gone()
        creates = self.events.select("container", "create", stacks, begin)
        r.containers = len(creates)
        r.networks = len(self.events.select("network", "create", stacks, begin))
        if not r.containers or not r.networks:
            raise RuntimeError("saw no create event of the stack: is the docker events stream working?")
        self.events.wait_for("container", "destroy", stacks, r.containers, begin)
        self.events.wait_for("network", "destroy", stacks, r.networks, begin)
        ends = self.events.select("container", "destroy", stacks, begin)
        ends += self.events.select("network", "destroy", stacks, begin)
        r.teardown = max(int(e["timeNano"]) / 1e9 for e in ends) - r.last_release
        return r

    # -- one baseline run: a stack per process

    def baseline(self, n: int, rep: int) -> Baseline:
        assert self.events is not None
        b = Baseline(n)
        dirs = [self.tmp / "baseline" / f"n{n}.{rep}" / f"state-{i}" for i in range(n)]
        stacks = {self.stack_of(d) for d in dirs}
        if len(stacks) != n or self.shared_id in stacks:
            raise RuntimeError("the baseline's state directories should give distinct stacks")
        holders = spawn(self, f"base{n}.{rep}", n, [self.env(d) for d in dirs])
        begin = go(holders)
        for h in holders:
            h.acquired = h.read()
        b.all_healthy = max(h.acquired["t1"] for h in holders) - begin
        go(holders, "release")
        for h in holders:
            h.finish()
        self.wait_gone()
        b.containers = len(self.events.select("container", "create", stacks, begin))
        b.networks = len(self.events.select("network", "create", stacks, begin))
        return b

    def runs(self) -> None:
        for n in NS:
            for rep in range(self.reps):
                r = self.shared(n, rep)
                self.rounds.append(r)
                b = self.baseline(n, rep)
                self.baselines.append(b)
                say(
                    f"N={n} run {rep + 1}: first healthy {r.first_healthy:.2f}s, all {n} holding "
                    f"{r.all_holding:.2f}s; joiners {', '.join(f'{s * 1000:.0f}' for s in r.joiners)} ms; "
                    f"teardown {r.teardown:.2f}s; created {r.containers} container(s), "
                    f"{r.networks} network(s)"
                    f" | baseline: all healthy {b.all_healthy:.2f}s, {b.containers} containers"
                )

    # -- warm reuse

    def warm_reuse(self) -> None:
        assert self.events is not None
        say(
            f"\nwarm reuse: a holder acquires with ttl=60 and releases; "
            f"then {self.warm_count} fresh processes"
        )
        stacks = {self.shared_id}
        first = Holder(self, "warm-0", self.env(), ttl=60)
        first.read()
        go([first])
        first.acquired = first.read()
        go([first], "release")
        first.finish()
        if not self.leftovers()[0]:
            raise RuntimeError("the stack did not stay up after a release with a TTL")
        for i in range(1, self.warm_count + 1):
            h = Holder(self, f"warm-{i}", self.env(), ttl=60)  # each keeps it warm for the next one
            h.read()
            go([h])
            h.acquired = h.read()
            a = h.acquired
            created = len(self.events.select("container", "create", stacks, a["t0"], a["t1"]))
            self.warm.append(a["acquire_s"])
            self.warm_phases.append(a["phases"])
            self.warm_cpu.append(a["cpu_s"])
            self.warm_created += created
            say(
                f"  fresh process {i}: acquire {a['acquire_s'] * 1000:.0f} ms, created {created} container(s)"
            )
            go([h], "release")
            h.finish()
        if not self.leftovers()[0]:
            raise RuntimeError("the stack did not stay up after a release with a TTL")
        started = time.perf_counter()
        down = subprocess.run(
            [sys.executable, "-m", "envkit", "down"],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
        )
        if down.returncode != 0:
            raise RuntimeError(f"envkit down exited {down.returncode}:\n{down.stdout}{down.stderr}")
        self.wait_gone()
        say(f"  `envkit down` of the idle stack: gone after {time.perf_counter() - started:.2f}s")

    # -- summary

    def import_cost(self, modules: set[str]) -> float | None:
        """Seconds a fresh interpreter with envkit imported takes to import ``modules``."""
        if not modules:
            return None
        code = (
            "import time, envkit; t = time.perf_counter(); "
            + "".join(f"import {m}; " for m in sorted(modules))
            + "print(time.perf_counter() - t)"
        )
        times = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env())
            if out.returncode != 0:
                return None
            times.append(float(out.stdout))
        return statistics.median(times)

    def summary(self) -> list[str]:
        say("\n" + "=" * 100)
        say(
            f"summary: 2-service stack, {self.reps} run(s) per N, ENVKIT_GRACE={self.grace:g}, "
            f"{os.cpu_count()} CPUs; medians over the runs (joiners: over every joiner of every run)"
        )
        header = (
            f"  {'N':>2}  {'first healthy':>13}  {'all N hold':>10}  {'joiner med':>10}  {'joiner p95':>10}  "
            f"{'teardown':>8}  {'created':>7}  | {'baseline: all healthy':>21}  {'created':>7}"
        )
        say(header)
        say("  " + "-" * (len(header) - 2))
        by_n: dict[int, tuple[list[Round], list[Baseline]]] = {}
        for n in NS:
            rounds = [r for r in self.rounds if r.n == n]
            bases = [b for b in self.baselines if b.n == n]
            by_n[n] = (rounds, bases)
            joiners = [s for r in rounds for s in r.joiners]
            created = "/".join(sorted({str(r.containers) for r in rounds}))
            base_created = "/".join(sorted({str(b.containers) for b in bases}))
            say(
                f"  {n:>2}  {statistics.median(r.first_healthy for r in rounds):>12.2f}s"
                f"  {statistics.median(r.all_holding for r in rounds):>9.2f}s"
                f"  {ms(statistics.median(joiners)):>10}  {ms(p95(joiners)):>10}"
                f"  {statistics.median(r.teardown for r in rounds):>7.2f}s  {created:>7}"
                f"  | {statistics.median(b.all_healthy for b in bases):>20.2f}s  {base_created:>7}"
            )
        warm_med = statistics.median(self.warm)
        say(
            f"  warm reuse (after a release with a TTL): acquire median {ms(warm_med)}, "
            f"max {ms(max(self.warm))} over {len(self.warm)} fresh processes; created {self.warm_created}"
        )

        say("\nwhere a joiner's acquire() goes (median ms per phase, from wrappers in the holder process)")
        say(f"  {'phase':<34}" + "".join(f"{'N=' + str(n):>8}" for n in NS) + f"{'warm':>8}")
        columns = [[p for r in by_n[n][0] for p in r.joiner_phases] for n in NS] + [self.warm_phases]
        totals = [[s for r in by_n[n][0] for s in r.joiners] for n in NS] + [self.warm]
        for key, label in PHASES:
            cells = []
            for phases, total in zip(columns, totals, strict=True):
                if key == "other":
                    values = [
                        t - sum(p.get(k, 0.0) for k in TOP_PHASES) for p, t in zip(phases, total, strict=True)
                    ]
                else:
                    values = [p.get(key, 0.0) for p in phases]
                cells.append(f"{statistics.median(values) * 1000:>8.1f}")
            say(f"  {label:<34}" + "".join(cells))
        say(f"  {'total acquire()':<34}" + "".join(f"{statistics.median(t) * 1000:>8.1f}" for t in totals))
        cpus = [[c for r in by_n[n][0] for c in r.joiner_cpu] for n in NS] + [self.warm_cpu]
        say(
            f"  {'  of which on CPU (process_time)':<34}"
            + "".join(f"{statistics.median(c) * 1000:>8.1f}" for c in cpus)
        )
        imported = set().union(*(r.imported for r in self.rounds))
        if imported:
            cost = self.import_cost(imported)
            say(
                f"  modules a joiner first imports inside acquire(): {', '.join(sorted(imported))}"
                + (f" (importing them costs {cost * 1000:.0f} ms on their own)" if cost is not None else "")
            )

        say("\nwhere the first healthy goes (the starter's acquire(), median ms)")
        say(f"  {'phase':<34}" + "".join(f"{'N=' + str(n):>8}" for n in NS))
        starters = [[r.starter_phases for r in by_n[n][0]] for n in NS]
        services = ("web", "echo")
        for label, value in [
            ("before starting (imports, lock...)", lambda p: p["total"] - p.get("bring_up", 0.0)),
            ("  of which create the network", lambda p: p.get("network", 0.0)),
            *[
                row
                for svc in services
                for row in (
                    (f"{svc}: create + start container", lambda p, svc=svc: p.get("create:" + svc, 0.0)),
                    (f"{svc}: started -> healthy", lambda p, svc=svc: p.get("healthy:" + svc, 0.0)),
                )
            ],
            (
                "state updates under the lock",
                lambda p: (
                    p.get("bring_up", 0.0)
                    - sum(p.get(k + ":" + s, 0.0) for k in ("create", "healthy") for s in services)
                ),
            ),
            ("total (time to first healthy)", lambda p: p["total"]),
        ]:
            say(
                f"  {label:<34}"
                + "".join(f"{statistics.median(map(value, col)) * 1000:>8.0f}" for col in starters)
            )

        say("")
        lines = []

        def verdict(label: str, value: str, target: str, passed: bool) -> None:
            line = f"  {label:<44} {value:>12}   {target:<16} {'PASS' if passed else 'MISS'}"
            lines.append(line.strip())
            say(line)

        for n in NS:
            joiners = [s for r in by_n[n][0] for s in r.joiners]
            med = statistics.median(joiners)
            verdict(f"joiner acquire median, N={n}:", ms(med), "< 50 ms", med * 1000 < JOINER_TARGET_MS)
        verdict("warm-reuse acquire median:", ms(warm_med), "< 300 ms", warm_med * 1000 < WARM_TARGET_MS)
        verdict("warm reuse creates no container:", str(self.warm_created), "0", self.warm_created == 0)
        for n in NS:
            rounds = by_n[n][0]
            counts = ",".join(str(r.containers) for r in rounds)
            ok = all(r.containers == SERVICES and r.networks == 1 and r.starters == 1 for r in rounds)
            verdict(f"one start per run, N={n} (containers/run):", counts, f"{SERVICES} each", ok)
        same = all(r.same_endpoints for r in self.rounds)
        say(f"  every holder of a run saw the same endpoints: {'yes' if same else 'NO'}")
        if not same:
            raise RuntimeError("holders of one shared stack saw different endpoints")
        return lines

    # -- cleanup

    def reapers(self) -> list[psutil.Process]:
        """The reapers our holders started (their command line names a state dir under our temp dir)."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if "envkit.stack.reaper" in cmd and any(arg.startswith(str(self.tmp)) for arg in cmd):
                found.append(proc)
        return found

    def cleanup(self) -> bool:
        """Stop what is still running, remove what the bench made; True when nothing was left over."""
        say("\ncleanup:")
        clean = True
        for proc in self.procs:
            if proc.poll() is None:
                clean = False
                with contextlib.suppress(OSError):
                    proc.kill()
            with contextlib.suppress(Exception):
                proc.communicate(timeout=10)
        try:
            deadline = time.monotonic() + 5  # reapers exit by themselves once their stack is gone
            while (reapers := self.reapers()) and time.monotonic() < deadline:
                time.sleep(0.2)
            for reaper in reapers:
                say(f"  reaper {reaper.pid} still running: killed")
                clean = False
                with contextlib.suppress(psutil.Error):
                    reaper.kill()
            containers, networks = self.leftovers()
            for c in containers:
                self.client.remove_container(c["Id"], force=True, v=True)
            for net in networks:
                self.client.remove_network(net["Id"])
            if containers or networks:
                clean = False
                say(f"  removed {len(containers)} leftover container(s), {len(networks)} network(s)")
            removed = remove_stack(self.client, self.name)
            images = self.client.images(all=True, filters={"label": f"{labels.PROJECT}={self.name}"})
            say(f"  removed {removed} image(s) labelled {labels.PROJECT}={self.name}; {len(images)} left")
            containers, networks = self.leftovers()
            if containers or networks or images:
                clean = False
                say(
                    f"  STILL LEFT: {len(containers)} containers, {len(networks)} networks, "
                    f"{len(images)} images"
                )
        except Exception as err:  # still remove the temp dir
            clean = False
            say(f"  cleanup failed: {err!r}; look with: docker ps -a --filter label={self.project_label}")
        if self.events is not None:
            self.events.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        say(f"  removed {self.tmp}")
        return clean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs per N (default 3)")
    parser.add_argument("--grace", type=float, default=0.0, help="ENVKIT_GRACE for the holders (default 0)")
    parser.add_argument(
        "--warm", type=int, default=5, help="fresh processes in the warm-reuse run (default 5)"
    )
    args = parser.parse_args()
    if args.reps < 1 or args.warm < 1 or args.grace < 0:
        parser.error("--reps and --warm must be at least 1, --grace at least 0")
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(args.reps, args.grace, args.warm)
    code = 1
    started = time.monotonic()
    try:
        bench.setup()
        bench.runs()
        bench.warm_reuse()
        bench.summary()  # a MISS is a result to read, not a failure of the run
        code = 0
    except KeyboardInterrupt:
        say("\ninterrupted")
        code = 130
    except Exception as err:
        say(f"\nbench failed: {type(err).__name__}: {err}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        try:
            if not bench.cleanup() and code == 0:
                say("  the bench left something behind (removed now): see above")
                code = 1
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    say(f"  total {time.monotonic() - started:.0f}s (load average now {os.getloadavg()[0]:.2f})")
    return code


if __name__ == "__main__":
    sys.exit(main())
