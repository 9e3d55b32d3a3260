"""What an acquire must do, decided from plain data: no Docker, no files, no clock.

:func:`reconcile` takes what the stack should run (:class:`Wanted`), the
recorded state, what Docker reports and who still holds the stack, and
returns :class:`Actions` for the orchestrator to perform under the state
lock. It is the whole of the acquire's judgement, so it is unit-tested with
plain data; the orchestrator only carries it out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from envkit.docker import labels
from envkit.docker.engine import Container
from envkit.errors import StackConflict
from envkit.stack.lease import Holder
from envkit.stack.state import ServiceState, StackState
from envkit.stack.wanted import Wanted


@dataclass
class Actions:
    """What to do, in this order: remove containers, record ``state``."""

    state: StackState  # the state to record, with this holder's claims
    remove: list[str] = field(default_factory=list)  # containers: dead, unhealthy, strays or replaced
    replace: list[str] = field(default_factory=list)  # changed inputs: what is replaced, and why
    warnings: list[str] = field(default_factory=list)
    network: bool = False  # this holder starts a service: the network must exist

    def claimed(self, me: str) -> list[str]:
        """The services this holder is to start."""
        return [n for n, s in self.state.services.items() if s.status == "starting" and s.owner == me]


def reconcile(
    state: StackState | None,
    containers: Sequence[Container],
    live: Sequence[Holder],
    wanted: Mapping[str, Wanted],
    me: str,
    *,
    stack_id: str,
    project: str,
    root: str,
    dependents: Mapping[str, Sequence[str]] | None = None,
) -> Actions:
    """Bring the recorded state in line with Docker, and claim what ``me`` must start.

    - A service whose container died, vanished, or that Docker's own health
      check calls unhealthy while nobody holds the stack, is forgotten (its
      container removed), so it is started again; a service being started by
      a live holder is left alone, one whose starter died loses its owner.
    - A container the state does not account for is a stray, and removed.
    - If a wanted service runs with other inputs, it is replaced when nobody
      holds the stack, and so are the services that depend on it (through
      ``dependents``: service -> the services that depend on it), the rest of
      the stack stays up; under live holders :class:`StackConflict` names them.
    - Each wanted service that is absent or failed is claimed by ``me``.
    """
    actions = Actions(state=StackState(stack=stack_id, project=project, root=root))
    if state is not None:
        state = copy.deepcopy(state)
        _sync(state, containers, live, actions)
        changes = _changes(state, wanted)
        if changes and live:
            raise StackConflict(stack_id, changes, [h.describe() for h in live])
        _replace(state, wanted, dependents or {}, actions)
        actions.state = state
    for name, want in wanted.items():
        current = actions.state.services.get(name)
        if current is None or current.status == "failed":
            actions.state.services[name] = ServiceState(
                inputs=want.inputs, image=want.image, status="starting", owner=me
            )
        elif current.status == "starting" and current.owner is None:
            current.owner = me  # recovered from labels, or its starter died: check it again
    actions.network = bool(actions.claimed(me))
    return actions


def _sync(
    state: StackState, containers: Sequence[Container], live: Sequence[Holder], actions: Actions
) -> None:
    live_ids = {h.id for h in live}
    by_id = {c.id: c for c in containers}
    for name, svc in list(state.services.items()):
        if svc.status == "starting" and svc.owner in live_ids:
            continue
        if svc.status == "starting" and svc.owner is not None:
            svc.owner = None  # its starter died: the next holder to need it takes over
        c = by_id.get(svc.container or "")
        if svc.status == "completed" and c is not None and c.exit_code == 0:
            continue  # a one-shot that ran: it is not run again
        # Docker's own health check says unhealthy, or it was taken off the stack's network:
        # restart it, unless others hold the stack.
        broken = c is not None and (c.unhealthy or not c.attached(state.network))
        unhealthy = broken and not live
        if c is None or not c.running or unhealthy:
            if svc.status == "healthy":
                how = (
                    "stopped"
                    if c is None or not c.running
                    else ("unhealthy" if c.unhealthy else "disconnected")
                )
                actions.warnings.append(
                    f"service {name!r} of stack {state.stack} is {how}; it will be started again"
                )
            if c is not None:
                actions.remove.append(c.id)
            if svc.status != "failed":
                del state.services[name]
    known = {svc.container for svc in state.services.values()}
    for cid, c in by_id.items():
        owner = state.services.get(c.labels.get(labels.SERVICE, ""))
        if cid in known or (owner is not None and owner.status == "starting" and owner.owner in live_ids):
            continue
        actions.remove.append(cid)
    actions.remove = sorted(set(actions.remove))


def _replace(
    state: StackState, wanted: Mapping[str, Wanted], dependents: Mapping[str, Sequence[str]], actions: Actions
) -> None:
    """Forget the services whose inputs changed, and those that depend on them (their containers
    removed): they are claimed and started again."""
    changed = [n for n in wanted if n in state.services and _changed(state.services[n], wanted[n])]
    actions.replace = [_change(state, wanted, n) for n in changed]
    todo, seen = list(changed), set(changed)
    while todo:
        for dependent in dependents.get(todo.pop(), ()):
            if dependent not in seen:
                seen.add(dependent)
                todo.append(dependent)
                if dependent in state.services:
                    actions.replace.append(f"service {dependent!r} depends on a replaced one")
    for name in sorted(seen):
        svc = state.services.pop(name, None)
        if svc is not None and svc.container:
            actions.remove.append(svc.container)
    actions.remove = sorted(set(actions.remove))


def _changed(svc: ServiceState, want: Wanted) -> bool:
    return svc.status != "failed" and svc.inputs != want.inputs


def _change(state: StackState, wanted: Mapping[str, Wanted], name: str) -> str:
    return f"service {name!r} changed ({wanted[name].summary}; running: {state.services[name].image})"


def _changes(state: StackState, wanted: Mapping[str, Wanted]) -> list[str]:
    return [
        _change(state, wanted, n)
        for n in wanted
        if n in state.services and _changed(state.services[n], wanted[n])
    ]
