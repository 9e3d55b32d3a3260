"""A holder releases the stack itself when it ends by SIGTERM, by Ctrl-C, or by exiting without release.

The proof that the process released (rather than the reaper noticing its
death) is the reaper's log: the reaper writes "died without leaving" only
when it finds that every holder died without releasing.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

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
