"""The detached watchdog of a shared stack: ``python -m envkit.stack.reaper STATE_DIR STACK_ID``.

Starting a stack starts one reaper (it holds an flock on ``reaper.lock`` in the
state directory, so a second one exits at once). It runs in its own session,
so a signal sent to the test run's process group does not reach it, and it
needs no privileged container. Twice a second it looks at the holders; once
none is alive it waits out the grace (or the TTL the last holder asked for)
and tears the stack down under the state lock, then exits. It also exits when
someone else has torn the stack down, and tears down what is left if the
state directory itself is deleted.

A reaper is never alone: it keeps a *shadow*, a second process that holds
``reaper.shadow.lock`` and takes the reaper's place if the reaper is killed
(the OOM killer; a kill -9 of it and of every holder), then starts a shadow
of its own. A holder process that sees no reaper starts one too. The shadow
takes no place that was left on purpose: a reaper that finished has removed
the stack's state first, and one that gave up (an hour of failed looks) says
so in ``reaper.gave-up``, and its shadow ends with it.

It imports nothing of the image-building side of envkit: everything a
teardown needs is loaded when it starts, so a checkout or virtualenv deleted
meanwhile cannot strand a stack.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from envkit.docker.engine import Daemon
from envkit.docker.transport import Endpoint
from envkit.errors import EnvkitError, StateCorrupt
from envkit.fsutil import open_private
from envkit.settings import Settings
from envkit.stack import idle, lease
from envkit.stack.objects import StackObjects
from envkit.stack.state import StackState, StateFile
from envkit.stack.warden_link import Link

POLL = 0.5  # seconds between looks at the holders
GIVE_UP = 3600.0  # seconds of failing looks in a row after which the reaper gives up
LOCK_FILE = "reaper.lock"
SHADOW_LOCK_FILE = "reaper.shadow.lock"
LOCK_FD = 3  # where a spawned reaper (or shadow) finds its lock, already taken
LOG_FILE = "reaper.log"
GAVE_UP_FILE = "reaper.gave-up"  # the stack id of a reaper that gave up: its shadow lets it be
_SPAWNED: list[int] = []  # pids of reapers this process started (reaped when they exit)


def running(state_dir: Path) -> bool:
    """Whether a reaper watches the stack of ``state_dir`` (it holds the reaper lock)."""
    return lease.flock_taken(state_dir / LOCK_FILE)


def environment(endpoint: Endpoint, environ: Mapping[str, str]) -> dict[str, str]:
    """The reaper's environment: this one, with envkit importable from where it runs now, and
    the engine pinned to the one the stack runs on (a later `docker context use` must not send
    the reaper to another engine, where it would find nothing to remove)."""
    package_parent = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(p for p in (package_parent, environ.get("PYTHONPATH", "")) if p)
    env = {**environ, "PYTHONPATH": pythonpath, "PYTHONSAFEPATH": "1"}
    if endpoint.context is not None:
        env["DOCKER_CONTEXT"] = endpoint.context
        env.pop("DOCKER_HOST", None)
    else:
        env["DOCKER_HOST"] = endpoint.host
        env.pop("DOCKER_CONTEXT", None)
    return env


def spawn(state_dir: Path, stack_id: str, endpoint: Endpoint) -> bool:
    """Start a reaper for the stack unless one runs; whether one was started.

    The reaper lock is taken here and handed to the child (as its descriptor
    3), so the new reaper counts as running from this moment: processes that
    ask right after do not start another one while it boots.
    """
    return _spawn(state_dir, stack_id, environment(endpoint, os.environ), shadow=False)


def _spawn(state_dir: Path, stack_id: str, env: Mapping[str, str], *, shadow: bool) -> bool:
    """Start a reaper (or its shadow) with its lock already taken; False if one holds it.

    It runs in its own session, detached from this process's signals.
    ``posix_spawn`` rather than ``subprocess.Popen``: the reaper usually
    outlives the call, and a Popen object left running warns when collected.
    Finished children are reaped on the next spawn.
    """
    for pid in list(_SPAWNED):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                continue
        _SPAWNED.remove(pid)
    lock = os.open(
        state_dir / (SHADOW_LOCK_FILE if shadow else LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # one holds it
            raise
        log = open_private(state_dir / LOG_FILE, os.O_WRONLY | os.O_APPEND)
        role = ["--shadow"] if shadow else []
        try:
            pid = os.posix_spawn(
                sys.executable,
                [
                    sys.executable,
                    "-m",
                    "envkit.stack.reaper",
                    *role,
                    "--lock-fd",
                    str(LOCK_FD),
                    str(state_dir),
                    stack_id,
                ],
                dict(env),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log, 1),
                    (os.POSIX_SPAWN_DUP2, 1, 2),
                    (os.POSIX_SPAWN_DUP2, lock, LOCK_FD),  # the child holds the lock from birth
                ],
                setsid=True,
            )
        finally:
            os.close(log)
    finally:
        os.close(lock)  # the child's descriptor keeps the lock
    _SPAWNED.append(pid)
    return True


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} reaper[{os.getpid()}]: {message}", flush=True)


class Retry:
    """Failed looks in a row: how long to wait before the next one, and when to give up.

    The wait grows by half a second a failure, to at most 5 s; after
    :data:`GIVE_UP` seconds of nothing but failures the reaper gives up.
    """

    def __init__(self, give_up: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.give_up = GIVE_UP if give_up is None else give_up
        self.clock = clock
        self.failures = 0
        self.since: float | None = None

    def failed(self) -> float | None:
        """Count a failure; the seconds to wait before the next look, or None: give up."""
        now = self.clock()
        if self.since is None:
            self.since = now
        self.failures += 1
        if now - self.since >= self.give_up:
            return None
        return min(5.0, POLL * self.failures)

    def succeeded(self) -> None:
        self.failures = 0
        self.since = None


class Reaper:
    def __init__(
        self, state_dir: Path, stack_id: str, settings: Settings, lock_fd: int | None = None
    ) -> None:
        self.lock_fd = lock_fd  # the reaper lock, let go of under the state lock when done
        self.state_dir = state_dir
        self.stack_id = stack_id
        self.settings = settings
        self.state_file = StateFile(state_dir)
        self._objects: StackObjects | None = None
        self.link = Link(stack_id)  # the lease on the stack's warden, when it has one

    def hold_warden(self) -> None:
        """Keep the lease on the stack's warden (envkit.stack.warden) open while the state names one."""
        try:
            state = self.state_file.read()
        except StateCorrupt:
            return
        self.link.tick(state.warden if state is not None and state.stack == self.stack_id else None)

    @property
    def objects(self) -> StackObjects:
        if self._objects is None:
            daemon = Daemon(
                cache_dir=self.settings.cache_dir, timeout=max(1.0, self.settings.lock_timeout / 2)
            )
            self._objects = StackObjects(daemon, self.stack_id)  # (no fault points: tests kill it)
        return self._objects

    def keep_shadow(self) -> None:
        """Start a shadow if none runs, while there is a stack to watch."""
        if self.state_file.path.exists() and not lease.flock_taken(self.state_dir / SHADOW_LOCK_FILE):
            _spawn(self.state_dir, self.stack_id, os.environ, shadow=True)

    def forget_daemon(self) -> None:
        """Connect anew at the next look (the engine may have restarted)."""
        self._objects = None

    def step(self) -> bool:  # noqa: PLR0911 - one return per outcome reads best here
        """One look at the stack; True when the reaper's work is done."""
        if not self.state_dir.is_dir():
            removed = self.objects.teardown()
            _say(f"state directory {self.state_dir} is gone: removed {removed} container(s)")
            return True
        holders = lease.read_holders(self.state_dir)
        if any(lease.is_alive(h, p) for h, p in holders):
            return False
        state = self._read()
        if state is not None and state.stack != self.stack_id:
            return self._finish()  # another stack lives here now, with a reaper of its own
        if state is not None and idle.still_idle(state, time.time()):
            return False
        with lease.state_lock(self.state_dir, self.settings.lock_timeout):
            live, leavers = lease.prune(self.state_dir)
            if live:
                return False
            state = self._read()
            if state is None:
                removed = self.objects.stop(self.state_file)  # torn down already, or its state was lost
                if removed:
                    _say(f"no state file and no holder: removed {removed} container(s)")
                return self._finish()
            now = time.time()
            if state.idle_since is None:  # every holder died without leaving
                decision = idle.decide(state, leavers, self.settings.grace, now)
                if not decision.stop:
                    idle.mark_idle(state, decision, now)
                    self.state_file.save(state)
                    _say(f"every holder is gone ({len(leavers)} died without leaving): the stack is idle")
                    return False
                removed = self.objects.stop(self.state_file)
                _say(f"every holder is gone: removed {removed} container(s)")
                return self._finish()
            if idle.still_idle(state, now):
                return False
            removed = self.objects.stop(self.state_file)
            _say(f"no holder left and the stack's time is up: removed {removed} container(s)")
            return self._finish()

    def _read(self) -> StackState | None:
        try:
            return self.state_file.read()
        except StateCorrupt as err:
            _say(f"{err}".splitlines()[0] + "; the stack goes once no holder is left")
            return None

    def _finish(self) -> bool:
        """Let go of the reaper lock under the state lock, so that a new stack starts a new reaper."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        return True

    def give_up(self) -> None:
        """Say that this reaper gave up on its stack before it lets go of its lock, so that its
        shadow does not take its place: a new reaper would try for another hour, and another."""
        with contextlib.suppress(OSError):
            fd = open_private(self.state_dir / GAVE_UP_FILE, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, self.stack_id.encode())
            finally:
                os.close(fd)


def main(argv: list[str]) -> int:
    shadow = argv[:1] == ["--shadow"]
    argv = argv[1:] if shadow else argv
    given = None
    if argv[:1] == ["--lock-fd"] and len(argv) > 1 and argv[1].isdigit():
        given, argv = int(argv[1]), argv[2:]
    if len(argv) != 2:
        print(
            "usage: python -m envkit.stack.reaper [--shadow] [--lock-fd N] STATE_DIR STACK_ID",
            file=sys.stderr,
        )
        return 2
    state_dir, stack_id = Path(argv[0]), argv[1]
    fd = _take(state_dir / (SHADOW_LOCK_FILE if shadow else LOCK_FILE), given)
    if fd is None:
        return 0  # another one holds that role (or the state directory is gone)
    try:
        settings = Settings.from_env()
    except EnvkitError as err:
        _say(f"cannot start: {err}")
        return 1
    if shadow:
        fd = _shadow(state_dir, stack_id, fd)
        if fd is None:
            return 0
    else:  # a reaper started anew (by a holder, or by status): an earlier one's giving up is over
        with contextlib.suppress(OSError):
            (state_dir / GAVE_UP_FILE).unlink(missing_ok=True)
    return _reap(Reaper(state_dir, stack_id, settings, fd))


def _take(path: Path, given: int | None) -> int | None:
    """The lock at ``path`` (on descriptor ``given`` when the spawner took it); None if taken."""
    try:
        fd = given if given is not None else os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op on the descriptor the spawner took it on
        os.set_inheritable(fd, False)
    except OSError:
        return None
    return fd


def _shadow(state_dir: Path, stack_id: str, shadow_fd: int) -> int | None:
    """The reaper's shadow: a second process that takes the reaper's place if the reaper is
    killed (the OOM killer, a kill -9 of it and of every holder). It returns the reaper lock
    it took, or None once there is no stack left to watch."""
    _say(f"shadow watching stack {stack_id}")
    state_file = StateFile(state_dir)
    while True:
        time.sleep(POLL)
        here = _watched(state_file, stack_id)
        if here is None:
            continue  # a corrupt state: the reaper (or the next acquire) repairs it
        if not here:
            return None  # the stack is gone (or another one lives here now): nothing to take over
        fd = _take(state_dir / LOCK_FILE, None)
        if fd is None:
            continue  # the reaper watches
        # The reaper let go of its lock: it was killed, or it finished, or it gave up. One that
        # finished removed the stack's state before it let go, and one that gave up said so.
        if _gave_up(state_dir, stack_id):
            os.close(fd)
            _say(f"the reaper of stack {stack_id} gave up: so does its shadow")
            return None
        if _watched(state_file, stack_id) is False:
            os.close(fd)
            return None  # the reaper finished: nothing to take over
        os.close(shadow_fd)  # the reaper is gone: take its place (it starts a new shadow)
        _say(f"the reaper of stack {stack_id} is gone: taking its place")
        return fd


def _watched(state_file: StateFile, stack_id: str) -> bool | None:
    """Whether the state file describes stack ``stack_id`` (None: it cannot be read)."""
    try:
        state = state_file.read()
    except StateCorrupt:
        return None
    return state is not None and state.stack == stack_id


def _gave_up(state_dir: Path, stack_id: str) -> bool:
    """Whether the reaper of ``stack_id`` gave up (see :meth:`Reaper.give_up`)."""
    try:
        return (state_dir / GAVE_UP_FILE).read_text(encoding="utf-8") == stack_id
    except (OSError, UnicodeDecodeError):
        return False


def _reap(reaper: Reaper, retry: Retry | None = None) -> int:
    with contextlib.suppress(EnvkitError):  # connects now: loads what a teardown needs
        reaper.objects.containers()
    _say(f"watching stack {reaper.stack_id}")
    retry = retry or Retry()
    shadow_failures = 0
    while True:
        time.sleep(POLL)
        try:  # apart from the look at the stack: a shadow that cannot start must not stop a teardown
            reaper.keep_shadow()
            shadow_failures = 0
        except Exception as err:  # said, and tried again at the next look
            shadow_failures += 1
            if shadow_failures == 1 or shadow_failures % 120 == 0:
                _say(f"cannot start a shadow (will retry): {type(err).__name__}: {err}".splitlines()[0])
        try:  # apart from the look at the stack too: an unreachable warden must not stop a teardown
            reaper.hold_warden()
        except Exception as err:  # tried again at the next look
            _say(f"cannot hold the warden's lease: {type(err).__name__}: {err}".splitlines()[0])
        try:
            done = reaper.step()
            retry.succeeded()
        except StateCorrupt as err:  # a state file no retry repairs (a directory in its place)
            _say("giving up: " + "; ".join(line.strip() for line in str(err).splitlines()))
            reaper.give_up()
            return 1
        except Exception as err:  # the daemon is away, the lock is busy, or worse: try again
            wait = retry.failed()
            if retry.failures == 1 or retry.failures % 120 == 0:
                if isinstance(err, EnvkitError):
                    _say(f"will retry: {err}".splitlines()[0])
                else:
                    _say("will retry after an unexpected error:\n" + traceback.format_exc())
            if wait is None:
                _say(f"giving up after {retry.give_up / 60:.0f} minutes of failures")
                reaper.give_up()
                return 1
            reaper.forget_daemon()
            time.sleep(wait)
            continue
        if done:
            reaper.link.close()
            reaper._finish()
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
