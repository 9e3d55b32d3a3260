"""Who holds a shared stack: a registry of holders under a file lock.

A reference count kept as a number dies with a SIGKILLed process, so envkit
counts *live holders* instead. Each holder is one file in ``holders/`` that
names it (pid, process start time, host, command) and that its process keeps
an exclusive ``flock`` on for as long as it lives. The kernel drops that lock
when the process dies, however it dies, so a holder whose file can be locked
by someone else is dead. A pid that the system has since given to an unrelated
process is caught by comparing the process start time (psutil), which also
covers a lock descriptor inherited by a forked child. A holder is never
declared dead for its age.

A *pin* made by ``envkit up`` has no process: it lives until ``envkit down``,
or until the time it was given runs out.

A *session* pin holds the stack for another process: the pytest-xdist
controller, on whose behalf its first worker to need the stack registers it.
It lives exactly as long as that process (pid plus start time), and that
process removes it when its session ends.

Every change to the registry or the stack's state happens under the state
lock (an ``flock`` on ``lock``); :func:`state_lock` names the process holding
it when it times out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from envkit.errors import LockTimeout, StateError
from envkit.fsutil import ensure_private_dir, ensure_state_dir, open_private
from envkit.settings import DEFAULT_LOCK_TIMEOUT

log = logging.getLogger("envkit")

HOLDERS = "holders"
KINDS = ("process", "pin", "session")
_START_TOLERANCE = 0.05  # seconds; psutil derives start times from clock ticks (10 ms)


@dataclass(frozen=True)
class Holder:
    """One holder of the stack, as recorded in its holder file."""

    id: str
    # "process" (a live process holding its file's flock), "pin" (envkit up: until envkit
    # down or expiry) or "session" (for as long as the process pid/started lives)
    kind: str
    pid: int | None
    started: float | None  # the process's start time (psutil create_time)
    host: str
    command: str
    since: float  # when it began to hold the stack (wall clock)
    services: tuple[str, ...] = ()
    keep: bool = False  # when it is the last to leave: keep the stack up until `envkit down`
    ttl: float | None = None  # ... or keep it up this many seconds
    expires: float | None = None  # pins only: when the pin lapses (None: never)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["services"] = list(self.services)
        return data

    @classmethod
    def from_json(cls, data: Any) -> Holder:
        """The holder a JSON document describes; ValueError names the first field of the wrong shape."""
        if not isinstance(data, dict):
            raise ValueError("not a table")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        for name in ("id", "host", "command"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"{name} is not a string")
        pid = data.get("pid")
        if not (pid is None or (isinstance(pid, int) and not isinstance(pid, bool) and pid > 0)):
            raise ValueError(f"pid {pid!r} is not a process id")
        if kind != "pin" and pid is None:
            raise ValueError(f"a {kind} holder has no pid")
        for name, optional in (("since", False), ("started", True), ("ttl", True), ("expires", True)):
            value = data.get(name)
            if value is None and optional:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} is not a finite number")
        if not isinstance(data.get("keep", False), bool):
            raise ValueError("keep is not true or false")
        services = data.get("services") or []
        if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
            raise ValueError("services is not a list of names")
        return cls(**{**data, "services": tuple(services)})

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        age = now - self.since
        if self.kind == "pin":
            until = "until `envkit down`" if self.expires is None else f"for {self.expires - now:.0f}s more"
            return f"a pin from `envkit up` ({age:.0f}s old, {until})"
        if self.kind == "corrupt":
            return f"an unreadable holder file {self.id}.json ({self.command})"
        if self.kind == "session":
            return f"the test session of pid {self.pid} on {self.host} ({self.command}, for {age:.0f}s)"
        return f"pid {self.pid} on {self.host} ({self.command}, holding for {age:.0f}s)"


def new_holder(
    kind: str,
    *,
    services: tuple[str, ...] = (),
    keep: bool = False,
    ttl: float | None = None,
    expires: float | None = None,
) -> Holder:
    """A holder record for this process (or, for ``kind="pin"``, for no process)."""
    pid = os.getpid() if kind == "process" else None
    return Holder(
        id=uuid.uuid4().hex[:16],
        kind=kind,
        pid=pid,
        started=_create_time(pid) if pid is not None else None,
        host=socket.gethostname(),
        command=_command(),
        since=time.time(),
        services=services,
        keep=keep,
        ttl=ttl,
        expires=expires,
    )


def session_holder(
    pid: int, started: float, command: str, *, keep: bool = False, ttl: float | None = None
) -> Holder:
    """A pin that lives as long as process ``pid`` (started at ``started``): a test session's.

    Its id is derived from the process, so every worker registering it for the
    same session writes the same file.
    """
    return Holder(
        id=f"session-{pid}-{round(started * 100)}",
        kind="session",
        pid=pid,
        started=started,
        host=socket.gethostname(),
        command=command[:120],
        since=time.time(),
        keep=keep,
        ttl=ttl,
    )


def process_start_time(pid: int) -> float | None:
    """psutil's start time of ``pid`` (None when there is no such process)."""
    return _create_time(pid)


class Registration:
    """This process's claim on a holder file: the open descriptor carrying its flock."""

    def __init__(self, holder: Holder, path: Path, fd: int | None) -> None:
        self.holder = holder
        self.path = path
        self._fd = fd

    def drop(self) -> None:
        """Remove the holder file and let go of its lock. Idempotent."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def register(state_dir: Path, holder: Holder) -> Registration:
    """Write ``holder``'s file. A process holder keeps an flock on it until :meth:`Registration.drop`.

    The file is written and locked under a temporary name, then renamed into
    place, so no one ever sees it unlocked.
    """
    directory = ensure_private_dir(ensure_state_dir(state_dir) / HOLDERS)
    final = directory / f"{holder.id}.json"
    tmp = directory / f".{holder.id}.tmp"
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise StateError(tmp, err.strerror or str(err)) from None
    try:
        os.write(fd, json.dumps(holder.to_json()).encode())
        if holder.kind == "process":
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(tmp, final)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    if holder.kind != "process":
        os.close(fd)
        return Registration(holder, final, None)
    return Registration(holder, final, fd)


def read_holders(state_dir: Path) -> list[tuple[Holder, Path]]:
    """Every holder file's record (unreadable ones are returned as dead placeholders)."""
    directory = state_dir / HOLDERS
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if not name.endswith(".json"):
            continue
        path = directory / name
        try:
            holder = Holder.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, UnicodeDecodeError) as err:
            holder = Holder(
                id=name[:-5],
                kind="corrupt",
                pid=None,
                started=None,
                host="",
                command=f"unreadable holder file: {err}"[:200],
                since=0.0,
            )
        found.append((holder, path))
    return found


def is_alive(holder: Holder, path: Path, now: float | None = None) -> bool:
    """Whether the holder still holds: its flock is taken and its process is the one recorded."""
    if holder.kind == "pin":
        return holder.expires is None or (now or time.time()) < holder.expires
    if holder.kind not in ("process", "session") or holder.pid is None:
        return False
    if holder.kind == "process" and not flock_taken(path):
        return False  # the kernel released it: the process is gone
    if holder.host != socket.gethostname():
        return True  # the lock is all we can see of another host's process
    started = _create_time(holder.pid)
    if started is None or holder.started is None:
        return False
    # A negative start time: /proc is hidden from this user, and the lock is all we can see.
    return started < 0 or abs(started - holder.started) < _START_TOLERANCE  # else: a reused pid


def holder_alive(state_dir: Path, holder_id: str) -> bool:
    """Whether the holder with this id is registered and alive."""
    path = state_dir / HOLDERS / f"{holder_id}.json"
    try:
        holder = Holder.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False
    return is_alive(holder, path)


def prune(state_dir: Path, now: float | None = None) -> tuple[list[Holder], list[Holder]]:
    """Remove dead holders' files; returns (live, removed). Call it under the state lock."""
    live, removed = [], []
    for holder, path in read_holders(state_dir):
        if is_alive(holder, path, now):
            live.append(holder)
            continue
        if holder.kind == "corrupt":  # kept for whoever wants to see it, where no one reads it
            log.warning("envkit: set aside %s as %s.bad: %s", path, path.stem, holder.command)
            with contextlib.suppress(OSError):
                path.replace(path.with_suffix(".bad"))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        removed.append(holder)
    return live, removed


def remove_pins(state_dir: Path) -> list[Holder]:
    """Remove every ``envkit up`` pin; returns them. Call it under the state lock."""
    removed = []
    for holder, path in read_holders(state_dir):
        if holder.kind == "pin":
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(holder)
    return removed


def remove_all(state_dir: Path) -> None:
    """Forget every holder (``envkit down --all``). Call it under the state lock."""
    for _, path in read_holders(state_dir):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def flock_taken(path: Path) -> bool:
    """Whether a live process holds an flock on ``path`` (False when it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # closing also drops the shared lock just taken, if it was
    return False


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:  # pragma: no cover - /proc hidden from this user
        return -1.0


def _command() -> str:
    args = [os.path.basename(sys.executable), *sys.argv]
    text = " ".join(args)
    return text if len(text) <= 120 else text[:117] + "..."


# --- the state lock -------------------------------------------------------------------------


@dataclass
class _Owner:
    pid: int
    command: str
    since: float = field(default_factory=time.time)


@contextlib.contextmanager
def state_lock(
    state_dir: Path, timeout: float = DEFAULT_LOCK_TIMEOUT, *, unless_stuck_after: float | None = None
) -> Iterator[str | None]:
    """Hold the stack's state lock; :class:`LockTimeout` names its holder after ``timeout`` seconds.

    A plain ``flock`` on ``lock``, polled every 1 to 10 ms: it is held for a
    few milliseconds per acquire, so a coarser poll (filelock's default is
    50 ms) would make each waiting joiner lose tens of milliseconds. The
    descriptor is not inheritable, and the kernel drops the lock if the
    process dies while holding it.

    With ``unless_stuck_after`` (``envkit down --all``), a lock still taken after that many
    seconds by an owner that is stopped (SIGSTOP) or gone is not waited for: the block runs
    without it, and is given that owner's description. An owner that runs is waited for up to
    ``timeout``, as always. The block is given None when it holds the lock.
    """
    ensure_state_dir(state_dir)
    path = state_dir / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise StateError(path, err.strerror or str(err)) from None
    try:
        start = time.monotonic()
        deadline = start + timeout
        stuck = None
        if unless_stuck_after is not None:
            stuck = _StuckOwner(state_dir, start + min(timeout, unless_stuck_after))
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StateError(path, err.strerror or str(err)) from None
            owner = stuck.look() if stuck is not None else None
            if owner is not None:
                yield owner  # without the lock: its owner cannot let go of it
                return
            if time.monotonic() >= deadline:
                raise LockTimeout(path, timeout, _lock_owner(state_dir))
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
        mine = _Owner(os.getpid(), _command())
        with contextlib.suppress(OSError):
            _write_private(state_dir / "lock.owner", json.dumps(asdict(mine)))
        yield None
    finally:
        os.close(fd)  # also lets go of the lock


class _StuckOwner:
    """Whether the state lock's owner (as ``lock.owner`` names it) is stopped or gone.

    It looks from ``after`` on, four times a second, and says so only when two looks in a row
    see the same record: a new owner has its record written a moment after it takes the lock,
    so a record of an owner that has left, read in that moment, is not taken for a stuck one.
    """

    EVERY = 0.25  # seconds between looks

    def __init__(self, state_dir: Path, after: float) -> None:
        self.path = state_dir / "lock.owner"
        self.next = after
        self.seen: str | None = None  # the record a look found stuck

    def look(self) -> str | None:
        """The stuck owner's description once it is sure; None until then (or while it runs)."""
        now = time.monotonic()
        if now < self.next:
            return None
        self.next = now + self.EVERY
        try:
            record = self.path.read_text(encoding="utf-8")
            owner = json.loads(record)
            pid, since = int(owner["pid"]), float(owner["since"])
        except (OSError, ValueError, KeyError, TypeError):
            self.seen = None
            return None  # no one can tell who holds it: it is waited for
        what = _stopped_or_gone(pid, since)
        if what is None or record != self.seen:
            self.seen = record if what is not None else None
            return None
        return f"{_lock_owner(self.path.parent)}, which is {what}"


def _stopped_or_gone(pid: int, since: float) -> str | None:
    """Whether the process that took the lock at ``since`` is "stopped" or "gone" (None: it runs)."""
    try:
        proc = psutil.Process(pid)
        if proc.create_time() > since + _START_TOLERANCE:
            return "gone"  # its pid belongs to a process started after it took the lock
        status = proc.status()
    except psutil.NoSuchProcess:
        return "gone"
    except psutil.AccessDenied:  # pragma: no cover - /proc hidden from this user
        return None
    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return "gone"
    return "stopped" if status == psutil.STATUS_STOPPED else None


def _write_private(path: Path, text: str) -> None:
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def lock_holder(state_dir: Path) -> str | None:
    """Who holds the state lock now (None when nobody does)."""
    if not flock_taken(state_dir / "lock"):
        return None
    return _lock_owner(state_dir)


def _lock_owner(state_dir: Path) -> str:
    try:
        owner = json.loads((state_dir / "lock.owner").read_text(encoding="utf-8"))
        return f"pid {owner['pid']} ({owner['command']}, since {time.time() - owner['since']:.0f}s ago)"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"
