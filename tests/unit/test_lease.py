"""The holder registry and the state lock, with real processes (no Docker).

Liveness rests on an flock that the kernel releases when a holder dies, and on
the process start time, which catches a pid given to an unrelated process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from envkit.errors import LockTimeout, StateDirUnsafe
from envkit.stack import lease
from envkit.stack.lease import Holder

REPO = Path(__file__).resolve().parents[2]


def spawn(code: str, *args: str, close_fds: bool = True) -> subprocess.Popen[str]:
    """A Python child running ``code``; it prints one line when it is ready, then sleeps."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        close_fds=close_fds,
    )


def ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, f"the child exited early (code {proc.wait()})"
    return line


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


REGISTER = """
    import sys, time
    from pathlib import Path
    from envkit.stack import lease
    reg = lease.register(Path(sys.argv[1]), lease.new_holder("process"))
    print(reg.path, flush=True)
    time.sleep(120)
"""

# Opens and flocks every file named on the command line, like a holder would, then sleeps.
FLOCK = """
    import fcntl, os, sys, time
    fds = [os.open(p, os.O_RDONLY) for p in sys.argv[1:]]
    for fd in fds:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("locked", flush=True)
    time.sleep(120)
"""

SLEEP = """
    import time
    print("up", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[str]]:
    """An unrelated live process (it never registered anything)."""
    proc = spawn(SLEEP)
    try:
        ready(proc)
        yield proc
    finally:
        stop(proc)


def write_record(state_dir: Path, holder: Holder) -> Path:
    """A holder file written by hand (as left by some earlier process)."""
    directory = state_dir / lease.HOLDERS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{holder.id}.json"
    path.write_text(json.dumps(holder.to_json()))
    return path


def record(hid: str, pid: int, started: float | None) -> Holder:
    return Holder(
        id=hid,
        kind="process",
        pid=pid,
        started=started,
        host=socket.gethostname(),
        command="python -m pytest",
        since=time.time(),
    )


def ids(holders: list[Holder]) -> set[str]:
    return {h.id for h in holders}


# --- records -------------------------------------------------------------------------------------


def test_new_holder_describes_this_process() -> None:
    holder = lease.new_holder("process", services=("db", "api"), keep=True, ttl=30.0)
    assert holder.pid == os.getpid()
    assert holder.started == psutil.Process().create_time()
    assert holder.host == socket.gethostname()
    assert holder.services == ("db", "api") and holder.keep and holder.ttl == 30.0
    assert holder.expires is None
    assert lease.new_holder("process").id != holder.id
    assert f"pid {os.getpid()}" in holder.describe()

    pin = lease.new_holder("pin", expires=123.0)
    assert pin.kind == "pin" and pin.pid is None and pin.started is None and pin.expires == 123.0
    assert "envkit up" in pin.describe()


def test_a_holder_is_described_at_one_moment() -> None:
    """Its age and its time left are both taken from ``now``."""
    pin = Holder(
        id="p",
        kind="pin",
        pid=None,
        started=None,
        host="h",
        command="envkit up",
        since=1000.0,
        expires=1100.0,
    )
    assert pin.describe(now=1010.0) == "a pin from `envkit up` (10s old, for 90s more)"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"kind": "session", "pid": "abc"}, "pid 'abc' is not a process id"),
        ({"kind": "process", "pid": None}, "has no pid"),
        ({"kind": "zombie"}, "kind 'zombie'"),
        ({"since": "now"}, "since is not a finite number"),
        ({"expires": float("inf")}, "expires is not a finite number"),
        ({"services": "db"}, "services is not a list"),
        ({"keep": "yes"}, "keep is not true or false"),
        ({"extra": 1}, "unknown field 'extra'"),
    ],
)
def test_a_holder_record_of_the_wrong_shape_is_refused(change: dict[str, object], words: str) -> None:
    data = {**lease.new_holder("process").to_json(), **change}
    with pytest.raises(ValueError, match=words):
        Holder.from_json(data)


def test_a_holder_file_of_the_wrong_shape_is_set_aside_as_dead(tmp_path: Path) -> None:
    """One bad holder file (pid "abc") must not break prune, and so the reaper, status and down."""
    good = lease.register(tmp_path, lease.new_holder("process"))
    bad = tmp_path / "holders" / "session-1-2.json"
    bad.write_text(
        json.dumps({**good.holder.to_json(), "id": "session-1-2", "kind": "session", "pid": "abc"})
    )
    found = {h.id: h for h, _ in lease.read_holders(tmp_path)}
    assert found["session-1-2"].kind == "corrupt" and "pid 'abc'" in found["session-1-2"].command
    live, removed = lease.prune(tmp_path)
    assert ids(live) == {good.holder.id} and ids(removed) == {"session-1-2"}
    assert not bad.exists()
    good.drop()


def test_holder_json_round_trip() -> None:
    holder = lease.new_holder("process", services=("db",), ttl=5.0)
    data = json.loads(json.dumps(holder.to_json()))
    assert data["services"] == ["db"]
    assert Holder.from_json(data) == holder


# --- process holders ------------------------------------------------------------------------------


def test_holder_of_a_live_process_is_alive_and_dead_after_kill_9(state_dir: Path) -> None:
    child = spawn(REGISTER, str(state_dir))
    try:
        path = Path(ready(child))
        [(holder, found)] = lease.read_holders(state_dir)
        assert found == path
        assert holder.pid == child.pid and holder.kind == "process"
        assert lease.is_alive(holder, path)
        live, removed = lease.prune(state_dir)
        assert ids(live) == {holder.id} and removed == []
        assert path.exists()

        child.send_signal(signal.SIGKILL)
        child.wait()
        assert not lease.is_alive(holder, path)
        live, removed = lease.prune(state_dir)
        assert live == []
        assert removed == [holder]
        assert not path.exists()
        assert lease.read_holders(state_dir) == []
    finally:
        stop(child)


def test_pid_reused_by_an_unrelated_process_is_pruned_even_with_the_flock_held(
    state_dir: Path, sleeper: subprocess.Popen[str]
) -> None:
    """The record's pid is live and its file is locked, but the start time says it is another process."""
    real_start = psutil.Process(sleeper.pid).create_time()
    reused = write_record(state_dir, record("reused", sleeper.pid, real_start - 1.0))
    genuine = write_record(state_dir, record("genuine", sleeper.pid, real_start))
    # psutil derives start times from clock ticks: a hundredth of a second off is the same process
    tick = write_record(state_dir, record("tick", sleeper.pid, real_start + 0.01))
    paths = (reused, genuine, tick)
    locker = spawn(FLOCK, *map(str, paths))  # e.g. a forked child that inherited the lock
    try:
        ready(locker)
        assert all(lease.flock_taken(p) for p in paths)
        live, removed = lease.prune(state_dir)
        assert ids(removed) == {"reused"}
        assert ids(live) == {"genuine", "tick"}
        assert not reused.exists()
        assert genuine.exists() and tick.exists()
    finally:
        stop(locker)


def test_holder_whose_file_nobody_locks_is_dead_even_if_its_process_lives(
    state_dir: Path, sleeper: subprocess.Popen[str]
) -> None:
    """The right pid and start time are not enough: the kernel-held flock is the proof of life."""
    path = write_record(state_dir, record("unlocked", sleeper.pid, psutil.Process(sleeper.pid).create_time()))
    holder = lease.read_holders(state_dir)[0][0]
    assert not lease.is_alive(holder, path)
    live, removed = lease.prune(state_dir)
    assert live == [] and ids(removed) == {"unlocked"}
    assert not path.exists()


def test_a_live_holder_is_never_pruned_for_its_age(state_dir: Path, sleeper: subprocess.Popen[str]) -> None:
    old = Holder(
        **{
            **record("ancient", sleeper.pid, psutil.Process(sleeper.pid).create_time()).to_json(),
            "since": 1.0,  # 1970
        }
    )
    path = write_record(state_dir, old)
    locker = spawn(FLOCK, str(path))
    try:
        ready(locker)
        now = time.time() + 10 * 365 * 86400.0  # and ten years on
        assert lease.is_alive(old, path, now)
        live, removed = lease.prune(state_dir, now)
        assert ids(live) == {"ancient"} and removed == []
        assert path.exists()
    finally:
        stop(locker)


def test_this_process_registration_is_alive_until_dropped(state_dir: Path) -> None:
    registration = lease.register(state_dir, lease.new_holder("process"))
    try:
        live, removed = lease.prune(state_dir)
        assert ids(live) == {registration.holder.id} and removed == []
    finally:
        registration.drop()
    assert not registration.path.exists()
    assert lease.read_holders(state_dir) == []
    registration.drop()  # idempotent


def test_holder_on_another_host_is_judged_by_its_lock(state_dir: Path) -> None:
    """Another host's pid means nothing here; only the lock on the shared file counts."""
    remote = Holder(**{**record("remote", 999_999_999, 1.0).to_json(), "host": "some-other-host"})
    path = write_record(state_dir, remote)
    assert not lease.is_alive(remote, path)
    locker = spawn(FLOCK, str(path))
    try:
        ready(locker)
        assert lease.is_alive(remote, path)
    finally:
        stop(locker)


# --- pins and corrupt files ------------------------------------------------------------------------


def test_pin_without_expiry_lives_and_an_expired_pin_is_pruned(state_dir: Path) -> None:
    forever = lease.new_holder("pin")
    lapsed = lease.new_holder("pin", expires=time.time() - 1)
    later = lease.new_holder("pin", expires=time.time() + 3600)
    for holder in (forever, lapsed, later):
        registration = lease.register(state_dir, holder)
        assert registration.path.exists()
        assert not lease.flock_taken(registration.path)  # a pin has no process to hold a lock

    live, removed = lease.prune(state_dir)
    assert ids(live) == {forever.id, later.id}
    assert ids(removed) == {lapsed.id}
    assert sorted(p.name for p in (state_dir / lease.HOLDERS).iterdir()) == sorted(
        [f"{forever.id}.json", f"{later.id}.json"]
    )
    # the expiry is judged against the time given
    live, removed = lease.prune(state_dir, now=time.time() + 7200)
    assert ids(live) == {forever.id} and ids(removed) == {later.id}


def test_pin_expiry_boundary() -> None:
    pin = lease.new_holder("pin", expires=1000.0)
    path = Path("/nonexistent/holder.json")  # a pin's liveness does not look at its file
    assert lease.is_alive(pin, path, now=999.0)
    assert not lease.is_alive(pin, path, now=1000.0)
    assert not lease.is_alive(pin, path, now=1001.0)


def test_remove_pins_removes_only_pins(state_dir: Path) -> None:
    pin = lease.new_holder("pin")
    lease.register(state_dir, pin)
    registration = lease.register(state_dir, lease.new_holder("process"))
    try:
        removed = lease.remove_pins(state_dir)
        assert removed == [pin]
        [(holder, path)] = lease.read_holders(state_dir)
        assert holder == registration.holder
        assert lease.is_alive(holder, path)
        assert lease.remove_pins(state_dir) == []
    finally:
        registration.drop()


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'"a string"', b'{"id": "x"}', b"\xff\xfe\x00garbage", b""],
    ids=["bad-json", "list", "string", "missing-fields", "not-utf8", "empty"],
)
def test_corrupt_holder_file_is_pruned(state_dir: Path, content: bytes) -> None:
    directory = state_dir / lease.HOLDERS
    directory.mkdir(parents=True)
    path = directory / "deadbeef.json"
    path.write_bytes(content)
    [(holder, found)] = lease.read_holders(state_dir)
    assert found == path
    assert holder.id == "deadbeef" and holder.kind == "corrupt"
    live, removed = lease.prune(state_dir)
    assert live == [] and ids(removed) == {"deadbeef"}
    assert not path.exists()


def test_read_holders_without_a_directory(state_dir: Path) -> None:
    assert lease.read_holders(state_dir) == []
    assert lease.prune(state_dir) == ([], [])


# --- how register writes the file ------------------------------------------------------------------


def test_register_makes_the_file_visible_only_once_locked(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    renames: list[tuple[str, str, bool]] = []

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        # the moment the file gets its visible name: it must already be complete and locked
        renames.append((os.fspath(src), os.fspath(dst), lease.flock_taken(Path(src))))
        assert json.loads(Path(src).read_text())["pid"] == os.getpid()
        real_replace(src, dst)

    monkeypatch.setattr(lease.os, "replace", spy)
    registration = lease.register(state_dir, lease.new_holder("process"))
    monkeypatch.undo()
    try:
        [(src, dst, locked)] = renames
        assert locked, "the holder file was renamed into place before it was locked"
        assert not Path(src).name.endswith(".json")  # invisible to read_holders until renamed
        assert Path(dst) == registration.path
        directory = state_dir / lease.HOLDERS
        assert [p.name for p in directory.iterdir()] == [registration.path.name]  # no .tmp left
        assert lease.flock_taken(registration.path)
        assert registration.path.stat().st_mode & 0o777 == 0o600
        assert directory.stat().st_mode & 0o777 == 0o700
    finally:
        registration.drop()


def test_register_leaves_nothing_behind_when_it_fails(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lease.os, "replace", broken)
    with pytest.raises(OSError):
        lease.register(state_dir, lease.new_holder("process"))
    monkeypatch.undo()
    assert list((state_dir / lease.HOLDERS).iterdir()) == []


def test_lock_descriptor_is_not_inherited(state_dir: Path) -> None:
    """A subprocess started while registered must not keep the holder alive after this process lets go."""
    registration = lease.register(state_dir, lease.new_holder("process"))
    child = None
    try:
        assert registration._fd is not None
        assert not os.get_inheritable(registration._fd)
        child = spawn(SLEEP, close_fds=False)
        ready(child)
        # this process lets go of the lock (as if it had died) while the child lives on
        os.close(registration._fd)
        registration._fd = None
        assert not lease.flock_taken(registration.path)
        live, removed = lease.prune(state_dir)
        assert live == [] and ids(removed) == {registration.holder.id}
    finally:
        registration.drop()
        if child is not None:
            stop(child)


# --- the state lock -------------------------------------------------------------------------------


HOLD_LOCK = """
    import sys, time
    from pathlib import Path
    from envkit.stack import lease
    with lease.state_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(120)
"""


def test_state_lock_timeout_names_the_holder(state_dir: Path) -> None:
    first = spawn(HOLD_LOCK, str(state_dir))
    try:
        ready(first)
        with pytest.raises(LockTimeout) as caught, lease.state_lock(state_dir, timeout=1):
            pytest.fail("took the lock while another process held it")
        err = caught.value
        assert f"pid {first.pid}" in err.holder
        assert f"pid {first.pid}" in str(err)
        assert err.path == state_dir / "lock"
        assert err.seconds == 1
        assert "ENVKIT_LOCK_TIMEOUT" in str(err)

        first.send_signal(signal.SIGKILL)  # the kernel releases the lock of a dead process
        first.wait()
        with lease.state_lock(state_dir, timeout=30):
            owner = json.loads((state_dir / "lock.owner").read_text())
            assert owner["pid"] == os.getpid()
    finally:
        stop(first)


def test_state_lock_owner_unknown_when_unrecorded(state_dir: Path) -> None:
    state_dir.mkdir()
    assert lease._lock_owner(state_dir) == "an unknown process"
    (state_dir / "lock.owner").write_text("{torn")
    assert lease._lock_owner(state_dir) == "an unknown process"


def test_state_dir_is_private(state_dir: Path) -> None:
    with lease.state_lock(state_dir, timeout=5):
        pass
    assert state_dir.stat().st_mode & 0o777 == 0o700


def test_a_lock_owner_file_left_readable_by_others_is_made_private(state_dir: Path) -> None:
    """O_CREAT's mode applies to new files only: an older lock.owner of mode 0644 is made 0600."""
    state_dir.mkdir(mode=0o700)
    owner = state_dir / "lock.owner"
    owner.write_text("{}")
    owner.chmod(0o644)
    with lease.state_lock(state_dir, timeout=5):
        pass
    assert owner.stat().st_mode & 0o777 == 0o600
    assert json.loads(owner.read_text())["pid"] == os.getpid()


def test_a_world_writable_state_dir_is_refused(state_dir: Path) -> None:
    """Others may have planted files there already: making it private now would keep them."""
    state_dir.mkdir()
    state_dir.chmod(0o777)
    with pytest.raises(StateDirUnsafe) as caught, lease.state_lock(state_dir, timeout=5):
        pytest.fail("used a state directory every user may write to")
    message = str(caught.value)
    assert str(state_dir) in message and "every user may write to it (mode 0777)" in message
    assert "fix:" in message and "ENVKIT_STATE_DIR" in message
    assert list(state_dir.iterdir()) == []  # nothing written there


def test_a_state_dir_of_another_user_is_refused(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_dir.mkdir(mode=0o700)
    owner = state_dir.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)  # as another user sees it
    with pytest.raises(StateDirUnsafe) as caught:
        lease.register(state_dir, lease.new_holder("pin"))
    monkeypatch.undo()
    assert str(state_dir) in str(caught.value) and f"belongs to another user (uid {owner}" in str(
        caught.value
    )
    assert list(state_dir.iterdir()) == []


def test_a_state_dir_its_group_may_write_to_is_made_private(state_dir: Path) -> None:
    state_dir.mkdir()
    state_dir.chmod(0o775)  # an umask of 002
    with lease.state_lock(state_dir, timeout=5):
        pass
    assert state_dir.stat().st_mode & 0o777 == 0o700


def test_stopped_or_gone_lock_owners_are_told_from_running_ones() -> None:
    sleeper = spawn(SLEEP)
    try:
        ready(sleeper)
        since = time.time()
        assert lease._stopped_or_gone(sleeper.pid, since) is None  # it runs (asleep)
        sleeper.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while psutil.Process(sleeper.pid).status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lease._stopped_or_gone(sleeper.pid, since) == "stopped"
        assert lease._stopped_or_gone(sleeper.pid, since - 3600) == "gone"  # a pid reused since
    finally:
        stop(sleeper)
    assert lease._stopped_or_gone(sleeper.pid, since) == "gone"
