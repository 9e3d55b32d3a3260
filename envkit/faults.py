"""Fault points: named moments between two steps of acquire, bring-up, release and teardown.

envkit's fault tests set ``ENVKIT_FAULT=PHASE`` (or ``PHASE:stop``) for one process, which then
kills (or stops) itself the moment it reaches that phase. A kill -9 lands exactly between the
two steps the phase names, every time, instead of at a moment a timer happened to hit; the test
then checks that nothing is left behind and that the next acquire works. Unset (always, outside
those tests), a fault point costs one comparison.
"""

from __future__ import annotations

import os
import signal

PHASES = (
    "acquire.locked",  # the state lock is taken; nothing decided yet
    "acquire.registered",  # the holder, the state and the reaper exist; nothing new in Docker yet
    "acquire.network",  # the stack's network was created
    "launch.created",  # a service's container was created, not started
    "launch.started",  # ... started, not yet recorded in the state
    "launch.recorded",  # ... recorded, not yet healthy
    "launch.healthy",  # ... recorded healthy
    "release.locked",  # a release holds the state lock
    "release.dropped",  # the holder file is gone; what comes next is not decided
    "teardown.containers",  # the containers are removed, the network not yet
    "teardown.network",  # the network is removed, the state file not yet
)


def reach(fault: str | None, phase: str) -> None:
    """Kill (or stop) this process if ``fault`` names ``phase``."""
    if fault is None:
        return
    name, _, action = fault.partition(":")
    if name == phase:
        os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)
