"""The one idle rule, shared by release and the reaper, and the reaper's give-up rule."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from envkit.stack.idle import Outcome, decide, mark_idle, still_idle
from envkit.stack.lease import Holder
from envkit.stack.reaper import GIVE_UP, Retry
from envkit.stack.state import ServiceState, StackState

NOW = 1_000_000.0


def leaver(*, keep: bool = False, ttl: float | None = None) -> Holder:
    return Holder(
        id="h", kind="process", pid=1, started=1.0, host="h", command="c", since=0.0, keep=keep, ttl=ttl
    )


def state(*, failed: bool = False, hold_keep: bool = False, hold_ttl: float | None = None) -> StackState:
    s = StackState(stack="s", project="p", root="/r", hold_keep=hold_keep, hold_ttl=hold_ttl)
    s.services["db"] = ServiceState(inputs="i", image="img", status="failed" if failed else "healthy")
    return s


def test_the_grace_keeps_an_unheld_stack_up_that_long() -> None:
    d = decide(state(), [leaver()], grace=3.0, now=NOW)
    assert (d.stop, d.keep, d.until, d.outcome) == (False, False, NOW + 3.0, Outcome.IDLE)


def test_no_grace_and_nothing_asked_for_stops_at_once() -> None:
    d = decide(state(), [leaver()], grace=0.0, now=NOW)
    assert d.stop and d.outcome is Outcome.STOPPED


def test_a_leaver_asking_to_keep_keeps_it_until_down() -> None:
    d = decide(state(), [leaver(keep=True)], grace=0.0, now=NOW)
    assert (d.stop, d.keep, d.until, d.outcome) == (False, True, None, Outcome.KEPT)


def test_the_longest_ttl_of_the_leavers_and_the_stack_wins() -> None:
    d = decide(state(hold_ttl=50.0), [leaver(ttl=10.0), leaver(ttl=20.0)], grace=3.0, now=NOW)
    assert d.until == NOW + 50.0 and d.outcome is Outcome.IDLE
    d = decide(state(hold_ttl=5.0), [leaver(ttl=20.0)], grace=0.0, now=NOW)
    assert d.until == NOW + 20.0


def test_a_keep_asked_for_earlier_by_anyone_sticks_to_the_stack() -> None:
    d = decide(state(hold_keep=True), [leaver()], grace=0.0, now=NOW)
    assert d.outcome is Outcome.KEPT


@pytest.mark.parametrize("keep", [True, False])
def test_a_stack_with_a_failed_service_goes_whatever_keep_says(keep: bool) -> None:
    d = decide(state(failed=True, hold_keep=keep), [leaver(keep=keep, ttl=600.0)], grace=3.0, now=NOW)
    assert d.stop and d.outcome is Outcome.STOPPED


def test_marked_idle_state_stays_idle_until_its_time_is_up() -> None:
    s = state()
    assert not still_idle(s, NOW)  # held: not idle at all
    mark_idle(s, decide(s, [leaver(ttl=10.0)], 3.0, NOW), NOW)
    assert s.idle_since == NOW and s.idle_until == NOW + 10.0
    assert still_idle(s, NOW + 9.9)
    assert not still_idle(s, NOW + 10.0)
    kept = state()
    mark_idle(kept, decide(kept, [leaver(keep=True)], 3.0, NOW), NOW)
    assert still_idle(kept, NOW + 10**9)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_reaper_gives_up_after_an_hour_of_failures_not_after_a_count() -> None:
    clock = Clock()
    retry = Retry(clock=clock)
    waits = []
    for _ in range(20):
        wait = retry.failed()
        assert wait is not None
        waits.append(wait)
        clock.now += wait
    assert waits[0] == 0.5 and max(waits) == 5.0  # backs off to at most 5 s
    clock.now = GIVE_UP - 1
    assert retry.failed() is not None
    clock.now = GIVE_UP
    assert retry.failed() is None
    assert GIVE_UP == 3600.0


def test_a_success_starts_the_hour_again() -> None:
    clock = Clock()
    retry = Retry(clock=clock)
    retry.failed()
    clock.now = GIVE_UP - 10
    retry.succeeded()
    assert retry.failed() is not None
    clock.now = 2 * GIVE_UP - 11
    assert retry.failed() is not None
    clock.now = 2 * GIVE_UP - 10
    assert retry.failed() is None


def test_the_reaper_waits_for_the_state_lock_as_long_as_envkit_lock_timeout_says(tmp_path: Path) -> None:
    """No literal timeout: the reaper's wait for the lock is the user's ENVKIT_LOCK_TIMEOUT."""
    from envkit.errors import LockTimeout
    from envkit.settings import Settings
    from envkit.stack.lease import state_lock
    from envkit.stack.reaper import Reaper

    settings = Settings.from_env({"ENVKIT_LOCK_TIMEOUT": "0.3"})
    reaper = Reaper(tmp_path, "demo-1234abcd", settings)
    with state_lock(tmp_path, 5.0):  # someone else holds it
        started = time.monotonic()
        with pytest.raises(LockTimeout) as caught:
            reaper.step()
    assert caught.value.seconds == 0.3
    assert time.monotonic() - started < 3


def test_the_reaper_is_pinned_to_the_engine_its_stack_runs_on() -> None:
    from envkit.docker.transport import Endpoint
    from envkit.stack.reaper import environment

    parent = {"DOCKER_CONTEXT": "other", "PATH": "/bin", "PYTHONPATH": "/x"}
    by_host = environment(Endpoint("unix:///run/user/1/docker.sock", "DOCKER_HOST"), parent)
    assert by_host["DOCKER_HOST"] == "unix:///run/user/1/docker.sock" and "DOCKER_CONTEXT" not in by_host
    assert by_host["PATH"] == "/bin" and by_host["PYTHONPATH"].endswith(":/x")
    by_context = environment(Endpoint("unix:///c.sock", "x", context="colima"), {"DOCKER_HOST": "tcp://h:1"})
    assert by_context["DOCKER_CONTEXT"] == "colima" and "DOCKER_HOST" not in by_context
