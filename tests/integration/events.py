"""The daemon's events, read as they happen, for tests that count what the daemon did.

``docker events --since ... --until ...`` replays only the daemon's most recent events (moby
keeps 256 in memory), and a busy test run overflows that within seconds: every health check
by ``exec`` is three events, and parallel tests run many. A count made after the fact then
silently misses the oldest events (a stack's first containers, say). So each test process
reads the event stream live, from the start of its session (the autouse fixture in
conftest.py), and tests ask that record. Before it answers, a barrier (a labelled volume,
created and removed) makes sure every event up to the question has arrived.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import docker
from engine_client import docker_api_client

from envkit.docker import labels
from envkit.errors import ConfigError

KINDS = ["container", "image", "volume"]
ACTIONS = ["create", "start", "die", "destroy", "tag", "load", "pull", "push"]
BARRIER_PROJECT = "envkit-tests-events"  # the label of the barrier volumes
PATIENCE = 60.0  # seconds to wait for the barrier's own event
REPLAY = 2.0  # seconds before its start that the log asks the daemon to replay


class EventLog:
    """Every container, image and volume event of ``ACTIONS`` since :meth:`start`."""

    def __init__(self) -> None:
        self._client = docker_api_client()
        self._seen: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.started = 0.0

    def start(self) -> None:
        self.started = time.time()
        self._stream = self._client.events(
            since=f"{self.started - REPLAY:.6f}", filters={"type": KINDS, "event": ACTIONS}, decode=True
        )
        self._thread = threading.Thread(target=self._read, name="docker-events", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._client.close()

    def _read(self) -> None:
        try:
            for event in self._stream:
                with self._arrived:
                    self._seen.append(event)
                    self._arrived.notify_all()
        except Exception as err:  # the stream closed at the session's end (or the daemon went away)
            with self._arrived:
                self._failure = err
                self._arrived.notify_all()

    def _barrier(self) -> None:
        name = f"envkit-test-barrier-{uuid.uuid4().hex[:12]}"
        self._client.create_volume(name, labels={labels.PROJECT: BARRIER_PROJECT})
        try:
            deadline = time.monotonic() + PATIENCE
            with self._arrived:
                while not any(e.get("Type") == "volume" and _actor_name(e) == name for e in self._seen):
                    if self._thread is None or not self._thread.is_alive():
                        raise AssertionError(f"the daemon's event stream ended: {self._failure!r}")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AssertionError(f"the daemon's event stream did not deliver {name} in time")
                    self._arrived.wait(left)
        finally:
            self._client.remove_volume(name, force=True)

    def between(
        self,
        since: float,
        until: float | None = None,
        *,
        kind: str | None = "container",
        action: str | None = None,
        label: str | None = None,
    ) -> list[dict[str, Any]]:
        """The events of ``kind`` (any when None; and ``action``) from ``since`` to ``until``
        (now when None), of objects carrying ``label`` (``key=value`` or ``key``), in order."""
        assert since >= self.started - REPLAY, "the event log started after the moment asked about"
        assert kind is None or kind in KINDS, f"the log does not record {kind} events: add it to KINDS"
        assert action is None or action in ACTIONS, f"the log does not record {action!r}: add it to ACTIONS"
        self._barrier()
        end = time.time() if until is None else until
        key, _, value = (label or "").partition("=")
        with self._arrived:
            seen = list(self._seen)
        out = []
        for event in seen:
            when = int(event.get("timeNano", 0)) / 1e9
            attributes = (event.get("Actor") or {}).get("Attributes") or {}
            if (kind is not None and event.get("Type") != kind) or not since <= when <= end:
                continue
            if action is not None and event.get("Action") != action:
                continue
            if label is not None and (key not in attributes or (value and attributes[key] != value)):
                continue
            out.append(event)
        return out


def _actor_name(event: dict[str, Any]) -> str:
    """The name of what an event is about: Docker names a volume by the actor's ID, Podman by
    its ``name`` attribute (and leaves the ID empty)."""
    actor = event.get("Actor") or {}
    return str(actor.get("ID") or (actor.get("Attributes") or {}).get("name") or "")


_ACTIVE: list[EventLog] = []  # this process's log, once started


def log() -> EventLog:
    """This process's event log (started by the integration tier's session fixture)."""
    assert _ACTIVE, "the event log is started by tests/integration/conftest.py"
    return _ACTIVE[0]


def start() -> EventLog | None:
    """Start this process's log; None where no daemon answers (a test that asks fails then)."""
    if not _ACTIVE:
        try:
            docker_api_client().close()
        except (docker.errors.DockerException, ConfigError):  # no engine, or a broken context
            return None
        the_log = EventLog()
        the_log.start()
        _ACTIVE.append(the_log)
    return _ACTIVE[0]


def stop() -> None:
    while _ACTIVE:
        _ACTIVE.pop().close()
