"""Property-based fuzz of the files envkit reads: a stack file, a recipe, a state file and a
holder file of any shape give a valid result or a clear EnvkitError; never another exception,
never a hang (each example has a deadline)."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envkit.config import recipe
from envkit.config.find import load
from envkit.config.model import StackConfig
from envkit.errors import ConfigError, StateCorrupt
from envkit.stack.lease import Holder
from envkit.stack.state import StateFile

KEYS = st.sampled_from(
    [
        "stack",
        "images",
        "services",
        "name",
        "pull",
        "context",
        "dockerfile",
        "recipe",
        "args",
        "target",
        "platform",
        "image",
        "ports",
        "environment",
        "command",
        "depends_on",
        "healthcheck",
        "start_timeout",
        "cmd",
        "http",
        "tcp",
        "port",
        "app",
        "db",
        "web",
        "base",
    ]
) | st.text(min_size=1, max_size=6)
SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["app", "db", "redis:7", "../x", "/health", "FROM", "", "images/app", "nan"])
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=24,
)
STACK_NAME = st.sampled_from(["demo", "app", "Bad Name", "x" * 70, ""])


@st.composite
def stack_files(draw: st.DrawFn) -> dict[str, Any]:
    """Stack files near enough to valid that validation goes deep, and far enough to break it."""
    doc: dict[str, Any] = draw(st.dictionaries(KEYS, VALUES, max_size=4))
    if draw(st.booleans()):
        doc["stack"] = {"name": draw(STACK_NAME), **draw(st.dictionaries(KEYS, VALUES, max_size=2))}
    if draw(st.booleans()):
        doc["images"] = {"app": draw(st.dictionaries(KEYS, VALUES, max_size=3))}
    if draw(st.booleans()):
        doc["services"] = {
            draw(st.sampled_from(["db", "web", "app"])): draw(st.dictionaries(KEYS, VALUES, max_size=5))
            for _ in range(draw(st.integers(0, 3)))
        }
    return doc


def load_text(text: str) -> StackConfig:
    """``load`` of a project whose envkit.toml is ``text`` (with an images/app/Dockerfile)."""
    with tempfile.TemporaryDirectory(prefix="envkit-fuzz-") as tmp:
        root = Path(tmp)
        (root / "images" / "app").mkdir(parents=True)
        (root / "images" / "app" / "Dockerfile").write_text("FROM busybox\nCOPY . /app/\n")
        (root / "envkit.toml").write_text(text)
        return load(root, environ={})


FUZZ = settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(stack_files())
def test_a_stack_file_of_any_shape_is_valid_or_one_config_error(doc: dict[str, Any]) -> None:
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # not representable as TOML (e.g. a NaN key): not a file
        return
    try:
        assert isinstance(load_text(text), StackConfig)
    except ConfigError as err:
        assert str(err) and err.fix


@FUZZ
@given(st.text(max_size=200))
def test_any_text_as_a_stack_file_is_valid_or_one_config_error(text: str) -> None:
    try:
        load_text(text)
    except ConfigError as err:
        assert "fix:" in str(err)


@FUZZ
@given(st.dictionaries(st.sampled_from(["debian", "packages", "image", "x"]), VALUES, max_size=3))
def test_a_recipe_of_any_shape_is_valid_or_one_config_error(doc: dict[str, Any]) -> None:
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return
    with contextlib.suppress(ConfigError):
        recipe.parse(Path("/p/recipe.toml"), text, "images.base")


@FUZZ
@given(
    st.dictionaries(
        KEYS | st.sampled_from(["schema", "stack", "root", "project", "services", "created"]),
        VALUES,
        max_size=8,
    )
)
def test_a_state_file_of_any_shape_reads_back_or_is_state_corrupt(doc: dict[str, Any]) -> None:
    doc.setdefault("schema", 1)
    with tempfile.TemporaryDirectory(prefix="envkit-fuzz-state-") as tmp:
        (Path(tmp) / "state.json").write_text(json.dumps(doc))
        with contextlib.suppress(StateCorrupt):
            StateFile(Path(tmp)).read()


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["id", "kind", "pid", "started", "host", "command", "since", "services", "keep", "ttl", "expires"]
        ),
        VALUES,
        max_size=11,
    )
)
def test_a_holder_record_of_any_shape_is_a_holder_or_a_value_error(doc: dict[str, Any]) -> None:
    with contextlib.suppress(ValueError):
        Holder.from_json(doc)
