"""The reaper's loop and its shadow, in process: a fake engine, real files and locks (the fault
tier kills the real processes: tests/faults/test_reaper.py).

- A shadow that cannot be started does not stop the look at the stack.
- A shadow takes the place of a reaper that was killed, never of one that finished its work or
  gave up: a fresh reaper would defeat the reaper's one-hour give-up.
- A state file that no retry can remove (a directory in its place) is said with its fix, once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_engine import FakeDaemon

from envkit.errors import DockerUnavailable
from envkit.settings import Settings
from envkit.stack import reaper
from envkit.stack.objects import StackObjects
from envkit.stack.reaper import Reaper, Retry
from envkit.stack.state import StackState, StateFile

STACK = "demo-1234abcd"


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper, "POLL", 0.0)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    StateFile(tmp_path).save(StackState(stack=STACK, project="demo", root="/p"))
    return tmp_path


def new_reaper(state_dir: Path, fake: FakeDaemon | None = None) -> Reaper:
    held = reaper._take(state_dir / reaper.LOCK_FILE, None)
    assert held is not None
    found = Reaper(state_dir, STACK, Settings(lock_timeout=5.0, grace=0.0), held)
    found._objects = StackObjects(fake or FakeDaemon(), STACK)  # type: ignore[arg-type]
    return found


@contextlib.contextmanager
def shadow_lock(state_dir: Path) -> Iterator[int]:
    fd = reaper._take(state_dir / reaper.SHADOW_LOCK_FILE, None)
    assert fd is not None
    try:
        yield fd
    finally:
        with contextlib.suppress(OSError):  # the shadow closes it when it takes the reaper's place
            os.close(fd)


def test_a_shadow_that_cannot_start_does_not_stop_the_look_at_the_stack(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []
    found = new_reaper(state_dir)

    def keep_shadow() -> None:
        calls.append("keep_shadow")
        if calls.count("keep_shadow") == 1:
            raise OSError(24, "Too many open files")

    def step() -> bool:
        calls.append("step")
        return True

    found.keep_shadow = keep_shadow  # type: ignore[method-assign]
    found.step = step  # type: ignore[method-assign]
    assert reaper._reap(found) == 0
    assert calls == ["keep_shadow", "step"]  # the first look happened all the same
    assert (
        "cannot start a shadow (will retry): OSError: [Errno 24] Too many open files"
        in capsys.readouterr().out
    )


def test_a_shadow_takes_the_place_of_a_reaper_that_was_killed(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with shadow_lock(state_dir) as fd:
        taken = reaper._shadow(state_dir, STACK, fd)  # nobody holds the reaper lock
        assert taken is not None
        os.close(taken)
    assert "is gone: taking its place" in capsys.readouterr().out


def test_a_shadow_does_not_take_the_place_of_a_reaper_that_finished(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reaper finishes between the shadow's look at the state and its try for the lock: it
    removed the stack's state, then let go of its lock. The shadow must not take over then."""
    take: Callable[[Path, int | None], int | None] = reaper._take

    def finishing_take(path: Path, given: int | None) -> int | None:
        if path.name == reaper.LOCK_FILE:
            StateFile(state_dir).remove()  # what a reaper does last: the stack is gone
        return take(path, given)

    monkeypatch.setattr(reaper, "_take", finishing_take)
    with shadow_lock(state_dir) as fd:
        assert reaper._shadow(state_dir, STACK, fd) is None
    assert "taking its place" not in capsys.readouterr().out


def test_a_reaper_that_gives_up_takes_its_shadow_with_it(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = new_reaper(state_dir)
    found.keep_shadow = lambda: None  # type: ignore[method-assign]

    def step() -> bool:
        raise DockerUnavailable("connection refused")

    found.step = step  # type: ignore[method-assign]
    assert reaper._reap(found, Retry(give_up=0.0)) == 1
    assert found.lock_fd is not None
    os.close(found.lock_fd)  # the reaper's process exits: its lock goes
    assert "giving up after 0 minutes of failures" in capsys.readouterr().out
    with shadow_lock(state_dir) as fd:
        assert reaper._shadow(state_dir, STACK, fd) is None  # the stack is still there, and yet
    out = capsys.readouterr().out
    assert "gave up: so does its shadow" in out and "taking its place" not in out


def test_a_state_file_no_retry_can_remove_is_said_once_with_its_fix(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory where state.json should be: the stack's containers go, then the reaper says
    what to do and gives up, instead of failing for an hour."""
    fake = FakeDaemon()
    fake.add("db", STACK)
    path = state_dir / "state.json"
    path.unlink()
    path.mkdir()
    found = new_reaper(state_dir, fake)
    found.keep_shadow = lambda: None  # type: ignore[method-assign]
    clock = iter(range(10_000))
    assert reaper._reap(found, Retry(give_up=60.0, clock=lambda: float(next(clock)))) == 1
    out = capsys.readouterr().out
    assert f"giving up: {path} is corrupt: it is a directory" in out and f"rm -r {path}" in out
    assert fake.containers_by_id == {}
    assert reaper._gave_up(state_dir, STACK)


def test_a_reaper_log_left_readable_by_others_is_made_private(tmp_path: Path) -> None:
    """O_CREAT's mode applies to new files only: an older reaper.log of mode 0644 is made 0600."""
    log = tmp_path / reaper.LOG_FILE
    log.write_text("an older run\n")
    log.chmod(0o644)
    assert reaper._spawn(tmp_path, STACK, os.environ, shadow=True)  # no state: it exits at once
    pid = reaper._SPAWNED[-1]
    assert os.waitpid(pid, 0)[0] == pid
    reaper._SPAWNED.remove(pid)
    assert log.stat().st_mode & 0o777 == 0o600
    assert "shadow watching stack" in log.read_text()
