"""A process stopped (SIGSTOP) while it owns the state lock: `down --all` stops the stack anyway,
and `status` names who holds the lock."""

from __future__ import annotations

import json
import signal
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
