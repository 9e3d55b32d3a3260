"""The reaper is never a single point of failure: killed, it is replaced; only one ever runs. One
that gives up is not replaced by its shadow."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from integration.stack_fixtures import StackProject, read_line, release

from envkit.stack import lease
from envkit.stack.state import StackState, StateFile

pytestmark = pytest.mark.docker


def roles(sp: StackProject) -> dict[str, list[psutil.Process]]:
    found: dict[str, list[psutil.Process]] = {"reaper": [], "shadow": []}
    for proc in sp.reapers():
        try:
            found["shadow" if "--shadow" in proc.cmdline() else "reaper"].append(proc)
        except psutil.Error:
            continue
    return found


def kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)


def log(sp: StackProject) -> str:
    path = sp.state_dir / "reaper.log"
    return path.read_text() if path.exists() else ""


def test_a_killed_reaper_is_replaced_by_its_shadow(stack_project: StackProject) -> None:
    sp = stack_project
    holder = sp.holder("--service", "web")
    read_line(holder)
    sp.wait_until(lambda: len(roles(sp)["shadow"]) == 1, 10, "the reaper starts a shadow")
    first = roles(sp)["reaper"]
    kill(first)
    sp.wait_until(lambda: "taking its place" in log(sp), 10, "the shadow takes the reaper's place")
    sp.wait_until(lambda: len(sp.reapers()) == 2, 10, "the new reaper starts a shadow of its own")
    assert lease.flock_taken(sp.state_dir / "reaper.lock")
    holder.kill()
    holder.communicate(timeout=30)
    sp.wait_until(sp.gone, 15, "the new reaper removes the stack")


def test_a_killed_reaper_and_shadow_are_replaced_by_a_live_holder(stack_project: StackProject) -> None:
    sp = stack_project
    holder = sp.holder("--service", "web")
    read_line(holder)
    sp.wait_until(lambda: len(roles(sp)["shadow"]) == 1, 10, "the reaper starts a shadow")
    kill(sp.reapers())
    sp.wait_until(lambda: bool(roles(sp)["reaper"]), 10, "the holder starts a new reaper")
    holder.kill()
    holder.communicate(timeout=30)
    sp.wait_until(sp.gone, 15, "the new reaper removes the stack")


def test_kill_9_of_the_reaper_and_every_holder_still_reaps(stack_project: StackProject) -> None:
    """What the OOM killer might do: the shadow is left, and it is enough."""
    sp = stack_project
    holders = [sp.holder("--service", "web") for _ in range(3)]
    for h in holders:
        read_line(h)
    sp.wait_until(lambda: len(roles(sp)["shadow"]) == 1, 10, "the reaper starts a shadow")
    started = time.monotonic()
    for h in holders:
        h.kill()
    kill(roles(sp)["reaper"])
    took = sp.wait_until(sp.gone, 20, "the stack goes with no reaper and no holder left")
    assert took < sp.grace + 5, f"took {time.monotonic() - started:.1f}s"
    sp.wait_until(lambda: not sp.reapers(), 10, "the reaper and its shadow exit")


def test_status_says_a_reaper_was_gone_and_starts_one(stack_project: StackProject) -> None:
    sp = stack_project
    up = sp.cli("up", "--service", "web")
    assert up.returncode == 0, up.stderr
    sp.wait_until(lambda: len(roles(sp)["shadow"]) == 1, 10, "the reaper starts a shadow")
    kill(sp.reapers())  # a pin has no process to notice
    status = json.loads(sp.cli("status", "--json").stdout)
    assert status["reaper_started"] is True and status["reaper"] is True
    assert roles(sp)["reaper"]
    kill(sp.reapers())  # again: the text form says so too
    assert "started a new one" in sp.cli("status").stdout
    down = sp.cli("down")
    assert down.returncode == 0, down.stderr
    sp.wait_until(sp.gone, 15, "down stops it")


def test_many_simultaneous_acquires_start_one_reaper(stack_project: StackProject) -> None:
    sp = stack_project
    start_at = time.time() + 3.0
    holders = [sp.holder("--service", "web", "--start-at", str(start_at)) for _ in range(12)]
    for h in holders:
        read_line(h, timeout=180)
    reapers = re.findall(r"reaper\[\d+\]: watching stack", log(sp))
    assert len(reapers) == 1, log(sp)
    for h in holders:
        code, err = release(h)
        assert code == 0, err
    sp.wait_until(sp.gone, 15, "the stack goes")
    sp.wait_until(lambda: not sp.reapers(), 10, "the reaper and its shadow exit")
    assert "taking its place" not in log(sp), log(sp)  # the reaper finished: no one replaces it


# A reaper whose hour of failed looks is over at its first failure: python -c GIVES_UP DIR STACK
GIVES_UP = """
import sys
from envkit.stack import reaper
reaper.GIVE_UP = 0.0
sys.exit(reaper.main(sys.argv[1:]))
"""


def test_a_reaper_that_gives_up_is_not_replaced_by_its_shadow(tmp_path: Path) -> None:
    """The engine is away for good (here: from the start): after its hour the reaper gives up,
    and its shadow with it. A shadow taking its place would start another hour, and another."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    StateFile(state_dir).save(StackState(stack="gives-up-1234abcd", project="gives-up", root=str(tmp_path)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVKIT_", "DOCKER_"))}
    env.update(DOCKER_HOST="unix:///nonexistent.sock", ENVKIT_GRACE="0")

    def watchers() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if str(state_dir) in (proc.info["cmdline"] or []):
                found.append(proc)
        return found

    reaper_proc = subprocess.Popen(
        [sys.executable, "-c", GIVES_UP, str(state_dir), "gives-up-1234abcd"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = reaper_proc.communicate(timeout=60)
        assert reaper_proc.returncode == 1, out
        assert "giving up after 0 minutes of failures" in out, out
        deadline = time.monotonic() + 15
        while watchers() and time.monotonic() < deadline:
            time.sleep(0.1)
        shadow_log = (state_dir / "reaper.log").read_text()
        assert "shadow watching stack gives-up-1234abcd" in shadow_log  # it had a shadow
        assert "taking its place" not in shadow_log, shadow_log
        assert "gave up: so does its shadow" in shadow_log, shadow_log
        assert watchers() == []
    finally:
        for proc in watchers():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if reaper_proc.poll() is None:
            reaper_proc.kill()
            reaper_proc.communicate()
