"""Which untagged images `envkit gc` removes, and what a failed classic build removes, decided
against a fake engine (tests/integration/test_gc_leftovers.py does it against real ones)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envkit.docker import labels
from envkit.docker.engine import Image
from envkit.errors import DaemonError, daemon_error
from envkit.images import archive, build, gc
from envkit.progress import Silent

STACK = "shop"
KEY = "k" * 64
OURS = {labels.PROJECT: STACK, labels.IMAGE: "web", labels.KEY: KEY, labels.BUILDER: "classic"}
TAG = build.image_tag(STACK, "web", KEY)


class Engine:
    """Images by ID (``labels``, ``tags``, ``parent``); ``remove_image`` answers ``refuse``."""

    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}
        self.removed: list[str] = []
        self.refuse: DaemonError | None = None

    def add(
        self, image_id: str, image_labels: dict[str, str], *, tags: list[str] | None = None, parent: str = ""
    ) -> Image:
        self.images[image_id] = {
            "Id": image_id,
            "RepoTags": tags or [],
            "Parent": parent,
            "Config": {"Labels": dict(image_labels)},
        }
        return Image(image_id, tuple(tags or ()), dict(image_labels))

    @contextlib.contextmanager
    def bounded(self, seconds: float) -> Iterator[None]:
        yield

    def inspect_image(self, ref: str) -> dict[str, Any] | None:
        return self.images.get(ref)

    def image_labels(self, ref: str) -> dict[str, str] | None:
        found = self.images.get(ref)
        return None if found is None else dict(found["Config"]["Labels"])

    def remove_image(self, ref: str) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.removed.append(ref)
        self.images.pop(ref, None)


def collect(engine: Engine, image: Image, lock_dir: Path, *, dry_run: bool = False) -> gc.GcResult:
    result = gc.GcResult()
    gc._leftover(engine, STACK, image, lock_dir, dry_run=dry_run, result=result)  # type: ignore[arg-type]
    return result


def test_a_leftover_of_this_stacks_build_is_removed_and_reported(tmp_path: Path) -> None:
    engine = Engine()
    engine.add("sha256:base", {})
    image = engine.add("sha256:left", OURS, parent="sha256:base")
    result = collect(engine, image, tmp_path)
    assert (result.removed, result.kept_in_use, result.untagged) == (["sha256:left"], [], ["sha256:left"])
    assert engine.removed == ["sha256:left"]


def test_a_dry_run_reports_it_and_removes_nothing(tmp_path: Path) -> None:
    engine = Engine()
    image = engine.add("sha256:left", OURS)
    result = collect(engine, image, tmp_path, dry_run=True)
    assert result.removed == ["sha256:left"] and engine.removed == []


def test_one_a_container_uses_is_kept_and_said_so(tmp_path: Path) -> None:
    engine = Engine()
    image = engine.add("sha256:left", OURS)
    engine.refuse = daemon_error("DELETE /images/sha256:left answered 409: in use", 409)
    result = collect(engine, image, tmp_path)
    assert (result.removed, result.kept_in_use, result.untagged) == ([], ["sha256:left"], ["sha256:left"])


def test_any_other_refusal_is_an_error(tmp_path: Path) -> None:
    engine = Engine()
    image = engine.add("sha256:left", OURS)
    engine.refuse = DaemonError("DELETE /images/sha256:left answered 500: broken", 500)
    with pytest.raises(DaemonError):
        collect(engine, image, tmp_path)


@pytest.mark.parametrize(
    "case",
    ["labels-inherited-from-its-parent", "tagged-since-listed", "no-key-label", "another-stack-now"],
)
def test_what_is_left(tmp_path: Path, case: str) -> None:
    engine = Engine()
    if case == "labels-inherited-from-its-parent":  # a step of a build on the stack's own image
        engine.add("sha256:parent", {**OURS, labels.BUILDER: "assembler"}, tags=[TAG])
        image = engine.add("sha256:left", OURS, parent="sha256:parent")
    elif case == "tagged-since-listed":
        image = engine.add("sha256:left", OURS)
        engine.images["sha256:left"]["RepoTags"] = ["mine:1"]
    elif case == "no-key-label":  # envkit's builders always add it
        image = engine.add("sha256:left", {labels.PROJECT: STACK})
    else:
        image = engine.add("sha256:left", OURS)
        engine.images["sha256:left"]["Config"]["Labels"][labels.PROJECT] = "other"
    result = collect(engine, image, tmp_path)
    assert (result.removed, result.kept_in_use, result.untagged, engine.removed) == ([], [], [], [])


def test_one_whose_build_holds_its_lock_is_left_and_gc_holds_the_lock_while_it_removes(
    tmp_path: Path,
) -> None:
    engine = Engine()
    image = engine.add("sha256:left", OURS)
    with build._machine_lock(TAG, "web", Silent(), tmp_path):
        assert collect(engine, image, tmp_path).removed == []
    with gc._build_lock(tmp_path, TAG) as free:
        assert free
        with gc._build_lock(tmp_path, TAG) as again:
            assert not again  # a build of that tag now waits for gc
    assert collect(engine, image, tmp_path).removed == ["sha256:left"]


@pytest.mark.parametrize("case", ["leftover", "tagged", "other-labels", "engine-fails", "gone"])
def test_a_failed_classic_build_discards_only_its_own_untagged_image(case: str) -> None:
    engine = Engine()
    engine.add("sha256:made", OURS, tags=["x:1"] if case == "tagged" else None)
    if case == "other-labels":
        engine.images["sha256:made"]["Config"]["Labels"][labels.KEY] = "another"
    elif case == "engine-fails":
        engine.refuse = DaemonError("DELETE answered 500", 500)
    elif case == "gone":
        engine.images.clear()
    removed = archive.discard(engine, "sha256:made", OURS)  # type: ignore[arg-type]
    assert removed == (case == "leftover")
    assert engine.removed == (["sha256:made"] if case == "leftover" else [])
