"""The detached watchdog of a shared stack: ``python -m envkit.reaper STATE_DIR STACK_ID``.

Starting a stack starts one reaper (it holds an flock on ``reaper.lock`` in the
state directory, so a second one exits at once). It runs in its own session,
so a signal sent to the test run's process group does not reach it, and it
needs no privileged container. Twice a second it looks at the holders; once
none is alive it waits out the grace (or the TTL the last holder asked for)
and tears the stack down under the state lock, then exits. It also exits when
someone else has torn the stack down, and tears down what is left if the
state directory itself is deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
import traceback
from pathlib import Path

import envkit
from envkit import lease, runtime
from envkit.errors import EnvkitError
from envkit.stack import DEFAULT_GRACE, env_seconds
from envkit.store import StackState, Store

POLL = 0.5  # seconds between looks at the holders
LOCK_FILE = "reaper.lock"
LOG_FILE = "reaper.log"
_SPAWNED: list[int] = []  # pids of reapers this process started (reaped when they exit)


def running(state_dir: Path) -> bool:
    """Whether a reaper watches the stack of ``state_dir`` (it holds the reaper lock)."""
    return lease.flock_taken(state_dir / LOCK_FILE)


def spawn(state_dir: Path, stack_id: str) -> None:
    """Start a reaper for the stack, in its own session, detached from this process's signals.

    ``posix_spawn`` rather than ``subprocess.Popen``: the reaper usually
    outlives the call, and a Popen object left running warns when collected.
    Finished reapers are reaped on the next spawn.
    """
    for pid in list(_SPAWNED):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                continue
        _SPAWNED.remove(pid)
    package_parent = str(Path(envkit.__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONSAFEPATH": "1"}
    log_path = str(state_dir / LOG_FILE)
    pid = os.posix_spawn(
        sys.executable,
        [sys.executable, "-m", "envkit.reaper", str(state_dir), stack_id],
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )
    _SPAWNED.append(pid)


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} reaper[{os.getpid()}]: {message}", flush=True)


class Reaper:
    def __init__(self, state_dir: Path, stack_id: str, lock_fd: int | None = None) -> None:
        self.lock_fd = lock_fd  # the reaper lock, let go of under the state lock when done
        self.state_dir = state_dir
        self.stack_id = stack_id
        self._store: Store | None = None
        self.lock_timeout = 30.0
        self.grace = env_seconds("ENVKIT_GRACE", DEFAULT_GRACE) or 0.0

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.state_dir, self.stack_id, runtime.Daemon())
        return self._store

    def step(self) -> bool:  # noqa: PLR0911 - one return per outcome reads best here
        """One look at the stack; True when the reaper's work is done."""
        if not self.state_dir.is_dir():
            removed = self.store.teardown()
            _say(f"state directory {self.state_dir} is gone: removed {removed} container(s)")
            return True
        holders = lease.read_holders(self.state_dir)
        if any(lease.is_alive(h, p) for h, p in holders):
            return False
        state = self.store.read()
        now = time.time()
        if state is not None and _still_idle(state, now):
            return False
        with lease.state_lock(self.state_dir, self.lock_timeout):
            live, leavers = lease.prune(self.state_dir)
            if live:
                return False
            state = self.store.read()
            if state is None:
                removed_count = self.store.teardown()  # torn down already, or the state file was lost
                if removed_count:
                    _say(f"no state file and no holder: removed {removed_count} container(s)")
                return self._finish()
            if state.idle_since is None:  # every holder died without leaving
                gone = self.store.go_idle(state, leavers, self.grace)
                if gone is None:
                    _say(f"every holder is gone ({len(leavers)} died without leaving): the stack is idle")
                    return False
                _say(f"every holder is gone: removed {gone} container(s)")
                return self._finish()
            if _still_idle(state, time.time()):
                return False
            removed_count = self.store.teardown()
            _say(f"no holder left and the stack's time is up: removed {removed_count} container(s)")
            return self._finish()

    def _finish(self) -> bool:
        """Let go of the reaper lock under the state lock, so that a new stack starts a new reaper."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        return True


def _still_idle(state: StackState, now: float) -> bool:
    """Whether the last holder's grace, TTL or keep still keeps the stack up."""
    if state.idle_since is None:
        return False
    return state.idle_keep or (state.idle_until is not None and now < state.idle_until)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m envkit.reaper STATE_DIR STACK_ID", file=sys.stderr)
        return 2
    state_dir, stack_id = Path(argv[0]), argv[1]
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another reaper watches this stack (or the state directory is gone)
    # Everything a teardown needs is imported now: the checkout or virtualenv envkit runs
    # from may be gone by the time the stack is torn down.
    import docker.errors  # noqa: F401
    import requests  # noqa: F401

    reaper = Reaper(state_dir, stack_id, fd)
    with contextlib.suppress(Exception):  # one round trip loads what requests loads lazily
        reaper.store.daemon.client.ping()
    _say(f"watching stack {stack_id}")
    failures = 0
    while True:
        time.sleep(POLL)
        try:
            done = reaper.step()
            failures = 0
        except Exception as err:  # the daemon is away, the lock is busy, or worse: try again
            failures += 1
            if failures == 1 or failures % 120 == 0:
                if isinstance(err, EnvkitError):
                    _say(f"will retry: {err}".splitlines()[0])
                else:
                    _say("will retry after an unexpected error:\n" + traceback.format_exc())
            if failures > 7200:  # an hour of failures: give up rather than linger forever
                _say("giving up")
                return 1
            reaper._store = None
            time.sleep(min(5.0, POLL * failures))
            continue
        if done:
            reaper._finish()
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
