"""Reconciliation as a pure function: recorded state + what Docker reports + live holders -> actions."""

from __future__ import annotations

import pytest

from envkit.docker import labels
from envkit.docker.engine import Container
from envkit.errors import StackConflict
from envkit.stack.lease import Holder
from envkit.stack.reconcile import reconcile
from envkit.stack.state import ServiceState, StackState
from envkit.stack.wanted import Wanted

SID = "demo-1234abcd"
ME = "me0000000000000"
WEB = Wanted(image="demo/web:aaaa", inputs="in-web", summary="image demo/web:aaaa")
DB = Wanted(image="postgres:16", inputs="in-db", summary="image postgres:16")


def holder(hid: str) -> Holder:
    return Holder(id=hid, kind="process", pid=123, started=1.0, host="h", command="pytest", since=0.0)


def container(
    cid: str,
    service: str,
    *,
    state: str = "running",
    status: str = "Up 5 seconds",
    networks: tuple[str, ...] = (SID,),
) -> Container:
    return Container(
        id=cid,
        name=f"{SID}-{service}",
        labels={labels.STACK: SID, labels.SERVICE: service},
        state=state,
        status=status,
        image="img",
        networks=networks,
    )


def recorded(**services: ServiceState) -> StackState:
    return StackState(stack=SID, project="demo", root="/p", network=SID, services=dict(services))


def healthy(inputs: str, cid: str) -> ServiceState:
    return ServiceState(inputs=inputs, image="img", status="healthy", container=cid, ports={"80": 40001})


def run(state, containers, live=(), wanted=None):  # type: ignore[no-untyped-def]
    return reconcile(
        state,
        containers,
        list(live),
        wanted or {"db": DB, "web": WEB},
        ME,
        stack_id=SID,
        project="demo",
        root="/p",
    )


def test_a_cold_stack_claims_every_wanted_service_and_needs_its_network() -> None:
    actions = run(None, [])
    assert actions.claimed(ME) == ["db", "web"]
    assert actions.network
    assert actions.remove == [] and actions.replace == []
    web = actions.state.services["web"]
    assert (web.status, web.owner, web.inputs, web.image) == ("starting", ME, "in-web", "demo/web:aaaa")


def test_a_healthy_stack_is_joined_without_any_action() -> None:
    state = recorded(db=healthy("in-db", "c1"), web=healthy("in-web", "c2"))
    actions = run(state, [container("c1", "db"), container("c2", "web")], live=[holder("other")])
    assert actions.claimed(ME) == []
    assert not actions.network and actions.remove == [] and actions.warnings == []
    assert actions.state == state


def test_the_input_state_is_not_changed() -> None:
    state = recorded(db=healthy("in-db", "c1"))
    before = repr(state)
    run(state, [])  # c1 is gone: the result forgets db, the input keeps it
    assert repr(state) == before


def test_a_service_whose_container_died_is_forgotten_removed_and_claimed_again() -> None:
    state = recorded(db=healthy("in-db", "c1"), web=healthy("in-web", "c2"))
    actions = run(state, [container("c1", "db", state="exited"), container("c2", "web")])
    assert actions.remove == ["c1"]
    assert actions.claimed(ME) == ["db"]
    assert any("'db'" in w and "stopped" in w for w in actions.warnings)


def test_a_vanished_container_is_claimed_again() -> None:
    state = recorded(db=healthy("in-db", "c1"), web=healthy("in-web", "c2"))
    actions = run(state, [container("c2", "web")])
    assert actions.claimed(ME) == ["db"] and actions.remove == []


def test_docker_unhealthy_restarts_only_when_nobody_holds_the_stack() -> None:
    state = recorded(db=healthy("in-db", "c1"), web=healthy("in-web", "c2"))
    sick = [container("c1", "db", status="Up 1 minute (unhealthy)"), container("c2", "web")]
    alone = run(state, sick)
    assert alone.remove == ["c1"] and alone.claimed(ME) == ["db"]
    assert any("unhealthy" in w for w in alone.warnings)
    held = run(state, sick, live=[holder("other")])
    assert held.remove == [] and held.claimed(ME) == []


def test_a_container_taken_off_the_stacks_network_is_replaced_when_nobody_holds_the_stack() -> None:
    state = recorded(db=healthy("in-db", "c1"), web=healthy("in-web", "c2"))
    cut = [container("c1", "db", networks=("bridge",)), container("c2", "web")]
    alone = run(state, cut)
    assert alone.remove == ["c1"] and alone.claimed(ME) == ["db"]
    assert any("'db'" in w and "disconnected" in w for w in alone.warnings)
    held = run(state, cut, live=[holder("other")])
    assert held.remove == [] and held.claimed(ME) == []


def test_a_service_another_live_holder_is_starting_is_left_to_it() -> None:
    starting = ServiceState(inputs="in-db", image="img", status="starting", owner="other", container="c1")
    actions = run(recorded(db=starting), [container("c1", "db")], live=[holder("other")], wanted={"db": DB})
    assert actions.claimed(ME) == [] and actions.remove == []
    assert actions.state.services["db"].owner == "other"


def test_a_service_whose_starter_died_is_taken_over() -> None:
    starting = ServiceState(inputs="in-db", image="img", status="starting", owner="dead", container="c1")
    actions = run(recorded(db=starting), [container("c1", "db")], wanted={"db": DB})
    assert actions.claimed(ME) == ["db"]
    assert actions.state.services["db"].container == "c1"  # adopted if it still runs
    assert actions.remove == []


def test_containers_the_state_does_not_know_are_strays() -> None:
    state = recorded(db=healthy("in-db", "c1"))
    actions = run(
        state, [container("c1", "db"), container("c9", "db"), container("c8", "web")], wanted={"db": DB}
    )
    assert actions.remove == ["c8", "c9"]


def test_a_failed_service_is_claimed_again_and_its_container_removed() -> None:
    failed = ServiceState(inputs="in-db", image="img", status="failed", container="c1")
    actions = run(recorded(db=failed), [container("c1", "db", state="exited")], wanted={"db": DB})
    assert actions.remove == ["c1"]
    assert actions.claimed(ME) == ["db"]


def test_changed_inputs_replace_that_service_of_an_unheld_stack_and_keep_the_rest() -> None:
    state = recorded(db=healthy("old-db", "c1"), web=healthy("in-web", "c2"))
    actions = run(state, [container("c1", "db"), container("c2", "web")])
    assert len(actions.replace) == 1 and "'db' changed" in actions.replace[0]
    assert actions.remove == ["c1"]
    assert actions.claimed(ME) == ["db"]  # web keeps running as it is
    assert actions.state.services["web"].container == "c2"
    assert actions.network


def test_a_changed_service_takes_its_dependents_with_it() -> None:
    state = recorded(db=healthy("old-db", "c1"), web=healthy("in-web", "c2"))
    actions = reconcile(
        state,
        [container("c1", "db"), container("c2", "web")],
        [],
        {"db": DB, "web": WEB},
        ME,
        stack_id=SID,
        project="demo",
        root="/p",
        dependents={"db": ("web",), "web": ()},
    )
    assert actions.remove == ["c1", "c2"]
    assert sorted(actions.claimed(ME)) == ["db", "web"]
    assert any("'web' depends on a replaced one" in r for r in actions.replace)


def test_changed_inputs_under_live_holders_is_a_conflict_naming_them() -> None:
    state = recorded(db=healthy("old-db", "c1"))
    with pytest.raises(StackConflict) as caught:
        run(state, [container("c1", "db")], live=[holder("other")], wanted={"db": DB})
    assert caught.value.stack == SID
    assert any("'db' changed" in c for c in caught.value.changes)
    assert any("pytest" in h for h in caught.value.holders)


def test_a_service_not_wanted_is_not_compared() -> None:
    state = recorded(db=healthy("old-db", "c1"), web=healthy("in-web", "c2"))
    actions = run(
        state, [container("c1", "db"), container("c2", "web")], live=[holder("x")], wanted={"web": WEB}
    )
    assert actions.replace == [] and actions.claimed(ME) == []
