"""The shared stack's orchestration against an in-memory engine: acquire, join, release, failures.

Real files (state dir, holder files and their flocks), a fake Docker (tests/unit/fake_engine.py),
no reaper process: what the reaper would be asked to do is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_engine import FakeDaemon

from envkit.config.find import load
from envkit.errors import ServiceUnhealthy, StackStopped, StateCorrupt
from envkit.settings import Settings
from envkit.stack import reaper
from envkit.stack.idle import Outcome
from envkit.stack.stack import Stack
from envkit.stack.state import StateFile

STACK = """
[stack]
name = "demo"

[services.db]
image = "postgres:16"
ports = [5432]

[services.web]
image = "nginx:1"
ports = [80]
depends_on = ["db"]

[services.bad]
image = "broken:1"
"""


@pytest.fixture
def reapers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    spawned: list[str] = []
    monkeypatch.setattr(reaper, "running", lambda state_dir: bool(spawned))

    def spawn(state_dir: Path, stack_id: str, endpoint: object) -> bool:
        if spawned:
            return False  # one runs: its lock is taken
        spawned.append(stack_id)
        return True

    monkeypatch.setattr(reaper, "spawn", spawn)
    yield spawned


@pytest.fixture
def fake() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
def stack(tmp_path: Path, fake: FakeDaemon, reapers: list[str]) -> Stack:
    (tmp_path / "envkit.toml").write_text(STACK)
    config = load(tmp_path, environ={})

    def start(cid: str) -> None:  # the "bad" service's container exits at once
        c = fake.containers_by_id[cid]
        if c.spec.image == "broken:1":
            c.running, c.status = False, "Exited (1)"

    fake.on_start = start
    return Stack(config, fake, settings=Settings(lock_timeout=5.0, grace=3.0))  # type: ignore[arg-type]


def test_a_cold_acquire_starts_the_services_and_a_reaper(
    stack: Stack, fake: FakeDaemon, reapers: list[str]
) -> None:
    held = stack.acquire(["web"])
    assert set(fake.running()) == {"db", "web"}
    assert fake.calls.count("create_network") == 1
    assert reapers == [stack.id]
    assert set(held.handle.ports) == {"db", "web"}
    state = StateFile(stack.state_dir).read()
    assert state is not None and {s.status for s in state.services.values()} == {"healthy"}
    assert held.release() is Outcome.IDLE  # the grace keeps it up for a late joiner
    assert set(fake.running()) == {"db", "web"}


def test_a_joiner_creates_nothing(stack: Stack, fake: FakeDaemon) -> None:
    first = stack.acquire(["web"])
    fake.calls.clear()
    second = stack.acquire(["web"])
    assert "create_container" not in fake.calls and "create_network" not in fake.calls
    assert second.handle == first.handle
    assert second.release() is Outcome.HELD
    assert first.release() is Outcome.IDLE


def test_the_last_holder_with_no_grace_stops_the_stack(stack: Stack, fake: FakeDaemon) -> None:
    held = stack.acquire(["db"])
    assert held.release(grace=0.0) is Outcome.STOPPED
    assert fake.containers_by_id == {} and fake.networks_by_id == {}
    assert StateFile(stack.state_dir).read() is None


def test_keep_is_reported_as_kept(stack: Stack, fake: FakeDaemon) -> None:
    held = stack.acquire(["db"])
    assert held.release(grace=0.0, keep=True) is Outcome.KEPT
    assert set(fake.running()) == {"db"}


def test_a_stack_with_a_failed_service_is_not_kept_and_release_says_so(
    stack: Stack, fake: FakeDaemon
) -> None:
    held = stack.acquire(["db"])
    with pytest.raises(ServiceUnhealthy) as caught:
        stack.acquire(["bad"])
    assert "stopped" in caught.value.reason
    assert held.release(grace=0.0, keep=True) is Outcome.STOPPED  # not "kept": it went
    assert fake.containers_by_id == {}


def test_a_stopped_container_is_replaced_by_the_next_acquire(stack: Stack, fake: FakeDaemon) -> None:
    held = stack.acquire(["db"])
    before = fake.running()["db"]
    fake.stop(before)
    held.release()
    again = stack.acquire(["db"])
    after = fake.running()["db"]
    assert after != before and before not in fake.containers_by_id
    again.release()


def test_a_corrupt_state_file_during_a_start_is_not_called_a_stop(stack: Stack, fake: FakeDaemon) -> None:
    """A state file that cannot be read is StateCorrupt, which names the file; it is not the
    stack having been stopped by `envkit down --all`."""
    state_file = StateFile(stack.state_dir)
    fake.on_start = lambda cid: state_file.path.write_text('{"schema": 1, "stack": 7}')
    with pytest.raises(StateCorrupt) as caught:
        stack.acquire(["db"])
    assert not isinstance(caught.value, StackStopped)
    assert str(state_file.path) in str(caught.value) and "corrupt" in str(caught.value)


def test_a_state_file_removed_during_a_start_is_a_stop(stack: Stack, fake: FakeDaemon) -> None:
    state_file = StateFile(stack.state_dir)
    fake.on_start = lambda cid: state_file.path.unlink()
    with pytest.raises(StackStopped):
        stack.acquire(["db"])
    assert fake.containers_by_id == {}  # the container it had just made is not left behind


def test_down_all_stops_it_under_holders(stack: Stack, fake: FakeDaemon) -> None:
    held = stack.acquire(["web"])
    done = stack.down(force=True)
    assert done.removed == 2 and len(done.holders) == 1 and done.lock_owner is None
    assert fake.containers_by_id == {}
    assert held.release() is Outcome.ABSENT


def test_calls_under_the_lock_are_bounded_below_the_lock_timeout(
    tmp_path: Path, fake: FakeDaemon, reapers: list[str]
) -> None:
    """Under the lock every engine call waits at most half the lock's timeout; the starts made
    without the lock keep the engine's own bound."""
    (tmp_path / "envkit.toml").write_text(STACK)
    stack = Stack(load(tmp_path, environ={}), fake, settings=Settings(lock_timeout=10.0))  # type: ignore[arg-type]
    stack.acquire(["db"]).release(grace=0.0)
    bounds: dict[str, set[float | None]] = {}
    for name, bound in fake.bounds:
        bounds.setdefault(name, set()).add(bound)
    assert 5.0 in bounds["containers"]  # the look at the stack's containers, under the lock
    assert bounds["create_network"] == {5.0}
    assert bounds["remove_container"] == bounds["remove_network"] == {5.0}  # the teardown
    assert bounds["create_container"] == bounds["start_container"] == {None}
    assert fake.timeout == 60.0


def test_a_release_that_fails_at_exit_is_reported() -> None:
    """At exit there is no one to raise to: the failure is said on stderr, not swallowed."""
    import subprocess
    import sys

    script = (
        "from envkit.errors import LockTimeout\n"
        "from envkit.stack import stack\n"
        "from envkit.stack.handle import StackHandle\n"
        "class Stuck:\n"
        "    def release(self, registration, **options):\n"
        "        raise LockTimeout('/p/.envkit/lock', 120, 'pid 4242 (pytest)')\n"
        "stack._install_exit_hooks()\n"
        "stack.Lease(Stuck(), None, StackHandle('demo-1234abcd', {}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert (
        "envkit: could not release stack demo-1234abcd at exit: waited 120s for the stack lock" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
