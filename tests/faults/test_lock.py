"""A process stopped (SIGSTOP) while it owns the state lock: `down --all` stops the stack anyway,
and `status` names who holds the lock. One that runs is waited for, as long as any lock is."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest
from integration.stack_fixtures import StackProject, read_line, release

pytestmark = pytest.mark.docker


def test_down_all_gets_past_a_stopped_lock_owner(stack_project: StackProject) -> None:
    sp = stack_project
    holder = sp.holder("--service", "web")
    read_line(holder)
    stuck = sp.holder("--service", "web", ENVKIT_FAULT="acquire.locked:stop")
    sp.wait_until(
        lambda: psutil.Process(stuck.pid).status() == psutil.STATUS_STOPPED, 30, "the second holder stops"
    )
    try:
        status = json.loads(sp.cli("status", "--json").stdout)
        assert status["lock"] is not None and f"pid {stuck.pid}" in status["lock"], status["lock"]
        assert f"state lock: held by pid {stuck.pid}" in sp.cli("status").stdout

        started = time.monotonic()
        down = sp.cli("down", "--all", "--json", timeout=60)
        took = time.monotonic() - started
        assert down.returncode == 0, down.stderr
        result = json.loads(down.stdout)
        assert result["stopped"] is True and f"pid {stuck.pid}" in result["lock_owner"]
        assert took < 30, f"down --all took {took:.1f}s"  # not the 120 s lock timeout
        assert sp.gone()
    finally:
        stuck.send_signal(signal.SIGKILL)
        stuck.communicate(timeout=30)
    code, _ = release(holder)  # leaving a stack stopped under it is fine
    assert code == 0


# Holds the stack's state lock, running (asleep, not stopped), until its stdin closes.
LOCKER = """
import sys
from pathlib import Path
from envkit.stack.lease import state_lock
with state_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_down_all_waits_for_a_running_lock_owner_and_then_fails_naming_it(
    stack_project: StackProject,
) -> None:
    """Only a stopped (or gone) owner is gone past: one that runs may be in the middle of a
    change, so `down --all` waits the lock's whole timeout for it, then says who holds it."""
    sp = stack_project
    holder = sp.holder("--service", "web")
    read_line(holder)
    ids = sorted(c["Id"] for c in sp.containers())
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(sp.state_dir)],
        cwd=sp.root,
        env=sp.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    sp.procs.append(locker)  # killed by the fixture if the test fails
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    started = time.monotonic()
    down = sp.cli("down", "--all", "--json", timeout=60, ENVKIT_LOCK_TIMEOUT="8")
    took = time.monotonic() - started
    assert down.returncode == 1, down.stdout
    assert "envkit: error: waited 8s for the stack lock" in down.stderr, down.stderr
    assert f"pid {locker.pid}" in down.stderr and "Traceback" not in down.stderr
    assert took >= 8, f"gave up after {took:.1f}s"  # not after FORCE_WAIT (5 s)
    assert sorted(c["Id"] for c in sp.containers()) == ids  # nothing was stopped
    locker.communicate(input="", timeout=30)
    down = sp.cli("down", "--all", "--json")
    assert down.returncode == 0, down.stderr
    result = json.loads(down.stdout)
    assert result["stopped"] is True and "lock_owner" not in result  # with the lock this time
    sp.wait_until(sp.gone, 15, "the stack goes")
    code, _ = release(holder)
    assert code == 0
