"""How a stack ends: its holder releases it, or the reaper notices that no holder is left.

A holder releases the stack itself when it ends by SIGTERM, by Ctrl-C, or by
exiting without release; a SIGKILLed one is the reaper's job, even when the
checkout and the packages the reaper runs from are deleted meanwhile.

The proof that the process released (rather than the reaper noticing its
death) is the reaper's log: the reaper writes "died without leaving" only
when it finds that every holder died without releasing.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import certifi
import charset_normalizer
import docker
import idna
import psutil
import pytest
import requests
import urllib3

import envkit
from integration.stack_fixtures import StackProject, read_line

pytestmark = pytest.mark.docker

DIED = "died without leaving"


def reaper_log(sp: StackProject) -> str:
    path = sp.state_dir / "reaper.log"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("how", ["sigterm", "sigint"])
def test_a_signalled_holder_releases_on_its_way_out(stack_project: StackProject, how: str) -> None:
    sp = stack_project
    proc = sp.holder("--service", "web")
    read_line(proc)
    assert sp.live_holders() == 1
    proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    if how == "sigterm":
        assert proc.returncode == 128 + signal.SIGTERM, err
    assert not list((sp.state_dir / "holders").glob("*.json")), "the holder file outlived its process"
    sp.wait_until(sp.gone, 10, "the stack goes after the grace")
    assert DIED not in reaper_log(sp), reaper_log(sp)


def test_a_holder_that_exits_without_releasing_is_released_at_exit(stack_project: StackProject) -> None:
    sp = stack_project
    script = "import envkit\nheld = envkit.acquire(services=['web'])\nprint(held.handle.url('web', 8000))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=sp.root, env=sp.env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("http://127.0.0.1:")
    assert not list((sp.state_dir / "holders").glob("*.json")), "atexit did not release the holder"
    sp.wait_until(sp.gone, 10, "the stack goes after the grace")
    assert DIED not in reaper_log(sp), reaper_log(sp)


def test_a_killed_holder_is_noticed_by_the_reaper(stack_project: StackProject) -> None:
    """The counterpart: SIGKILL leaves no chance to release, and the reaper says so."""
    sp = stack_project
    proc = sp.holder("--service", "web")
    read_line(proc)
    proc.kill()
    proc.communicate(timeout=30)
    sp.wait_until(sp.gone, 15, "the reaper removes the stack")
    assert DIED in reaper_log(sp), reaper_log(sp)


def test_the_reaper_tears_down_after_its_checkout_and_packages_are_deleted(
    stack_project: StackProject, tmp_path: Path
) -> None:
    """CI wipes the workspace (checkout and virtualenv) while a stack is still up: the reaper copes.

    The reaper here runs from a copy of envkit and of its third-party packages, which is
    deleted before the teardown; whatever the teardown needs must already be loaded.
    """
    sp = stack_project
    packages = tmp_path / "packages"
    packages.mkdir()
    for module in (envkit, docker, requests, urllib3, idna, certifi, charset_normalizer, psutil):
        source = Path(module.__file__ or "").parent
        shutil.copytree(source, packages / source.name)
    for dist in Path(docker.__file__ or "").parent.parent.glob("*.dist-info"):
        shutil.copytree(dist, packages / dist.name)  # package metadata some imports read

    holder = sp.holder("--service", "web")
    read_line(holder)
    # Replace the reaper the holder started (and its shadow) by one run from the copy. The
    # holder restarts a reaper it finds dead, and a shadow takes a killed reaper's place: the
    # holder is stopped meanwhile, and whatever reaper appears is killed until none is left.
    holder.send_signal(signal.SIGSTOP)

    def none_left() -> bool:
        for reaper in sp.reapers():
            reaper.kill()
        return not sp.reapers()  # a zombie has no cmdline

    env = {**sp.env(), "PYTHONPATH": str(packages)}
    log = (sp.state_dir / "reaper.log").open("ab")
    try:
        sp.wait_until(none_left, 10, "the holder's reaper and its shadow are gone")
        reaper = subprocess.Popen(
            [sys.executable, "-S", "-m", "envkit.stack.reaper", str(sp.state_dir), sp.stack_id],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        sp.procs.append(reaper)  # type: ignore[arg-type]
        sp.wait_until(
            lambda: "watching" in reaper_log(sp).split("reaper[")[-1], 30, "the copied reaper starts"
        )
        holder.send_signal(signal.SIGCONT)
        time.sleep(1)  # it has made its first round trip to the daemon
        shutil.rmtree(packages)
        holder.kill()
        holder.communicate(timeout=30)
        sp.wait_until(sp.gone, 15, "the reaper removes the stack")
        assert reaper.wait(15) == 0, reaper_log(sp)
    finally:
        holder.send_signal(signal.SIGCONT)
        log.close()
    assert "unexpected error" not in reaper_log(sp), reaper_log(sp)
