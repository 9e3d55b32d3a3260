"""kill -9 at every phase of acquire, bring-up, release and teardown: nothing is left, ever.

A holder runs with ENVKIT_FAULT=<phase> (envkit.faults) and kills itself the moment it reaches
that phase, exactly between two steps. Then, within the reaper's bound, no container, network,
volume or holder file of the stack may remain, and the next acquire must work.
"""

from __future__ import annotations

import signal
import time

import pytest
from integration.stack_fixtures import StackProject, read_line, release

from envkit.faults import PHASES

pytestmark = pytest.mark.docker

# The reaper polls twice a second; the grace is the fixture's; removal takes a moment.
REAP_BOUND = 20.0

ACQUIRE = [p for p in PHASES if p.startswith(("acquire.", "launch."))]
RELEASE = [p for p in PHASES if p.startswith(("release.", "teardown."))]


def leftovers(sp: StackProject) -> list[str]:
    found = [f"container {c['Names'][0]}" for c in sp.containers()]
    found += [f"network {n['Name']}" for n in sp.networks()]
    found += [
        f"volume {v['Name']}" for v in sp.client.volumes(filters={"label": sp.label}).get("Volumes") or []
    ]
    holders = sp.state_dir / "holders"
    found += [f"holder file {p.name}" for p in holders.glob("*.json")] if holders.is_dir() else []
    return found


def assert_clean_then_usable(sp: StackProject, killed_at: str) -> float:
    started = time.monotonic()
    sp.wait_until(
        lambda: not leftovers(sp), REAP_BOUND, f"nothing left after a kill at {killed_at}: {leftovers(sp)}"
    )
    took = time.monotonic() - started
    again = sp.holder("--service", "echo")
    line = read_line(again)
    assert set(line["ports"]) == {"web", "echo"}, line
    code, err = release(again)
    assert code == 0, err
    sp.wait_until(lambda: not leftovers(sp), REAP_BOUND, "the next holder's stack goes too")
    return took


@pytest.mark.parametrize("phase", ACQUIRE)
def test_a_holder_killed_while_acquiring_leaves_nothing(stack_project: StackProject, phase: str) -> None:
    sp = stack_project
    proc = sp.holder("--service", "echo", ENVKIT_FAULT=phase)  # echo depends on web: both start
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"the holder did not reach {phase}"
    assert_clean_then_usable(sp, phase)


@pytest.mark.parametrize("phase", RELEASE)
def test_a_holder_killed_while_releasing_leaves_nothing(stack_project: StackProject, phase: str) -> None:
    sp = stack_project
    # A grace of 0: the last holder out tears the stack down itself, through every teardown phase.
    proc = sp.holder("--service", "echo", ENVKIT_FAULT=phase, ENVKIT_GRACE="0")
    read_line(proc)
    code, _ = release(proc)
    assert code == -signal.SIGKILL, f"the holder did not reach {phase}"
    assert_clean_then_usable(sp, phase)


def test_a_holder_killed_while_a_second_one_joins_leaves_the_joiner_working(
    stack_project: StackProject,
) -> None:
    """The first holder dies with its containers half started; the joiner takes over."""
    sp = stack_project
    first = sp.holder("--service", "echo", ENVKIT_FAULT="launch.started")
    first.communicate(timeout=120)
    joiner = sp.holder("--service", "echo")
    line = read_line(joiner)
    assert set(line["ports"]) == {"web", "echo"}
    code, err = release(joiner)
    assert code == 0, err
    sp.wait_until(lambda: not leftovers(sp), REAP_BOUND, "nothing left")
