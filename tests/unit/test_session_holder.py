"""Session holders: a pin that lives exactly as long as another process (the xdist controller).

A real ``sleep`` stands in for that process; no Docker.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from envkit.stack import lease


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def start_time(proc: subprocess.Popen[bytes]) -> float:
    started = lease.process_start_time(proc.pid)
    assert started is not None and started > 0
    return started


def test_session_holder_id_is_derived_from_the_process(sleeper: subprocess.Popen[bytes]) -> None:
    started = start_time(sleeper)
    one = lease.session_holder(sleeper.pid, started, "pytest -n 4", keep=True, ttl=None)
    two = lease.session_holder(sleeper.pid, started, "another worker's view", ttl=60.0)
    assert one.id == two.id  # every worker registering for this session writes the same file
    assert one.kind == "session" and one.pid == sleeper.pid and one.started == started
    assert one.host == socket.gethostname()
    assert one.keep and one.ttl is None and two.ttl == 60.0 and not two.keep
    assert lease.session_holder(sleeper.pid, started + 1.0, "x").id != one.id
    assert lease.session_holder(sleeper.pid + 1, started, "x").id != one.id
    assert len(lease.session_holder(1, 1.0, "c" * 500).command) == 120
    assert f"pid {sleeper.pid}" in one.describe() and "session" in one.describe()


def test_session_holder_lives_as_long_as_its_process(
    state_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    holder = lease.session_holder(sleeper.pid, start_time(sleeper), "pytest -n 2")
    registration = lease.register(state_dir, holder)
    path = registration.path
    assert path == state_dir / lease.HOLDERS / f"{holder.id}.json"
    assert json.loads(path.read_text())["kind"] == "session"
    assert not lease.flock_taken(path)  # it needs no lock: this process is not the one it stands for
    assert lease.is_alive(holder, path)
    assert lease.holder_alive(state_dir, holder.id)
    live, removed = lease.prune(state_dir)
    assert [h.id for h in live] == [holder.id] and removed == []
    assert path.exists()

    sleeper.kill()
    sleeper.wait()  # reaped: the pid is gone
    assert lease.process_start_time(sleeper.pid) is None
    assert not lease.is_alive(holder, path)
    assert not lease.holder_alive(state_dir, holder.id)
    live, removed = lease.prune(state_dir)
    assert live == [] and [h.id for h in removed] == [holder.id]
    assert not path.exists()


def test_session_holder_of_a_reused_pid_is_dead(state_dir: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """The right pid with another start time is another process."""
    started = start_time(sleeper)
    stale = lease.session_holder(sleeper.pid, started - 5.0, "pytest")
    path = lease.register(state_dir, stale).path
    assert not lease.is_alive(stale, path)
    genuine = lease.session_holder(sleeper.pid, started, "pytest")
    genuine_path = lease.register(state_dir, genuine).path
    assert lease.is_alive(genuine, genuine_path)
    live, removed = lease.prune(state_dir)
    assert [h.id for h in live] == [genuine.id]
    assert [h.id for h in removed] == [stale.id]
    assert not path.exists() and genuine_path.exists()


def test_registering_the_same_session_twice_keeps_one_file(
    state_dir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    started = start_time(sleeper)
    first = lease.register(state_dir, lease.session_holder(sleeper.pid, started, "worker gw0"))
    second = lease.register(state_dir, lease.session_holder(sleeper.pid, started, "worker gw1"))
    assert first.path == second.path
    assert [h.id for h, _ in lease.read_holders(state_dir)] == [first.holder.id]
    second.drop()
    assert lease.read_holders(state_dir) == []
    first.drop()  # already gone: no error


def test_session_holder_ignores_pin_expiry_rules(state_dir: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """A session is judged by its process, never by time."""
    holder = lease.session_holder(sleeper.pid, start_time(sleeper), "pytest")
    path = lease.register(state_dir, holder).path
    assert lease.is_alive(holder, path, now=holder.since + 10 * 365 * 86400.0)
    assert lease.remove_pins(state_dir) == []  # `envkit down` removes pins, not sessions
    assert path.exists()
