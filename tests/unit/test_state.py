"""The state file: read back field by field, a wrong shape is StateCorrupt, and recovery from labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envkit.docker import labels
from envkit.docker.engine import Container, Network
from envkit.errors import StateCorrupt, StateError
from envkit.stack.state import ServiceState, StackState, StateFile, recover


def good() -> dict[str, object]:
    state = StackState(stack="demo-1", project="demo", root="/p", network="demo-1")
    state.services["db"] = ServiceState(
        inputs="i", image="postgres:16", status="healthy", container="c1", ports={"5432": 40001}
    )
    return state.to_json()


def test_a_state_round_trips(tmp_path: Path) -> None:
    file = StateFile(tmp_path)
    state = StackState.from_json(good())
    file.save(state)
    assert file.read() == state


def test_no_file_is_no_stack(tmp_path: Path) -> None:
    assert StateFile(tmp_path).read() is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.update(stack=7), "stack is not a string"),
        (lambda d: d.update(created="yesterday"), "created is not a finite number"),
        (lambda d: d.update(idle_until=float("nan")), "idle_until is not a finite number"),
        (lambda d: d.update(hold_keep="yes"), "hold_keep"),
        (lambda d: d.update(services=[]), "services is not a table"),
        (lambda d: d["services"]["db"].update(status="sleeping"), "status 'sleeping'"),
        (lambda d: d["services"]["db"].update(ports={"5432": "x"}), "ports"),
        (lambda d: d["services"]["db"].update(error={"reason": 1}), "error"),
        (lambda d: d["services"]["db"].update(owner=5), "owner is not a string"),
        (lambda d: d.update(surprise=1), "unknown field 'surprise'"),
        (lambda d: d.update(schema=99), "not an envkit state file of this version"),
    ],
)
def test_a_state_of_the_wrong_shape_is_state_corrupt_naming_the_field(
    tmp_path: Path, change, words: str
) -> None:  # type: ignore[no-untyped-def]
    data = good()
    change(data)
    (tmp_path / "state.json").write_text(json.dumps(data))
    with pytest.raises(StateCorrupt) as caught:
        StateFile(tmp_path).read()
    assert words in str(caught.value)
    assert str(tmp_path / "state.json") in str(caught.value) and "fix:" in str(caught.value)


@pytest.mark.parametrize("text", ["", "{", "[]", "null", "\xff\xfe"])
def test_a_state_file_that_is_not_json_is_state_corrupt(tmp_path: Path, text: str) -> None:
    (tmp_path / "state.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(StateCorrupt):
        StateFile(tmp_path).read()


def test_an_unchanged_state_is_not_written_again(tmp_path: Path) -> None:
    file = StateFile(tmp_path)
    data = good()
    file.save(StackState.from_json(data))
    before = file.path.stat().st_mtime_ns, file.path.stat().st_ino
    file.save(StackState.from_json(data))
    assert (file.path.stat().st_mtime_ns, file.path.stat().st_ino) == before


def test_recovery_reads_the_project_and_the_checkout_from_the_labels() -> None:
    common = {labels.STACK: "demo-1", labels.PROJECT: "demo", labels.ROOT: "/home/u/demo"}
    containers = [
        Container(
            "c1",
            "demo-1-db",
            {**common, labels.SERVICE: "db", labels.INPUTS: "in-db"},
            "running",
            "Up",
            "pg",
            {"5432": 40001},
            created=1700000100.0,
        ),
        Container("c2", "demo-1-web", {**common, labels.SERVICE: "web"}, "exited", "Exited (1)", "web"),
    ]
    state = recover("demo-1", containers, [Network("n1", "demo-1", common)])
    assert (state.stack, state.project, state.root, state.network) == (
        "demo-1",
        "demo",
        "/home/u/demo",
        "demo-1",
    )
    assert list(state.services) == ["db"]  # a stopped container is not recovered
    db = state.services["db"]
    assert (db.status, db.owner, db.inputs, db.container, db.ports) == (
        "starting",
        None,
        "in-db",
        "c1",
        {"5432": 40001},
    )


@pytest.mark.parametrize("operation", ["read", "save", "remove"])
def test_a_state_file_that_is_a_directory_is_state_corrupt_naming_it_and_the_fix(
    tmp_path: Path, operation: str
) -> None:
    """Not an IsADirectoryError (a traceback in the CLI), and not "run it again" (it fails again)."""
    file = StateFile(tmp_path)
    file.path.mkdir()
    with pytest.raises(StateCorrupt) as caught:
        if operation == "save":
            file.save(StackState.from_json(good()))
        else:
            getattr(file, operation)()
    message = str(caught.value)
    assert caught.value.path == file.path and "is a directory" in message
    assert f"fix: remove that directory (`rm -r {file.path}`)" in message
    assert file.path.is_dir()  # what it holds is for its owner to look at


def test_a_state_file_that_cannot_be_removed_is_a_state_error(tmp_path: Path) -> None:
    file = StateFile(tmp_path / "gone")  # a directory that is not there is no stack, but:
    file.remove()
    file = StateFile(tmp_path / "not-a-dir")
    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    with pytest.raises(StateError) as caught:
        file.remove()
    assert str(file.path) in str(caught.value) and "cannot remove it" in str(caught.value)
