"""envkit's pytest plugin (envkit/pytest_plugin.py), run for real: inner pytest sessions.

Each test writes a few inner test modules into a throwaway project
(``stack_project``) and runs pytest on them in a subprocess (``pytester``),
from the project's root, so the plugin finds the project's envkit.toml the way
it would in a user's checkout; mostly with a real ``-n 4`` (pytest-xdist).
The project's stack has two services on the busybox image ``bb``: ``cache``
and ``db`` (busybox httpd on ports 8000 and 5432, each printing a marker line
to its log first), standing in for redis and postgres.

Containers are counted from the daemon's ``create`` events filtered by the
stack's label (other tests' stacks do not interfere). ENVKIT_GRACE is 0 in the
inner runs, so a stack that its last holder leaves goes at once: a stack that
the plugin let go of too early would be created again and be counted twice.
The inner conftest records, in pytest_unconfigure of the controller (or the
only process), which containers, networks and holder files are left: the
plugin tears the stack down at the session's end, and an exit hook or the
reaper doing it a moment later (as they would if it did not) does not pass.
The ``stack_project`` finalizer removes whatever a test leaves (and fails the
test if it left anything).

Covered: what starts is what the selected tests need, once for all workers,
gone at the session's end (1); a crashed worker (2); service logs in a
failing test's report (3); an unhealthy service stops the session (4); the
controller's session pin (5); --envkit-keep-on-failure and --envkit-ttl (6);
no xdist (7); -p no:envkit (8); envkit_worker_id (9); an unknown service in
a marker (10); --envkit-no-build (11); two regressions (see the comment
above them); a SIGKILLed run, controller and workers, is cleaned up by the reaper.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import textwrap
import time
import urllib.request
import uuid
from dataclasses import dataclass

import engine_client
import pytest

from envkit.docker import labels
from integration import events
from integration.stack_fixtures import StackProject

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.docker

RUN_TIMEOUT = 120.0  # seconds: a guard against a hanging inner session

SERVICES = """
[services.cache]
image = "bb"
ports = [8000]
command = ["sh", "-c", "echo envkit-marker-cache; exec httpd -f -p 8000 -h /etc"]
healthcheck = { http = "/hostname", port = 8000 }

[services.db]
image = "bb"
ports = [5432]
command = ["sh", "-c", "echo envkit-marker-db; exec httpd -f -p 5432 -h /etc"]
healthcheck = { http = "/hostname", port = 5432 }
"""

# A service whose container prints a line and exits: it never becomes healthy.
BROKEN = """
[services.broken]
image = "bb"
ports = [8000]
command = ["sh", "-c", "echo envkit-broken-line; exit 3"]
healthcheck = { http = "/hostname", port = 8000 }
start_timeout = 3
"""

# Shared by the inner test modules: GET /hostname from a service through the handle.
HELPERS = '''
import urllib.request


def use(stack, service="cache", port=None):
    """GET /hostname from the service through the stack's handle."""
    port = port or {"cache": 8000, "db": 5432}[service]
    with urllib.request.urlopen(stack.url(service, port) + "/hostname", timeout=10) as response:
        assert response.status == 200
        return response.read().decode().strip()
'''

# The inner sessions' conftest: where the stack stands once the session is over, after the
# plugin's pytest_sessionfinish and before the process exits (so before its atexit hooks run, and
# before a reaper could notice that the process is gone).
CONFTEST = """
import json
import os
from pathlib import Path

from engine_client import docker_api_client

HERE = Path(__file__).parent
LABEL = {label!r}


def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        return
    client = docker_api_client()
    holders = HERE / ".envkit" / "holders"
    state = {{
        "containers": sorted(c["Names"][0] for c in client.containers(all=True, filters={{"label": LABEL}})),
        "networks": sorted(n["Name"] for n in client.networks(filters={{"label": LABEL}})),
        "holders": sorted(n for n in os.listdir(holders) if n.endswith(".json")) if holders.is_dir() else [],
    }}
    (HERE / "after-session.json").write_text(json.dumps(state))
"""
NOTHING = {"containers": [], "networks": [], "holders": []}


@dataclass
class Run:
    """One inner session: pytester's result, its output, and the containers it created."""

    result: pytest.RunResult
    creates: collections.Counter[str]
    after: dict[str, list[str]] | None  # containers, networks and holder files at the session's end

    @property
    def output(self) -> str:
        return "\n".join(self.result.outlines + self.result.errlines)

    @property
    def ret(self) -> int:
        return int(self.result.ret)


@dataclass
class Inner:
    """Inner test modules in the stack project's root, and pytest runs over them."""

    sp: StackProject
    pytester: pytest.Pytester

    def write(self, name: str, text: str) -> None:
        (self.sp.root / name).write_text(textwrap.dedent(text))

    def run(self, *args: str, timeout: float = RUN_TIMEOUT) -> Run:
        after = self.sp.root / "after-session.json"
        after.unlink(missing_ok=True)
        since = time.time()
        result = self.pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)
        return Run(
            result=result,
            creates=creates(self.sp, since, time.time()),
            after=json.loads(after.read_text()) if after.exists() else None,
        )

    def holder_files(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.sp.state_dir / "holders") if n.endswith(".json"))
        except FileNotFoundError:
            return []

    def wait_gone(self, timeout: float = 5.0) -> None:
        """The stack's containers and network go within a few seconds of the session's end."""
        self.sp.wait_until(self.sp.gone, timeout, f"stack {self.sp.stack_id} torn down after the session")

    def running(self) -> list[str]:
        """Services of this stack whose container runs."""
        return sorted(c["Labels"][labels.SERVICE] for c in self.sp.containers() if c["State"] == "running")


def creates(sp: StackProject, since: float, until: float) -> collections.Counter[str]:
    """Containers of this stack created between ``since`` and ``until``, counted per service."""
    creates = events.log().between(since, until, action="create", label=sp.label)
    return collections.Counter(str(event["Actor"]["Attributes"].get(labels.SERVICE)) for event in creates)


@pytest.fixture
def inner(stack_project: StackProject, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Inner:
    """Inner sessions run from the stack project's root: its envkit.toml, a pytest.ini, a conftest."""
    sp = stack_project
    sp.write_stack(SERVICES)
    (sp.root / "pytest.ini").write_text("[pytest]\n")
    (sp.root / "inner_helpers.py").write_text(HELPERS)
    shutil.copyfile(engine_client.FILE, sp.root / "engine_client.py")  # the tests' docker-py client
    (sp.root / "conftest.py").write_text(CONFTEST.format(label=sp.label))
    monkeypatch.chdir(sp.root)
    # The outer session may itself run under xdist: its worker's variables are not the inner run's.
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENVKIT_GRACE", "0")
    return Inner(sp=sp, pytester=pytester)


# --- 1: what starts is what the selected tests need ----------------------------------------------

THREE_MODULES = {
    "test_r.py": """
        import pytest
        from inner_helpers import use

        pytestmark = pytest.mark.services("cache")

        @pytest.mark.parametrize("i", range(4))
        def test_cache(envkit_stack, i):
            use(envkit_stack, "cache")
        """,
    "test_p.py": """
        import pytest
        from inner_helpers import use

        pytestmark = pytest.mark.services("db")

        @pytest.mark.parametrize("i", range(4))
        def test_db(envkit_stack, i):
            use(envkit_stack, "db")
        """,
    "test_n.py": """
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_nothing(i):
            assert i >= 0
        """,
}


def test_a_run_whose_tests_need_no_service_starts_nothing(inner: Inner) -> None:
    for name, text in THREE_MODULES.items():
        inner.write(name, text)
    run = inner.run("-n", "4", "test_n.py")
    assert run.ret == 0, run.output
    run.result.assert_outcomes(passed=4)
    assert run.creates == {}
    assert run.after == NOTHING, run.after
    assert inner.holder_files() == []
    assert inner.sp.reapers() == []
    assert inner.sp.gone()


def test_each_service_starts_once_for_all_workers_and_goes_at_the_session_end(inner: Inner) -> None:
    for name, text in THREE_MODULES.items():
        inner.write(name, text)
    run = inner.run("-n", "4", "test_r.py", "test_p.py", "test_n.py")
    assert run.ret == 0, run.output
    run.result.assert_outcomes(passed=12)
    assert run.creates == {"cache": 1, "db": 1}
    assert run.after == NOTHING, run.after  # torn down at the session's end
    inner.wait_gone()
    assert inner.holder_files() == []
    # progress: the worker that started each service says so on the terminal (its stderr)
    for service in ("cache", "db"):
        started = re.findall(rf"envkit \[gw\d\]: {service}: healthy in [\d.]+s", run.output)
        assert len(started) == 1, run.output


# --- 2: a worker that dies mid-run -------------------------------------------------------------

CRASH = """
    import os
    import time
    from pathlib import Path

    import pytest
    from inner_helpers import use

    pytestmark = pytest.mark.services("cache")
    MARKS = Path(__file__).with_name("marks")

    # The first test of its worker (the first collected): it uses the stack, then its worker dies.
    def test_crash(envkit_stack):
        use(envkit_stack)
        MARKS.mkdir(exist_ok=True)
        (MARKS / "crashed").write_text(repr(time.time()))
        os._exit(1)

    # Each uses the stack once the worker has died (on the surviving workers and the replacement).
    @pytest.mark.parametrize("i", range(8))
    def test_after_the_crash(envkit_stack, i):
        deadline = time.monotonic() + 60
        while not (MARKS / "crashed").exists():
            assert time.monotonic() < deadline, "test_crash never ran"
            time.sleep(0.05)
        time.sleep(0.2)
        use(envkit_stack)
        (MARKS / f"used-{i}").write_text(repr(time.time()))
"""


def test_a_crashed_worker_neither_stops_nor_restarts_the_stack_and_nothing_is_left(inner: Inner) -> None:
    inner.write("test_crash.py", CRASH)
    run = inner.run("-n", "4", "--max-worker-restart=4", "test_crash.py")
    assert run.ret == 1, run.output
    run.result.assert_outcomes(passed=8, failed=1)
    assert re.search(r"worker 'gw\d+' crashed while running 'test_crash.py::test_crash'", run.output)
    crashed = float((inner.sp.root / "marks" / "crashed").read_text())
    used = [float((inner.sp.root / "marks" / f"used-{i}").read_text()) for i in range(8)]
    assert min(used) > crashed
    assert run.creates == {"cache": 1}
    assert run.after == NOTHING, run.after  # torn down at the session's end
    inner.wait_gone()
    assert inner.holder_files() == []


# --- 3: a failing test's report carries its services' logs -------------------------------------

LOGS = """
    import pytest
    from inner_helpers import use

    pytestmark = pytest.mark.services("cache")

    def test_passes(envkit_stack):
        use(envkit_stack)

    def test_fails(envkit_stack):
        use(envkit_stack)
        assert False, "the failing test"

    def test_fails_without_the_stack():
        assert False, "no stack here"
"""


def test_a_failing_test_that_used_the_stack_shows_its_services_log(inner: Inner) -> None:
    inner.write("test_logs.py", LOGS)
    run = inner.run("-n", "2", "-rP", "test_logs.py")  # -rP: passing tests' sections are shown too
    assert run.ret == 1, run.output
    run.result.assert_outcomes(passed=1, failed=2)
    # One section, in test_fails's report: not in the passing test's, nor in the one without the stack.
    header = "envkit: cache log (last 20 lines)"
    assert run.output.count(header) == 1, run.output
    failure = run.output.split(" test_fails ")[1].split(" test_fails_without_the_stack ")[0]
    assert re.search(rf"-+ {re.escape(header)} -+\n(.*\n)*envkit-marker-cache\n", failure), failure
    assert "envkit: db log" not in run.output
    assert run.creates == {"cache": 1}  # db: no selected test needs it
    assert run.after == NOTHING, run.after  # torn down at the session's end
    inner.wait_gone()


# --- 4: a service that never becomes healthy ends the session ----------------------------------

UNHEALTHY = """
    import pytest

    @pytest.mark.services("broken")
    @pytest.mark.parametrize("i", range(6))
    def test_stack(envkit_stack, i):
        pass

    @pytest.mark.parametrize("i", range(4))
    def test_plain(i):
        pass
"""


def test_an_unhealthy_service_stops_the_session_with_its_log(inner: Inner) -> None:
    inner.sp.write_stack(SERVICES + BROKEN)
    inner.write("test_unhealthy.py", UNHEALTHY)
    run = inner.run("-n", "2", "test_unhealthy.py")
    assert run.ret not in (0, 1), run.output  # interrupted: not a run whose tests merely failed
    assert "Interrupted: envkit: the stack could not be started: ServiceUnhealthy" in run.output
    assert "service 'broken' did not become healthy: its container stopped (exit code 3)" in run.output
    assert "envkit-broken-line" in run.output
    outcomes = run.result.parseoutcomes()
    # The stack tests that ran errored, at most one per worker: each worker stopped at its first,
    # and no test waited for the service again.
    assert 1 <= outcomes.get("errors", 0) <= 2, outcomes
    assert outcomes.get("failed", 0) == 0, outcomes
    assert outcomes.get("passed", 0) <= 4, outcomes
    assert run.after == NOTHING, run.after  # torn down at the session's end
    inner.wait_gone()
    assert inner.holder_files() == []


# --- 5: the controller's session pin -----------------------------------------------------------

# --dist loadfile: each module runs on one worker. (--dist loadgroup would do, but pytest-xdist 3.8's
# loadgroup does not group under pytest 9.2: it sets item._nodeid, which pytest no longer reads.)
PIN_EARLY = """
    import os
    from pathlib import Path

    import pytest
    from inner_helpers import use

    pytestmark = pytest.mark.services("cache")

    # Its worker has nothing else to do: it leaves as soon as this test is done.
    def test_early(envkit_stack):
        use(envkit_stack)
        Path(__file__).with_name("early.pid").write_text(str(os.getpid()))
"""

PIN_LATE = """
    import json
    import os
    import time
    from pathlib import Path

    import pytest
    from inner_helpers import use

    pytestmark = pytest.mark.services("cache")
    HERE = Path(__file__).parent

    # Whether process ``pid`` has a holder file of its own (it holds the stack).
    def holds(pid):
        for path in (HERE / ".envkit" / "holders").glob("*.json"):
            try:
                if json.loads(path.read_text()).get("pid") == pid:
                    return True
            except (OSError, ValueError):
                continue
        return False

    def test_late_1_waits_until_the_early_worker_has_let_go():
        deadline = time.monotonic() + 60
        while not (HERE / "early.pid").exists():
            assert time.monotonic() < deadline, "test_early never ran"
            time.sleep(0.05)
        early = int((HERE / "early.pid").read_text())
        assert early != os.getpid()
        while holds(early):
            assert time.monotonic() < deadline, f"the early worker {early} still holds the stack"
            time.sleep(0.05)
        print(f"early worker {early} let go; this is {os.getpid()}")

    def test_late_2_uses_the_stack(envkit_stack):
        use(envkit_stack)
        holders = sorted(os.listdir(HERE / ".envkit" / "holders"))
        print("holder files:", holders)
        pins = [n for n in holders if n.startswith(f"session-{os.getppid()}-") and n.endswith(".json")]
        assert pins, f"no session pin of the controller (pid {os.getppid()}) among {holders}"
        print("session pin:", pins[0])
"""


def test_the_controller_pin_keeps_the_stack_up_after_an_early_worker_leaves(inner: Inner) -> None:
    inner.write("test_early.py", PIN_EARLY)
    inner.write("test_late.py", PIN_LATE)
    run = inner.run("-n", "4", "--dist", "loadfile", "-rP", "test_early.py", "test_late.py")
    assert run.ret == 0, run.output
    run.result.assert_outcomes(passed=3)
    early = re.search(r"early worker (\d+) let go; this is (\d+)", run.output)
    assert early, run.output
    assert early[1] != early[2]
    assert re.search(r"session pin: session-\d+-\d+\.json", run.output), run.output
    assert run.creates == {"cache": 1}  # never recreated after the early worker left
    assert run.after == NOTHING, run.after  # torn down at the session's end
    inner.wait_gone()
    assert inner.holder_files() == []


# --- 6: --envkit-keep-on-failure, --envkit-ttl ---------------------------------------------------

KEEP = """
    import pytest
    from inner_helpers import use

    pytestmark = pytest.mark.services("cache")

    def test_passes(envkit_stack):
        use(envkit_stack)

    def test_fails(envkit_stack):
        use(envkit_stack)
        assert False, "the failing test"
"""


def test_keep_on_failure_leaves_a_failed_runs_stack_up_and_says_where(inner: Inner) -> None:
    inner.write("test_keep.py", KEEP)
    run = inner.run("-n", "2", "--envkit-keep-on-failure", "test_keep.py")
    assert run.ret == 1, run.output
    run.result.assert_outcomes(passed=1, failed=1)
    assert run.creates == {"cache": 1}
    assert f"stack {inner.sp.stack_id} is left up (--envkit-keep-on-failure)" in run.output, run.output
    found = re.search(r"cache: healthy; 8000 -> 127\.0\.0\.1:(\d+)", run.output)
    assert found, run.output
    assert run.after is not None and len(run.after["containers"]) == 1, run.after
    time.sleep(1.0)  # not a delayed teardown either
    assert inner.running() == ["cache"]
    # The endpoint printed is where the service answers.
    with urllib.request.urlopen(f"http://127.0.0.1:{found[1]}/hostname", timeout=10) as response:
        assert response.status == 200
    down = inner.sp.cli("down")
    assert down.returncode == 0, down.stderr
    inner.wait_gone()


KEEP_FAILED = """
    import pytest
    import envkit
    from inner_helpers import use

    pytestmark = pytest.mark.services("cache")

    def test_a_second_holder_fails_to_start_broken(envkit_stack):
        use(envkit_stack)
        with pytest.raises(envkit.ServiceUnhealthy):
            envkit.acquire(services=["broken"])

    def test_fails(envkit_stack):
        assert False, "the failing test"
"""


@pytest.mark.parametrize("workers", [["-n", "2"], ["-p", "no:xdist"]])
def test_keep_on_failure_does_not_claim_to_keep_a_stack_whose_service_failed(
    inner: Inner, workers: list[str]
) -> None:
    """A stack with a failed service is torn down whatever keep says: the run says so."""
    inner.sp.write_stack(SERVICES + BROKEN)
    inner.write("test_keep_failed.py", KEEP_FAILED)
    run = inner.run(*workers, "--envkit-keep-on-failure", "test_keep_failed.py")
    run.result.assert_outcomes(passed=1, failed=1)
    assert "is left up" not in run.output, run.output
    assert f"stack {inner.sp.stack_id} was stopped all the same" in run.output, run.output
    assert run.after == NOTHING, run.after
    inner.wait_gone()


def test_ttl_keeps_the_stack_up_for_the_next_run_which_attaches(inner: Inner) -> None:
    inner.write("test_keep.py", KEEP)
    first = inner.run("-n", "2", "--envkit-ttl", "30", "test_keep.py::test_passes")
    assert first.ret == 0, first.output
    assert first.creates == {"cache": 1}
    assert first.after is not None and len(first.after["containers"]) == 1, first.after
    time.sleep(1.0)  # not a delayed teardown either
    assert inner.running() == ["cache"]
    second = inner.run("-n", "2", "test_keep.py::test_passes")
    assert second.ret == 0, second.output
    assert second.creates == {}  # it attached to the stack the first run left up
    down = inner.sp.cli("down")
    assert down.returncode == 0, down.stderr
    inner.wait_gone()


# --- 7, 9: without xdist; envkit_worker_id -------------------------------------------------------

LAZY = """
    from pathlib import Path

    import pytest
    from inner_helpers import use

    from engine_client import docker_api_client

    pytestmark = pytest.mark.services("cache")

    # Collected first, so it runs first: the session has started nothing yet.
    def test_a_runs_before_anything_started():
        client = docker_api_client()
        assert client.containers(all=True, filters={{"label": "{label}"}}) == []
        holders = Path(".envkit", "holders")
        assert not holders.exists() or not list(holders.iterdir())

    def test_b_uses_the_stack(envkit_stack, envkit_worker_id):
        use(envkit_stack)
        assert envkit_worker_id == "main"
"""


def test_without_xdist_the_process_acquires_lazily_and_tears_down_at_the_end(inner: Inner) -> None:
    inner.write("test_lazy.py", LAZY.format(label=inner.sp.label))
    run = inner.run("test_lazy.py")
    assert run.ret == 0, run.output
    run.result.assert_outcomes(passed=2)
    assert run.creates == {"cache": 1}
    assert run.after == NOTHING, run.after  # torn down at the session's end
    inner.wait_gone()
    assert inner.holder_files() == []


WORKER_IDS = """
    import os
    from pathlib import Path

    import pytest

    @pytest.mark.parametrize("i", range(8))
    def test_worker_id(envkit_worker_id, i):
        assert envkit_worker_id == os.environ.get("PYTEST_XDIST_WORKER", "main")
        out = Path(__file__).with_name("ids")
        out.mkdir(exist_ok=True)
        (out / str(i)).write_text(envkit_worker_id)
"""


def test_envkit_worker_id_is_the_xdist_worker_or_main(inner: Inner) -> None:
    inner.write("test_ids.py", WORKER_IDS)
    ids = inner.sp.root / "ids"

    run = inner.run("-n", "4", "test_ids.py")
    assert run.ret == 0, run.output
    seen = {p.read_text() for p in ids.iterdir()}
    assert len(list(ids.iterdir())) == 8
    assert seen <= {"gw0", "gw1", "gw2", "gw3"}, seen
    assert len(seen) >= 2, seen

    for p in ids.iterdir():
        p.unlink()
    run = inner.run("test_ids.py")
    assert run.ret == 0, run.output
    assert {p.read_text() for p in ids.iterdir()} == {"main"}
    assert inner.holder_files() == []


# --- 8: -p no:envkit -----------------------------------------------------------------------------


def test_p_no_envkit_turns_the_plugin_off(inner: Inner) -> None:
    inner.write(
        "test_off.py",
        """
        def test_uses_the_stack(envkit_stack):
            pass
        """,
    )
    run = inner.run("-p", "no:envkit", "test_off.py")
    assert run.ret == 1, run.output
    run.result.assert_outcomes(errors=1)
    assert "fixture 'envkit_stack' not found" in run.output
    assert run.creates == {}


# --- 10, 11: clear errors that start nothing -----------------------------------------------------

UNKNOWN = """
    import pytest
    from inner_helpers import use

    @pytest.mark.services("nosuch")
    def test_unknown(envkit_stack):
        pass

    @pytest.mark.services("cache")
    def test_known(envkit_stack):
        use(envkit_stack)
"""


def test_a_marker_naming_an_unknown_service_is_a_clear_error_and_starts_nothing(inner: Inner) -> None:
    inner.write("test_unknown.py", UNKNOWN)
    run = inner.run("-n", "2", "test_unknown.py")
    assert run.ret != 0, run.output
    outcomes = run.result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 1 and "passed" not in outcomes, outcomes
    assert (
        "test_unknown.py::test_unknown: @pytest.mark.services('nosuch') names no service of "
        f"{inner.sp.root / 'envkit.toml'} (it has: cache, db)"
    ) in run.output, run.output
    assert "Traceback" not in run.output
    assert "pytest_plugin.py" not in run.output  # no frames of the plugin
    assert run.creates == {}
    assert run.after == NOTHING, run.after
    assert inner.sp.gone()
    assert inner.holder_files() == []


def test_no_build_with_an_unbuilt_image_fails_clearly_and_starts_nothing(inner: Inner) -> None:
    sp = inner.sp
    # An image no one has built: its Dockerfile is new.
    sp.project.write("images/fresh/Dockerfile", f"FROM {sp.project.base}\nENV NONCE={uuid.uuid4().hex}\n")
    fresh = '\n[services.fresh]\nimage = "fresh"\nports = [8000]\ncommand = ["httpd", "-f", "-p", "8000"]\n'
    sp.write_stack(SERVICES + fresh, extra_images="\n[images.fresh]\n")
    inner.write(
        "test_fresh.py",
        """
        import pytest

        @pytest.mark.services("fresh")
        def test_fresh(envkit_stack):
            pass
        """,
    )
    run = inner.run("-n", "2", "--envkit-no-build", "test_fresh.py")
    assert run.ret != 0, run.output
    run.result.assert_outcomes(errors=1)
    assert "image fresh is not built" in run.output, run.output
    assert "drop --envkit-no-build" in run.output
    assert "Traceback" not in run.output
    assert run.creates == {}
    assert run.after == NOTHING, run.after
    assert sp.gone()
    assert inner.holder_files() == []


# --- regressions: a stack that cannot start is reported once (pytest.fail outside the `except`,
# not as an exception chain showing the service's log twice); a marked test that asks for the stack
# with request.getfixturevalue() counts towards what starts.


def test_a_stack_that_cannot_start_is_reported_once_not_as_a_chain_of_exceptions(inner: Inner) -> None:
    inner.write("test_unknown.py", UNKNOWN)
    run = inner.run("test_unknown.py::test_unknown")
    run.result.assert_outcomes(errors=1)
    assert "names no service" in run.output, run.output
    # The short summary repeats the message; whether it is cut to one line depends on the terminal
    # and on $CI (pytest never cuts it on CI), so count in the error report above it.
    report = run.output.split("short test summary info")[0]
    assert report.count("fix: name a service declared under [services]") == 1, run.output
    assert "During handling of the above exception, another exception occurred" not in run.output


DYNAMIC = """
    import pytest
    from inner_helpers import use

    @pytest.mark.services("cache")
    def test_dynamic(request):
        use(request.getfixturevalue("envkit_stack"))
"""


def test_a_test_that_requests_the_stack_dynamically_gets_its_services(inner: Inner) -> None:
    inner.write("test_dynamic.py", DYNAMIC)
    run = inner.run("test_dynamic.py")
    assert run.ret == 0, run.output
    assert run.creates == {"cache": 1}
    assert run.after == NOTHING, run.after  # torn down at the session's end
    inner.wait_gone()


SLOW = """
    import time

    import pytest
    from inner_helpers import use

    @pytest.mark.services("cache")
    def test_holds(envkit_stack):
        use(envkit_stack)
        time.sleep(120)
"""


def test_a_killed_run_controller_and_workers_is_cleaned_up_by_the_reaper(inner: Inner) -> None:
    """kill -9 of the whole inner session: the session pin dies with the controller's pid, the
    workers' holders with their flocks, and the reaper removes the stack."""
    import signal
    import subprocess
    import sys

    sp = inner.sp
    inner.write("test_slow.py", SLOW)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "test_slow.py"],
        cwd=sp.root,
        env={**os.environ, "ENVKIT_GRACE": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        sp.wait_until(lambda: inner.running() == ["cache"], 60, "the inner run started cache")
        sessions = [n for n in inner.holder_files() if n.startswith(f"session-{proc.pid}-")]
        assert sessions, inner.holder_files()  # the controller's pin, registered by its worker
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    sp.wait_until(sp.gone, 20, "the reaper removed the stack of a SIGKILLed run")
    sp.wait_until(lambda: not inner.holder_files(), 10, "the dead holders' files were pruned")


LOCK_AT_THE_END = """
    import subprocess
    import sys
    import time
    from pathlib import Path

    import pytest
    from inner_helpers import use

    HOLD_LOCK = (
        "import sys, time\\n"
        "from pathlib import Path\\n"
        "from envkit.stack.lease import state_lock\\n"
        "with state_lock(Path(sys.argv[1])):\\n"
        "    print('locked', flush=True)\\n"
        "    time.sleep(4)\\n"
    )

    @pytest.mark.services("cache")
    def test_then_the_lock_is_taken(envkit_stack):
        use(envkit_stack)
        # Another process holds the state lock past this session's end (ENVKIT_LOCK_TIMEOUT=1).
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(Path.cwd() / ".envkit")], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "locked"
"""


def test_a_release_that_cannot_take_the_lock_is_reported_and_the_reaper_cleans_up(
    inner: Inner, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = inner.sp
    monkeypatch.setenv("ENVKIT_LOCK_TIMEOUT", "1")
    inner.write("test_lock.py", LOCK_AT_THE_END)
    run = inner.run("test_lock.py")
    assert run.ret == 0, run.output  # the session's result stands
    assert "envkit: could not release the stack" in run.output, run.output
    assert "LockTimeout" not in run.output and "INTERNALERROR" not in run.output, run.output
    # the holder file went with the failed release; once the lock is free, the reaper removes the stack
    sp.wait_until(sp.gone, 20, "the reaper removed the stack after the lock was given back")
    assert inner.holder_files() == []
