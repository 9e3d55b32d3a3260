"""A stack's state file: what runs, who starts what, and when the stack may go.

``state.json`` in the stack's state directory is a cache of what Docker
knows: every container and network of a stack carries its labels, so a
missing or corrupt state file is rebuilt from them (:func:`recover`). The file
is written atomically and validated field by field when read: a file of the
wrong shape is :class:`~envkit.errors.StateCorrupt`, never a crash later on.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envkit.docker import labels
from envkit.docker.engine import Container, Network
from envkit.errors import StateCorrupt, StateError
from envkit.fsutil import atomic_write_text

SCHEMA = 1
STATE_FILE = "state.json"
STATUSES = ("starting", "healthy", "completed", "failed")  # completed: a one-shot exited 0


@dataclass
class ServiceState:
    """One service of a running stack."""

    inputs: str  # hash of its config and image identity (the container's envkit.inputs label)
    image: str
    status: str  # "starting", "healthy", "completed" (a one-shot service) or "failed"
    owner: str | None = None  # id of the holder starting it (None: nobody yet)
    container: str | None = None
    ports: dict[str, int] = field(
        default_factory=dict
    )  # container port -> host port (on the publish address)
    error: dict[str, Any] | None = None  # ServiceUnhealthy's fields, when failed
    since: float = field(default_factory=time.time)


@dataclass
class StackState:
    stack: str
    project: str
    root: str
    network: str | None = None
    services: dict[str, ServiceState] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    # Set when the last holder left: the stack stays up until idle_until (or forever with idle_keep).
    idle_since: float | None = None
    idle_until: float | None = None
    idle_keep: bool = False
    # The longest stay asked for by any holder since the stack started: keep (until
    # `envkit down`) or a TTL. It applies whoever leaves last.
    hold_keep: bool = False
    hold_ttl: float | None = None
    # Where clients reach the published ports, and where the engine publishes them
    # (envkit.remote.ServiceHost): set by each acquire, so every process reports the same.
    host: str | None = None
    publish: str | None = None
    # Where the stack's warden (envkit.stack.warden) listens for the reaper's lease, as
    # "HOST:PORT"; None when the stack has none.
    warden: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = SCHEMA
        return data

    @classmethod
    def from_json(cls, data: Any) -> StackState:
        """The state a JSON document describes; ValueError names the first field of the wrong shape."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError("not an envkit state file of this version")
        unknown = set(data) - {f for f in cls.__dataclass_fields__} - {"schema"}
        if unknown:
            raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
        services = data.get("services", {})
        if not isinstance(services, dict):
            raise ValueError("services is not a table")
        return cls(
            stack=_text(data, "stack"),
            project=_text(data, "project"),
            root=_text(data, "root"),
            network=_text(data, "network", optional=True),
            services={str(name): _service(str(name), svc) for name, svc in services.items()},
            created=_number(data, "created"),
            idle_since=_number(data, "idle_since", optional=True),
            idle_until=_number(data, "idle_until", optional=True),
            idle_keep=_flag(data, "idle_keep"),
            hold_keep=_flag(data, "hold_keep"),
            hold_ttl=_number(data, "hold_ttl", optional=True),
            host=_text(data, "host", optional=True),
            publish=_text(data, "publish", optional=True),
            warden=_text(data, "warden", optional=True),
        )


def _service(name: str, data: Any) -> ServiceState:
    if not isinstance(data, dict):
        raise ValueError(f"service {name!r} is not a table")
    unknown = set(data) - set(ServiceState.__dataclass_fields__)
    if unknown:
        raise ValueError(f"service {name!r} has an unknown field {sorted(unknown)[0]!r}")
    status = _text(data, "status", where=name)
    if status not in STATUSES:
        raise ValueError(f"service {name!r}: status {status!r} is not one of {', '.join(STATUSES)}")
    ports = data.get("ports", {})
    if not isinstance(ports, dict) or not all(
        isinstance(p, str) and isinstance(h, int) and not isinstance(h, bool) for p, h in ports.items()
    ):
        raise ValueError(f"service {name!r}: ports is not a table of port numbers")
    error = data.get("error")
    if error is not None and not (
        isinstance(error, dict)
        and set(error) - {"fix"} == {"service", "check", "seconds", "reason", "logs"}
        and isinstance(error.get("fix", ""), str)
        and isinstance(error["logs"], list)
        and all(isinstance(error[k], str) for k in ("service", "check", "reason"))
        and _is_number(error["seconds"])
    ):
        raise ValueError(f"service {name!r}: error is not a recorded failure")
    return ServiceState(
        inputs=_text(data, "inputs", where=name),
        image=_text(data, "image", where=name),
        status=status,
        owner=_text(data, "owner", optional=True, where=name),
        container=_text(data, "container", optional=True, where=name),
        ports=dict(ports),
        error=error,
        since=_number(data, "since", where=name),
    )


def _text(data: Mapping[str, Any], key: str, *, optional: bool = False, where: str = "") -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where + ': ' if where else ''}{key} is not a string")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(data: Mapping[str, Any], key: str, *, optional: bool = False, where: str = "") -> Any:
    value: Any = data.get(key)
    if value is None and optional:
        return None
    if not _is_number(value):
        raise ValueError(f"{where + ': ' if where else ''}{key} is not a finite number")
    return float(value)


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} is not true or false")
    return value


class StateFile:
    """``state.json`` of one stack's state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE

    def read(self) -> StackState | None:
        """The state as last written; None when there is none (the stack is not running).

        A file that cannot be read back is :class:`StateCorrupt`: that is not
        the same as a stack that was stopped.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StateCorrupt(self.path, "it is a directory, not a file", self._not_a_file()) from None
        except (OSError, UnicodeDecodeError) as err:
            raise StateCorrupt(self.path, f"{type(err).__name__}: {err}") from None
        try:
            return StackState.from_json(json.loads(text))
        except ValueError as err:  # JSONDecodeError is one
            raise StateCorrupt(self.path, str(err)) from None

    def save(self, state: StackState) -> None:
        """Write the state (under the lock); a joiner that changed nothing writes nothing."""
        text = json.dumps(state.to_json(), indent=1, sort_keys=True)
        with contextlib.suppress(OSError):
            if self.path.read_text(encoding="utf-8") == text:
                return
        try:
            atomic_write_text(self.path, text)
        except StateError:
            if self.path.is_dir():
                raise StateCorrupt(self.path, "it is a directory, not a file", self._not_a_file()) from None
            raise

    def remove(self) -> None:
        """Remove the state (the stack is gone); a state file that cannot be removed is a
        :class:`StateError` naming it, never an OSError."""
        try:
            self.path.unlink(missing_ok=True)
        except IsADirectoryError:
            raise StateCorrupt(self.path, "it is a directory, not a file", self._not_a_file()) from None
        except OSError as err:
            raise StateError(self.path, f"cannot remove it: {err.strerror or err}") from None

    def _not_a_file(self) -> str:
        return (
            f"remove that directory (`rm -r {self.path}`) once you have kept what you need from it; "
            "envkit then rebuilds the stack's state from its containers' labels"
        )


def recover(stack_id: str, containers: Sequence[Container], networks: Sequence[Network]) -> StackState:
    """A state describing what Docker runs for this stack, read from its objects' labels.

    Every recovered service is ``starting`` with no owner: the next holder to
    need it checks its health before anyone uses it.
    """
    first = containers[0].labels if containers else (networks[0].labels if networks else {})
    state = StackState(
        stack=stack_id,
        project=first.get(labels.PROJECT, ""),
        root=first.get(labels.ROOT, ""),
        network=networks[0].name if networks else None,
    )
    started = [c.created for c in containers if c.created > 0]
    if started:
        state.created = min(started)  # the stack is as old as its oldest container
    for c in containers:
        service = c.labels.get(labels.SERVICE)
        if not service or service in state.services or not c.running:
            continue
        state.services[service] = ServiceState(
            inputs=c.labels.get(labels.INPUTS, ""),
            image=c.image,
            status="starting",
            container=c.id,
            ports=dict(c.ports),
        )
    return state
