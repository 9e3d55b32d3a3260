"""The one rule for what happens when the last holder leaves (a release, or the reaper).

The stack stays until ``envkit down`` if any holder since it started asked to
keep it; else for the longest TTL any of them asked for; else for the grace.
A stack with a failed service, or with a grace of 0 and nothing asked for,
goes at once.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from envkit.stack.lease import Holder
from envkit.stack.state import StackState


class Outcome(str, enum.Enum):
    """What became of the stack when a holder left."""

    HELD = "held"  # others still hold it
    IDLE = "idle"  # nobody holds it; it goes after the grace or a TTL
    KEPT = "kept"  # nobody holds it; it stays until `envkit down`
    STOPPED = "stopped"  # it was torn down
    ABSENT = "absent"  # there was no stack (or no such holder)


@dataclass(frozen=True)
class Decision:
    stop: bool  # tear the stack down now
    keep: bool  # keep it until `envkit down`
    until: float | None  # else keep it until then (wall clock)

    @property
    def outcome(self) -> Outcome:
        if self.stop:
            return Outcome.STOPPED
        return Outcome.KEPT if self.keep else Outcome.IDLE


def decide(state: StackState, leavers: Sequence[Holder], grace: float, now: float) -> Decision:
    """What to do now that nobody holds the stack; ``leavers`` are the holders just gone."""
    keep = state.hold_keep or any(h.keep for h in leavers)
    ttls = [h.ttl for h in leavers if h.ttl is not None]
    if state.hold_ttl is not None:
        ttls.append(state.hold_ttl)
    failed = any(s.status == "failed" for s in state.services.values())
    if failed or (not keep and not ttls and grace == 0):
        return Decision(stop=True, keep=False, until=None)
    return Decision(stop=False, keep=keep, until=None if keep else now + (max(ttls) if ttls else grace))


def mark_idle(state: StackState, decision: Decision, now: float) -> None:
    """Record in ``state`` that the stack is idle since ``now``, as ``decision`` says."""
    state.idle_since = now
    state.idle_keep = decision.keep
    state.idle_until = decision.until


def still_idle(state: StackState, now: float) -> bool:
    """Whether the last holder's grace, TTL or keep still keeps the stack up."""
    if state.idle_since is None:
        return False
    return state.idle_keep or (state.idle_until is not None and now < state.idle_until)
