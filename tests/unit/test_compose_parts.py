"""The compose loader's parts on their own: YAML with compose's meaning, interpolation, dotenv
files, the merge rules; and a fuzz: whatever the files hold, the loader answers with a stack or
one ConfigError, never another exception."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envkit.config.compose import forms, merge, yamldoc
from envkit.config.compose.interpolation import InterpolationError, Substitution, read_dotenv
from envkit.config.compose.located import Located
from envkit.config.find import load
from envkit.errors import ConfigError

# --- YAML: compose reads 1.2; PyYAML's SafeLoader (1.1) does not --------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("22:22", "22:22"),  # YAML 1.1: 1342 (base 60)
        ("yes", "yes"),  # YAML 1.1: True
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("0123", "0123"),  # YAML 1.1: 83; YAML 1.2: 123; compose keeps what it says
        ("-0123", "-0123"),
        ("2024-01-01", "2024-01-01"),  # no dates
        ("true", True),
        ("False", False),
        ("~", None),
        ("null", None),
        ("", None),
        ("12", 12),
        ("0o17", 15),
        ("0x1F", 31),
        ("1.10", 1.1),
        ("'0123'", "0123"),
        ('"yes"', "yes"),
        ("!!str 12", "12"),
        ("!!int '12'", 12),
    ],
)
def test_plain_scalars_mean_what_compose_reads(text: str, value: Any) -> None:
    doc = yamldoc.read(Path("c.yaml"), f"v: {text}\n")
    assert doc.data["v"] == value
    assert type(doc.data["v"]) is type(value)


def test_numbers_become_strings_as_compose_writes_them() -> None:
    doc = yamldoc.read(Path("c.yaml"), "a: [1.10, 1e3, 1.5e-7, 3, true, 0.50, .inf]\n")
    assert [yamldoc.scalar_text(v) for v in doc.data["a"]] == [
        "1.1", "1000", "1.5e-07", "3", "true", "0.5", "+Inf",
    ]  # fmt: skip


def test_block_scalars_fold_and_keep_as_yaml_says() -> None:
    text = (
        'f: >-\n  sh -c "echo one\n  && echo two"\ng: >\n  a\n  b\n\n  c\nl: |\n  a\n  b\n'
        "k: >+\n  a\n  b\n\n"  # keep: the trailing blank line stays
        "m: >\n  a\n    indented\n  b\n"  # a more-indented line is not folded
        'e: "bell \\a"\n'  # a BEL written as an escape is the user's, and stays
    )
    doc = yamldoc.read(Path("c.yaml"), text)
    assert doc.data == {
        "f": 'sh -c "echo one && echo two"',
        "g": "a b\nc\n",
        "l": "a\nb\n",
        "k": "a b\n\n",
        "m": "a\n  indented\nb\n",
        "e": "bell \a",
    }


def test_anchors_merge_keys_and_lines() -> None:
    doc = yamldoc.read(
        Path("c.yaml"),
        "x-a: &a\n  image: a:1\n  env: {A: 1}\nx-b: &b\n  image: b:1\n  user: b\n"
        "services:\n  s:\n    <<: [*a, *b]\n    user: own\n",
    )
    assert doc.data["services"]["s"] == {"image": "a:1", "env": {"A": 1}, "user": "own"}
    assert doc.lines[("services", "s", "user")] == 10
    assert doc.lines[("services", "s")] == 8


def test_compose_tags_are_recorded_by_path() -> None:
    doc = yamldoc.read(Path("c.yaml"), "services:\n  s:\n    ports: !reset []\n    env: !override {A: 1}\n")
    assert doc.resets == {("services", "s", "ports")}
    assert doc.overrides == {("services", "s", "env")}
    assert doc.data["services"]["s"]["ports"] == []


# --- interpolation -----------------------------------------------------------------------------

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("template", "result"),
    [
        ("${SET}", "value"),
        ("$SET", "value"),
        ("$SET.x", "value.x"),
        ("${UNSET}", ""),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${UNSET-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${SET:+x}", "x"),
        ("${EMPTY:+x}", ""),
        ("${EMPTY+x}", "x"),
        ("${UNSET+x}", ""),
        ("${UNSET:-${SET}}", "value"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${SET:?never said}", "value"),
        ("$$SET", "$SET"),
        ("$${SET}", "${SET}"),
        ("cost: $5", "cost: $5"),
        ("a $ b", "a $ b"),
        ("${SET}${SET}", "valuevalue"),
        ("${UNSET:-a}}", "a}"),
    ],
)
def test_interpolation_is_compose_s(template: str, result: str) -> None:
    assert Substitution(ENV.get)(template) == result


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("${UNSET:?tell me}", "the variable UNSET is required but not set: tell me"),
        ("${EMPTY:?}", "the variable EMPTY is required but empty"),
        ("${UNSET?}", "the variable UNSET is required but not set"),
        ("${}", "invalid interpolation format ${}"),
        ("${1A}", "invalid interpolation format ${1A}"),
        ("${A B}", "invalid interpolation format ${A B}"),
        ("${UNCLOSED", "invalid interpolation format '${UNCLOSED': no closing brace"),
        ("${UNSET:-${INNER?inner}}", "the variable INNER is required but not set: inner"),
    ],
)
def test_interpolation_errors_say_what_is_wrong(template: str, problem: str) -> None:
    with pytest.raises(InterpolationError) as caught:
        Substitution(ENV.get)(template)
    assert caught.value.problem == problem


def test_unset_variables_are_remembered_for_a_note() -> None:
    sub = Substitution(ENV.get)
    sub("${A} $B ${C:-x} ${SET}")
    assert sub.unset == {"A", "B"}


def test_a_missing_required_variable_is_a_config_error_naming_it_and_the_file(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  db:\n    image: postgres:${PG_VERSION:?}\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, environ={})
    assert caught.value.file == tmp_path / "compose.yaml"
    assert caught.value.line == 3 and caught.value.key == "services.db.image"
    assert "PG_VERSION" in str(caught.value)
    assert load(tmp_path, environ={"PG_VERSION": "16"}).services["db"].image == "postgres:16"


def test_the_process_environment_wins_over_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAG=from-dotenv\nOTHER=${TAG}-x\n")
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: 'app:${TAG}'\n    user: $OTHER\n")
    assert load(tmp_path, environ={}).services["a"].image == "app:from-dotenv"
    config = load(tmp_path, environ={"TAG": "from-process"})
    assert config.services["a"].image == "app:from-process"
    assert config.services["a"].user == "from-process-x"  # .env's own ${TAG} sees the process too


# --- dotenv files ------------------------------------------------------------------------------


def test_dotenv_syntax(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text(
        "# a comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=1\n"
        "SPACED = around \n"
        "INLINE=a b # comment\n"
        "HASH=a#b\n"
        "SINGLE='no $PLAIN \\n here'\n"
        'DOUBLE="with $PLAIN\\nnew line \\"quoted\\""\n'
        'MULTI="one\n'
        'two"\n'
        "EMPTY=\n"
        "REF=${PLAIN}-${FROM_ENV:-none}\n"
        "PASSED\n"
        "ABSENT\n"
        'ESCAPED="\\$PLAIN"\n'
    )
    assert read_dotenv(path, {"PASSED": "p"}) == {
        "PLAIN": "value",
        "EXPORTED": "1",
        "SPACED": "around",
        "INLINE": "a b",
        "HASH": "a#b",
        "SINGLE": "no $PLAIN \\n here",
        "DOUBLE": 'with value\nnew line "quoted"',
        "MULTI": "one\ntwo",
        "EMPTY": "",
        "REF": "value-none",
        "PASSED": "p",
        "ESCAPED": "$PLAIN",
    }


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("A=1\nB C=2\n", 2, "'B C' is not a variable name"),
        ("A='open\n", 1, "never closed"),
        ('A="x" y\n', 1, "unexpected 'y'"),
        ("A=${B:?need B}\n", 1, "B is required"),
    ],
)
def test_dotenv_errors_name_the_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = tmp_path / ".env"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as caught:
        read_dotenv(path, {})
    assert caught.value.line == line and caught.value.file == path


# --- merging -----------------------------------------------------------------------------------


def doc(text: str, name: str = "c.yaml") -> Located:
    located = yamldoc.read(Path(name), text)
    forms.canonical(located)
    return located


def merged(*texts: str) -> dict[str, Any]:
    model: dict[str, Any] = {}
    for i, text in enumerate(texts):
        model = merge.merge(model, doc(text, f"{i}.yaml"))
    return model


def test_mappings_merge_and_scalars_replace() -> None:
    model = merged(
        "services:\n  a:\n    image: a:1\n    environment: [X=1, Y=2]\n"
        "    build: {context: ., args: {A: 1}}\n",
        "services:\n  a:\n    image: a:2\n    environment: {Y: 3, Z: 4}\n    build: {args: [B=2]}\n",
    )
    a = model["services"]["a"]
    assert a["image"] == "a:2"
    assert a["environment"] == {"X": "1", "Y": "3", "Z": "4"}
    assert a["build"] == {"context": ".", "args": {"A": "1", "B": "2"}}


def test_sequences_append_but_commands_replace() -> None:
    model = merged(
        "services:\n  a:\n    command: [x, y]\n    entrypoint: sh\n    dns: [1.1.1.1]\n"
        "    healthcheck: {test: [CMD, a], interval: 1s}\n",
        "services:\n  a:\n    command: [z]\n    entrypoint: [bash, -c]\n    dns: [8.8.8.8]\n"
        "    healthcheck: {test: [CMD, b]}\n",
    )
    a = model["services"]["a"]
    assert a["command"] == ["z"]
    assert a["entrypoint"] == ["bash", "-c"]
    assert a["dns"] == ["1.1.1.1", "8.8.8.8"]
    assert a["healthcheck"] == {"test": ["CMD", "b"], "interval": "1s"}


def test_unique_resources_merge_on_their_keys() -> None:
    model = merged(
        "services:\n  a:\n    ports: ['8080:80', '443']\n    volumes: [foo:/work, /cache]\n"
        "    secrets: [s1, {source: s2, target: /x}]\n    env_file: [a.env]\n",
        "services:\n  a:\n    ports: ['8080:80/tcp', '9000']\n    volumes: [bar:/work]\n"
        "    secrets: [{source: s3, target: s1}]\n    env_file: [{path: a.env, required: false}, b.env]\n",
    )
    a = model["services"]["a"]
    assert [(p["published"], p["target"]) for p in a["ports"]] == [("8080", 80), (None, 443), (None, 9000)]
    assert [(v.get("source"), v["target"]) for v in a["volumes"]] == [("bar", "/work"), (None, "/cache")]
    assert [s["source"] for s in a["secrets"]] == ["s3", "s2"]
    assert a["env_file"] == [{"path": "a.env", "required": False}, {"path": "b.env", "required": True}]


def test_reset_and_override() -> None:
    model = merged(
        "services:\n  a:\n    ports: ['80']\n    environment: {A: 1, B: 2}\n    labels: {x: 1}\n",
        "services:\n  a:\n    ports: !reset []\n    environment: {A: !reset null}\n"
        "    labels: !override {y: 2}\n",
    )
    a = model["services"]["a"]
    assert "ports" not in a
    assert a["environment"] == {"B": "2"}
    assert a["labels"] == {"y": "2"}


# --- the fuzz ----------------------------------------------------------------------------------

KEYS = [
    "services", "image", "build", "context", "ports", "environment", "depends_on", "condition",
    "healthcheck", "test", "volumes", "command", "networks", "secrets", "profiles", "env_file",
    "x-a", "<<", "name", "target", "tmpfs", "links", "deploy", "web", "db", "extends",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from(["22:22", "0123", "yes", "${A}", "${A:?}", "$$", "./x:/x:ro", "80:80", "[x", "*a"]),
    st.text(string.printable, max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=4),
    ),
    max_leaves=25,
)


def _yaml(value: Any, indent: int = 0) -> str:
    """A value as YAML (flow style where nested): junk in, but shaped like a compose file."""
    import json

    if isinstance(value, dict):
        return "\n".join(f"{' ' * indent}{json.dumps(str(k))}: {_flow(v)}" for k, v in value.items()) or "{}"
    return _flow(value)


def _flow(value: Any) -> str:
    import json

    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str) and value.startswith(("*", "[")):
        return value  # raw: an alias, a broken flow
    return json.dumps(value)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(value=values)
def test_any_shaped_compose_file_is_a_stack_or_one_config_error(tmp_path: Path, value: Any) -> None:
    (tmp_path / "compose.yaml").write_text(_yaml({"services": value} if isinstance(value, dict) else value))
    try:
        load(tmp_path, environ={"A": "1"})
    except ConfigError as err:
        assert str(err)


@FUZZ
@given(text=st.text(max_size=200))
def test_any_text_as_a_compose_file_is_a_stack_or_one_config_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "compose.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load(tmp_path, environ={})
    except ConfigError as err:
        assert str(err)


@FUZZ
@given(text=st.text(max_size=120))
def test_any_text_as_a_dotenv_file_is_values_or_one_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        read_dotenv(path, {"A": "1"})
    except ConfigError as err:
        assert str(err)
