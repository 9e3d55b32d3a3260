"""What a load that fails removes (envkit.images.archive.load), decided with a fake engine: only
an untagged image this load made, carrying this build's labels; never one that was there
before (the same inputs give the same image), another stack's, or a tagged one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from envkit.errors import BuildError, EngineStreamError
from envkit.images import archive

OURS = {"envkit.project": "demo", "envkit.image": "app", "envkit.key": "k1"}
CONFIG = archive.config_bytes({"architecture": "amd64", "os": "linux", "config": {"Labels": OURS}})
CONFIG_ID = archive.image_id(CONFIG)
MANIFEST_ID = archive.image_id(archive.manifest_bytes(CONFIG, []))


class FakeEngine:
    """Images by ID (labels, tags); ``load`` makes ``made`` appear, then fails or reports."""

    def __init__(
        self, before: dict[str, dict[str, Any]], made: dict[str, dict[str, Any]], report: str | None
    ):
        self.images = dict(before)
        self.made = made
        self.report = report
        self.removed: list[str] = []

    @contextlib.contextmanager
    def bounded(self, seconds: float) -> Iterator[None]:
        yield

    def inspect_image(self, ref: str) -> dict[str, Any] | None:
        found = self.images.get(ref)
        if found is None:
            return None
        return {"Id": ref, "RepoTags": found.get("tags") or [], "Config": {"Labels": found["labels"]}}

    def load(self, f: IO[bytes], size: int, *, stall: float | None) -> str | None:
        self.images.update(self.made)
        if self.report == "fail":
            raise EngineStreamError("docker load failed: layer not found", reason="layer not found")
        return self.report

    def remove_image(self, ref: str) -> None:
        self.removed.append(ref)
        self.images.pop(ref, None)


def load_with(engine: FakeEngine, tmp_path: Path) -> str:
    return archive.load(
        engine,  # type: ignore[arg-type]
        "app",
        CONFIG,
        layers=[],
        new_layers={},
        workdir=tmp_path,
        stall=5,
    )


def test_a_refused_load_removes_the_untagged_image_it_made(tmp_path: Path) -> None:
    engine = FakeEngine({}, {MANIFEST_ID: {"labels": OURS}}, "fail")
    with pytest.raises(BuildError, match="docker load of the image envkit wrote was refused"):
        load_with(engine, tmp_path)
    assert engine.removed == [MANIFEST_ID]


def test_an_image_that_was_there_before_the_load_is_never_removed(tmp_path: Path) -> None:
    engine = FakeEngine({CONFIG_ID: {"labels": OURS, "tags": []}}, {}, "fail")
    with pytest.raises(BuildError):
        load_with(engine, tmp_path)
    assert engine.removed == []
    assert CONFIG_ID in engine.images


@pytest.mark.parametrize(
    "made",
    [
        {"labels": {**OURS, "envkit.project": "other"}},  # another stack's
        {"labels": {}},  # no labels of envkit's
        {"labels": OURS, "tags": ["someone/else:1"]},  # tagged meanwhile
    ],
    ids=["another-stack", "unlabelled", "tagged"],
)
def test_a_failed_load_leaves_what_is_not_this_builds_untagged_image(
    tmp_path: Path, made: dict[str, Any]
) -> None:
    engine = FakeEngine({}, {CONFIG_ID: made}, "fail")
    with pytest.raises(BuildError):
        load_with(engine, tmp_path)
    assert engine.removed == []


def test_a_load_reporting_another_image_removes_only_its_own_candidates(tmp_path: Path) -> None:
    stranger = "sha256:" + "f" * 64
    engine = FakeEngine({stranger: {"labels": OURS}}, {CONFIG_ID: {"labels": OURS}}, stranger)
    with pytest.raises(BuildError, match="neither the config's digest"):
        load_with(engine, tmp_path)
    assert engine.removed == [CONFIG_ID]
    assert stranger in engine.images


def test_a_load_returns_the_id_the_engine_reports(tmp_path: Path) -> None:
    engine = FakeEngine({}, {MANIFEST_ID: {"labels": OURS}}, MANIFEST_ID)
    assert load_with(engine, tmp_path) == MANIFEST_ID
    assert engine.removed == []
