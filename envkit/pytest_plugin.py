"""envkit's pytest plugin: the shared stack as one fixture.

Loaded through the ``pytest11`` entry point (``-p no:envkit`` turns it off)::

    import pytest

    pytestmark = pytest.mark.services("api")     # what these tests need (plus depends_on)

    def test_health(envkit_stack):
        assert urlopen(envkit_stack.url("api", 8000) + "/health").status == 200

* ``envkit_stack`` (session scope) holds the shared stack and returns its
  :class:`~envkit.stack.StackHandle`. It acquires on first use, so a run whose
  selected tests need no service starts nothing. What starts is the union of
  the ``services`` markers of the selected tests that use the fixture (a test
  without the marker needs every service), with their ``depends_on``.
* Under pytest-xdist the first worker to need the stack also registers a
  *session pin* for the controller: the stack stays up while the controller
  lives, however the workers come and go (an early-finishing worker never
  takes it down under the others; a crashed worker's replacement just
  acquires again), and goes when the controller's session ends. Without xdist
  the one process does both.
* ``envkit_worker_id`` is ``gw0``, ``gw1``, ... under xdist and ``main``
  without: the key to per-worker data (a database per worker, a redis DB
  index per worker; see the README).
* A failing test that used the stack gets a report section with the last
  lines of each service it used. A service that does not become healthy ends
  the session with its log, never a hang.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from envkit.errors import EnvkitError
from envkit.progress import State

if TYPE_CHECKING:
    from envkit.config.model import StackConfig
    from envkit.settings import Settings
    from envkit.stack.handle import StackHandle
    from envkit.stack.idle import Outcome
    from envkit.stack.stack import Lease, Stack

MARKER = "services"
FIXTURE = "envkit_stack"
LOG_LINES = 20  # per service, in a failing test's report


def _seconds(raw: str) -> float:
    from envkit.settings import seconds

    return seconds(raw)


_seconds.__name__ = "number of seconds"  # argparse names the type in its error message


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("envkit", "envkit: the shared service stack")
    group.addoption(
        "--envkit-keep",
        action="store_true",
        help="leave the stack up after the run, until `envkit down` (the next run attaches to it)",
    )
    group.addoption(
        "--envkit-ttl",
        type=_seconds,
        metavar="SECONDS",
        help="leave the stack up SECONDS after the run; a run within that time attaches to it",
    )
    group.addoption(
        "--envkit-no-build",
        action="store_true",
        help="fail if a service's image is not built, instead of building it",
    )
    group.addoption(
        "--envkit-keep-on-failure",
        action="store_true",
        help="if the run fails, leave the stack up and print how to reach it",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*names): the envkit services a test needs (with their depends_on); "
        f"a test using {FIXTURE} without it gets every service",
    )
    if config.getoption("envkit_keep") and config.getoption("envkit_ttl") is not None:
        raise pytest.UsageError("--envkit-keep and --envkit-ttl exclude each other; pass one")
    config.stash[_RUN] = _Run(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist (controller): tell each worker which process its session pin belongs to."""
    run = _run(node.config)
    node.workerinput["envkit_session"] = [os.getpid(), run.own_start_time()]


@pytest.fixture(scope="session")
def envkit_stack(request: pytest.FixtureRequest) -> StackHandle:
    """The shared stack's handle: ``url(service, port)``, ``endpoint(service, port)``, ``env()``."""
    return _run(request.config).handle(request.session)


@pytest.fixture(scope="session")
def envkit_worker_id(request: pytest.FixtureRequest) -> str:
    """``gw0``, ``gw1``, ... under pytest-xdist, ``main`` without: name per-worker data after it."""
    workerinput = getattr(request.config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    run = _run(item.config)
    if report.failed and run.lease is not None and FIXTURE in getattr(item, "fixturenames", ()):
        for name in run.services_of(item):
            try:
                lines = run.lease.stack.service_logs(name, LOG_LINES)
            except EnvkitError as err:
                lines = [f"(could not read its log: {err})"]
            report.sections.append(
                (f"envkit: {name} log (last {LOG_LINES} lines)", "\n".join(lines) or "(its log is empty)")
            )
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _run(session.config).finish(failed=bool(session.testsfailed) or exitstatus not in (0, 5))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _run(terminalreporter.config).summary:
        terminalreporter.write_line(line)


# --- the per-process state ---------------------------------------------------------------------


@dataclass
class _Run:
    config: pytest.Config
    lease: Lease | None = None
    error: EnvkitError | None = None
    summary: list[str] = field(default_factory=list)
    _config: StackConfig | None = None
    _settings: Settings | None = None

    @property
    def worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @property
    def controller(self) -> bool:
        """The xdist controller: it runs no test, and ends the session pin its workers registered."""
        return not self.worker and self.config.pluginmanager.has_plugin("dsession")

    def own_start_time(self) -> float:
        from envkit.stack import lease

        return lease.process_start_time(os.getpid()) or 0.0

    def settings(self) -> Settings:
        if self._settings is None:
            from envkit.settings import Settings

            self._settings = Settings.from_env()
        return self._settings

    def stack_config(self) -> StackConfig:
        if self._config is None:
            from envkit.config.find import find_root, load

            root = find_root(Path(self.config.rootpath), settings=self.settings())
            self._config = load(root, settings=self.settings())
        return self._config

    def stack(self, progress: Any = None) -> Stack:
        from envkit.docker.engine import Daemon
        from envkit.stack.stack import Stack

        settings = self.settings()
        return Stack(self.stack_config(), Daemon(cache_dir=settings.cache_dir), progress, settings=settings)

    def services_of(self, item: pytest.Item) -> list[str]:
        """The services ``item`` needs: its markers' names (all when unmarked), with depends_on."""
        stack_config = self.stack_config()
        names: list[str] = []
        markers = list(item.iter_markers(MARKER))
        if not markers:
            return stack_config.service_order()
        for marker in markers:
            for name in marker.args:
                if not isinstance(name, str) or name not in stack_config.services:
                    raise EnvkitError(
                        f"{item.nodeid}: @pytest.mark.{MARKER}({name!r}) names no service of "
                        f"{stack_config.file} (it has: {', '.join(stack_config.services) or 'none'})\n"
                        "  fix: name a service declared under [services]"
                    )
                names.append(name)
        return stack_config.service_order(list(dict.fromkeys(names)))

    def wanted(self, session: pytest.Session) -> list[str]:
        """The union of what the selected tests that use the stack need: those that name the
        fixture, and those with a ``services`` marker (they may ask for it at run time)."""
        union: dict[str, None] = {}
        for item in session.items:
            if FIXTURE in getattr(item, "fixturenames", ()) or item.get_closest_marker(MARKER):
                union.update(dict.fromkeys(self.services_of(item)))
        return self.stack_config().service_order(list(union))

    def handle(self, session: pytest.Session) -> StackHandle:
        if self.lease is None and self.error is None:
            try:
                self.lease = self._acquire(session)
            except EnvkitError as err:
                self.error = err
                session.shouldstop = f"envkit: the stack could not be started: {type(err).__name__}"
        if self.lease is None:
            pytest.fail(f"envkit: {self.error}", pytrace=False)  # outside `except`: reported once
        return self.lease.handle

    def _acquire(self, session: pytest.Session) -> Lease:
        from envkit.stack import lease

        keep = bool(self.config.getoption("envkit_keep"))
        ttl = self.config.getoption("envkit_ttl")
        keep, ttl = self.settings().stay(keep, ttl)
        wanted = self.wanted(session)
        stack = self.stack(_TerminalProgress(self.config))
        pin = None
        if self.worker:
            workerinput: dict[str, Any] = getattr(self.config, "workerinput", {})
            pid, started = workerinput.get("envkit_session") or (os.getppid(), None)
            started = started or lease.process_start_time(pid)
            if started is not None:
                pin = lease.session_holder(pid, started, "pytest (xdist controller)", keep=keep, ttl=ttl)
        return stack.acquire(
            wanted,
            keep=keep,
            ttl=ttl,
            session=pin,
            build=not self.config.getoption("envkit_no_build"),
        )

    def finish(self, failed: bool) -> None:
        keep_up = failed and bool(self.config.getoption("envkit_keep_on_failure"))
        if self.lease is not None:
            held, self.lease = self.lease, None
            try:
                if self.worker:
                    held.release()  # the controller's session pin holds the stack until it ends
                    return
                outcome = held.release(grace=0.0, keep=keep_up)
            except EnvkitError as err:  # the reaper still removes the stack once no one holds it
                self.summary.append(f"envkit: could not release the stack: {err}")
                return
            self._report(held.stack, held.handle.stack, outcome, keep_up)
        elif self.controller:
            self._end_session(keep_up)

    def _end_session(self, keep_up: bool) -> None:
        from envkit.stack import lease

        try:
            stack_config = self.stack_config()
        except EnvkitError:
            return  # no stack file: no worker can have started a stack
        holder_id = lease.session_holder(os.getpid(), self.own_start_time(), "").id
        if not (stack_config.state_dir / lease.HOLDERS / f"{holder_id}.json").exists():
            return  # no worker needed the stack
        try:
            stack = self.stack()
            outcome, _ = stack.end_session(holder_id, keep=keep_up)
        except EnvkitError as err:
            self.summary.append(f"envkit: could not release the stack: {err}")
            return
        self._report(stack, stack.id, outcome, keep_up)

    def _report(self, stack: Stack, stack_id: str, outcome: Outcome, keep_up: bool) -> None:
        """After a failed run with --envkit-keep-on-failure: say where the stack that was kept
        up is, or why it was not kept (a failed service takes the stack down)."""
        from envkit.stack.idle import Outcome

        if not keep_up:
            return
        if outcome is Outcome.STOPPED:
            self.summary.append(
                f"envkit: the run failed, but stack {stack_id} was stopped all the same: "
                "a stack with a failed service is never kept"
            )
            return
        if outcome is Outcome.ABSENT:
            return
        self.summary.append(
            f"envkit: the run failed; stack {stack_id} is left up (--envkit-keep-on-failure):"
        )
        try:
            status = stack.status()
        except EnvkitError as err:
            self.summary.append(f"  (could not read its status: {err})")
            return
        for name, svc in status["services"].items():
            endpoints = ", ".join(f"{port} -> {address}" for port, address in svc["endpoints"].items())
            self.summary.append(f"  {name}: {svc['status']}" + (f"; {endpoints}" if endpoints else ""))
        self.summary.append(
            f"  logs: docker logs {stack_id}-SERVICE; status: envkit status; stop it: envkit down"
        )


class _TerminalProgress:
    """Notes (building, starting, healthy) on the terminal, past pytest's output capture.

    Builds and starts report from several threads; one lock keeps their lines whole.
    An xdist worker writes to its stderr, which is the controller's terminal, with its
    id in front; it leaves out "waiting for another process" (the other workers would
    each say it about every service).
    """

    _lock = threading.Lock()

    def __init__(self, config: pytest.Config) -> None:
        workerinput = getattr(config, "workerinput", None)
        self._worker = str(workerinput["workerid"]) if workerinput else None
        self._reporter = None if workerinput else config.pluginmanager.get_plugin("terminalreporter")
        self._capture = config.pluginmanager.get_plugin("capturemanager")

    def log(self, subject: str, line: str) -> None:
        pass  # a build's output goes into its error, if it fails

    def note(self, subject: str, message: str, state: State = State.INFO) -> None:
        if self._worker is not None and state is State.WAITING:
            return
        with self._lock:
            if self._capture is None:
                self._write(subject, message)
                return
            with self._capture.global_and_fixture_disabled():
                self._write(subject, message)

    def _write(self, image: str, message: str) -> None:
        if self._reporter is not None:
            self._reporter.write_line(f"envkit: {image}: {message}")
        else:
            sys.stderr.write(f"envkit [{self._worker}]: {image}: {message}\n")
            sys.stderr.flush()


_RUN = pytest.StashKey[_Run]()


def _run(config: pytest.Config) -> _Run:
    return config.stash[_RUN]
