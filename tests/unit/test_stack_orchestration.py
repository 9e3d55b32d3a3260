"""The shared stack's orchestration against an in-memory engine: acquire, join, release, failures.

Real files (state dir, holder files and their flocks), a fake Docker (tests/unit/fake_engine.py),
no reaper process: what the reaper would be asked to do is recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_engine import FakeDaemon

from envkit.config.find import load
from envkit.errors import (
    LockTimeout,
    ServiceUnhealthy,
    StackStopped,
    StateCorrupt,
    StateDirInUse,
    StateDirUnsafe,
)
from envkit.settings import Settings
from envkit.stack import reaper
from envkit.stack import stack as stack_module
from envkit.stack.idle import Outcome
from envkit.stack.stack import Stack
from envkit.stack.state import StackState, StateFile

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


# --- one state directory, one stack: down and status touch nothing of another stack ---------------


@pytest.fixture
def other(tmp_path: Path, fake: FakeDaemon) -> Stack:
    """Project "other", whose state directory is the ``stack`` fixture's (as ENVKIT_STATE_DIR would
    make it), on the same engine."""
    root = tmp_path / "other-project"
    root.mkdir()
    (root / "envkit.toml").write_text(STACK.replace('name = "demo"', 'name = "other"'))
    config = load(root, environ={"ENVKIT_STATE_DIR": str(tmp_path / ".envkit")})
    return Stack(config, fake, settings=Settings(lock_timeout=5.0, grace=3.0))  # type: ignore[arg-type]


def snapshot(state_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(state_dir)): p.read_bytes()
        for p in sorted(state_dir.rglob("*"))
        if p.is_file() and p.name not in ("lock", "lock.owner")
    }


@pytest.mark.parametrize("force", [False, True], ids=["down", "down --all"])
def test_down_in_a_state_dir_holding_another_running_stack_is_refused(
    stack: Stack, other: Stack, fake: FakeDaemon, force: bool
) -> None:
    assert other.state_dir == stack.state_dir and other.id != stack.id
    held = stack.acquire(["web"])
    stack.pin(None)  # an `envkit up` pin of the stack that runs: `down` elsewhere must not take it
    before, running = snapshot(stack.state_dir), fake.running()
    with pytest.raises(StateDirInUse) as caught:
        other.down(force=force)
    assert f"already holds stack {stack.id!r}" in str(caught.value) and "fix:" in str(caught.value)
    assert snapshot(stack.state_dir) == before  # its state, its holder and its pin
    assert fake.running() == running and "remove_container" not in fake.calls
    assert held.release(grace=0.0) is Outcome.HELD  # the pin still holds it


def test_status_in_a_state_dir_holding_another_running_stack_is_refused(stack: Stack, other: Stack) -> None:
    held = stack.acquire(["db"])
    with pytest.raises(StateDirInUse):
        other.status()
    held.release(grace=0.0)
    assert stack.down().removed == 0  # gone already
    # Once the other stack no longer runs, its leftovers are said, and not shown as this one's.
    StateFile(stack.state_dir).save(StackState(stack=stack.id, project="demo", root="/p"))
    info = other.status()
    assert "no longer runs" in info["state_error"] and info["holders"] == [] and not info["running"]


def test_status_does_not_read_a_state_dir_every_user_may_write_to(stack: Stack) -> None:
    stack.state_dir.mkdir()
    stack.state_dir.chmod(0o777)
    with pytest.raises(StateDirUnsafe, match="every user may write to it"):
        stack.status()


def test_status_is_not_running_when_every_container_has_exited(stack: Stack, fake: FakeDaemon) -> None:
    held = stack.acquire(["db"])
    assert stack.status()["running"] is True
    fake.stop(fake.running()["db"])
    info = stack.status()
    assert info["running"] is False and info["services"]["db"]["status"] == "exited"
    held.release(grace=0.0)


# --- a state file that is a directory --------------------------------------------------------------


def test_a_state_file_that_is_a_directory_is_state_corrupt_with_the_fix(
    stack: Stack, fake: FakeDaemon
) -> None:
    path = stack.state_dir / "state.json"
    path.mkdir(parents=True)
    with pytest.raises(StateCorrupt) as caught:
        stack.acquire(["db"])
    assert caught.value.path == path and f"rm -r {path}" in str(caught.value)
    with pytest.raises(StateCorrupt) as caught:
        stack.down(force=True)
    assert f"rm -r {path}" in str(caught.value)
    path.rmdir()  # as the fix says
    stack.acquire(["db"]).release(grace=0.0)
    assert fake.containers_by_id == {}


# --- down --all and the state lock's owner ---------------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from envkit.stack import lease
with lease.state_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@contextlib.contextmanager
def lock_owner(state_dir: Path, hold: float = 120.0) -> Iterator[subprocess.Popen[str]]:
    """A process holding the stack's state lock for ``hold`` seconds."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(state_dir), str(hold)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def quick_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_module, "FORCE_WAIT", 0.3)


def fast(stack: Stack, lock_timeout: float) -> Stack:
    return Stack(stack.config, stack.daemon, settings=Settings(lock_timeout=lock_timeout, grace=3.0))


@pytest.mark.usefixtures("quick_force")
def test_down_all_waits_for_a_running_lock_owner_then_fails_naming_it(stack: Stack, fake: FakeDaemon) -> None:
    held = stack.acquire(["db"])
    with lock_owner(stack.state_dir) as owner:
        started = time.monotonic()
        with pytest.raises(LockTimeout) as caught:
            fast(stack, 2.0).down(force=True)
        assert time.monotonic() - started >= 2.0  # the lock's timeout, not FORCE_WAIT
        assert f"pid {owner.pid}" in str(caught.value)
    assert set(fake.running()) == {"db"}  # nothing was stopped without the lock
    held.release(grace=0.0)


@pytest.mark.usefixtures("quick_force")
def test_down_all_takes_the_lock_that_a_running_owner_lets_go_of(stack: Stack, fake: FakeDaemon) -> None:
    stack.acquire(["db"])
    with lock_owner(stack.state_dir, hold=1.5):
        done = fast(stack, 30.0).down(force=True)
    assert done.removed == 1 and done.lock_owner is None  # with the lock: it waited
    assert fake.containers_by_id == {}


@pytest.mark.usefixtures("quick_force")
@pytest.mark.parametrize("how", ["stopped", "gone"])
def test_down_all_goes_ahead_without_the_lock_of_a_stopped_or_gone_owner(
    stack: Stack, fake: FakeDaemon, how: str
) -> None:
    stack.acquire(["db"])
    with lock_owner(stack.state_dir) as owner:
        if how == "stopped":
            os.kill(owner.pid, signal.SIGSTOP)
        else:  # the lock outlived the process that recorded itself as its owner
            gone = subprocess.Popen([sys.executable, "-c", "pass"])
            gone.wait()
            record = json.loads((stack.state_dir / "lock.owner").read_text())
            (stack.state_dir / "lock.owner").write_text(json.dumps({**record, "pid": gone.pid}))
        started = time.monotonic()
        done = fast(stack, 60.0).down(force=True)
        assert time.monotonic() - started < 10
    assert done.removed == 1 and done.lock_owner is not None and done.lock_owner.endswith(f"which is {how}")
    assert fake.containers_by_id == {}
