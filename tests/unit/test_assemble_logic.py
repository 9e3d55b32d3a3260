"""The assembler's pure parts: Dockerfile words, which builder an image gets, durations, ports,
healthchecks, Go's glob, layer trees with whiteouts, and deterministic layers and configs."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from envkit.config.model import ImageSpec
from envkit.images import archive
from envkit.images.assemble import (
    CannotAssemble,
    _configure,
    _duration,
    _glob,
    _healthcheck,
    _Image,
    _ports,
    verdict,
)
from envkit.images.facts import FactsCache, ImageFacts, Node, apply_layer
from envkit.images.words import WordError, json_list, pairs, split, word, words

ENV = {"SET": "yes", "EMPTY": "", "DIR": "/opt/x"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$DIR/bin", "/opt/x/bin"),
        ("${DIR}bin", "/opt/xbin"),
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY-fallback}", ""),
        ("${UNSET-fallback}", "fallback"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET:+alt}", ""),
        ("${UNSET:-$DIR}", "/opt/x"),
        ("'$DIR'", "$DIR"),
        ('"$DIR a"', "/opt/x a"),
        ("\\$DIR", "$DIR"),
        ('"a\\"b"', 'a"b'),
        ('"a\\nb"', "a\\nb"),  # inside double quotes only \" \$ \\ are escapes
        ("a\\ b", "a b"),
        ("$", "$"),
        ("cost$", "cost$"),
        ("$1", "$1"),
    ],
)
def test_word_substitutes_and_unquotes_as_the_builder_does(raw: str, expected: str) -> None:
    assert word(raw, ENV) == expected


def test_the_escape_directive_changes_the_escape_character() -> None:
    assert word("a`$DIR", ENV, "`") == "a$DIR"
    assert word("C:\\path", ENV, "`") == "C:\\path"


@pytest.mark.parametrize("raw", ['"open', "'open", "${DIR", "${DIR:?x}", "${}"])
def test_words_the_builder_refuses_are_word_errors(raw: str) -> None:
    with pytest.raises(WordError):
        words(raw, ENV)


def test_split_keeps_quoted_whitespace_and_pairs_read_both_forms() -> None:
    assert split('a "b c" d\\ e') == ["a", '"b c"', "d\\ e"]
    assert pairs('A=1 B="two words" C=$DIR', ENV) == [("A", "1"), ("B", "two words"), ("C", "/opt/x")]
    assert pairs("GREETING hello  big world", ENV) == [("GREETING", "hello  big world")]
    with pytest.raises(WordError):
        pairs("A=1 B", ENV)
    with pytest.raises(WordError):
        pairs("LONELY", ENV)


def test_json_list_is_the_exec_form_only() -> None:
    assert json_list('["a", "b c"]') == ["a", "b c"]
    assert json_list("[not json") is None
    assert json_list('["a", 1]') is None
    assert json_list("echo hi") is None


def spec(tmp_path: Path, dockerfile: str, target: str | None = None) -> ImageSpec:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    return ImageSpec(
        name="app",
        context=tmp_path,
        dockerfile=tmp_path / "Dockerfile",
        dockerfile_text=dockerfile,
        args={},
        target=target,
        platform=None,
        parents=(),
        externals=(),
    )


@pytest.mark.parametrize(
    ("dockerfile", "target", "why"),
    [
        ("FROM a\nCOPY . /\nCMD x\n", None, None),
        ("FROM scratch\nCOPY a /a\n", None, None),
        ("FROM a\nRUN true\n", None, "RUN at line 2"),
        ("FROM a\nONBUILD RUN x\n", None, "ONBUILD at line 2"),
        ("FROM a\nCOPY --from=b x /\n", None, "COPY --from at line 2"),
        ("FROM a\nADD https://example.com/x /\n", None, "ADD of a URL"),
        ("FROM a\nCOPY --chmod=755 x /\n", None, "COPY --chmod"),
        ("FROM a AS one\nRUN x\nFROM a AS two\nCOPY . /\n", "two", None),
        ("FROM a AS one\nRUN x\nFROM one AS two\nCOPY . /\n", "two", "RUN at line 2"),
        ("FROM a AS one\nCOPY . /\nFROM a AS two\nRUN x\n", "one", None),
        ("FROM a AS one\nCOPY . /\nFROM a AS two\nRUN x\n", None, "RUN at line 4"),
    ],
)
def test_verdict_picks_the_assembler_only_when_the_target_chain_needs_no_container(
    tmp_path: Path, dockerfile: str, target: str | None, why: str | None
) -> None:
    found = verdict(spec(tmp_path, dockerfile, target))
    if why is None:
        assert found is None
    else:
        assert found is not None and why in found


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("0", 0),
        ("30s", 30 * 10**9),
        ("1m30s", 90 * 10**9),
        ("500ms", 5 * 10**8),
        ("1h", 3600 * 10**9),
        ("1.5s", 15 * 10**8),
    ],
)
def test_durations_are_go_durations(text: str, nanoseconds: int) -> None:
    assert _duration(text) == nanoseconds


@pytest.mark.parametrize("text", ["30", "s", "1x", "1s2"])
def test_a_bad_duration_is_left_to_the_classic_builder(text: str) -> None:
    with pytest.raises(CannotAssemble):
        _duration(text)


def test_ports_and_ranges() -> None:
    assert list(_ports("80")) == ["80/tcp"]
    assert list(_ports("53/UDP")) == ["53/udp"]
    assert list(_ports("8000-8002")) == ["8000/tcp", "8001/tcp", "8002/tcp"]
    with pytest.raises(CannotAssemble):
        list(_ports("http"))


def test_healthcheck_forms() -> None:
    assert _healthcheck("NONE") == {"Test": ["NONE"]}
    assert _healthcheck('CMD ["true"]') == {"Test": ["CMD", "true"]}
    assert _healthcheck("--retries=3 --interval=5s CMD curl -f x || exit 1") == {
        "Test": ["CMD-SHELL", "curl -f x || exit 1"],
        "Retries": 3,
        "Interval": 5 * 10**9,
    }
    with pytest.raises(CannotAssemble):
        _healthcheck("--start-interval=1s CMD true")


PARENT_ENV = ["PATH=/usr/bin:/bin", "A=1", "B=2", "C=3"]


@pytest.mark.parametrize(
    ("instructions", "expected"),
    [
        # a replaced PATH keeps its place before the parent's other variables
        (["PATH=/x:$PATH"], ["PATH=/x:/usr/bin:/bin", "A=1", "B=2", "C=3"]),
        (["A=a$A", "B=b${B}", "C=$C:c"], ["PATH=/usr/bin:/bin", "A=a1", "B=b2", "C=3:c"]),
        # one line: overrides in place, new names appended in order, every $VAR the value before
        (["N=new B=x$B M=$N A=$B"], ["PATH=/usr/bin:/bin", "A=2", "B=x2", "C=3", "N=new", "M="]),
        # a name set twice on one line, new or inherited: the first place, the last value
        (["X=1 Y=2 X=3 C=4 C=5"], ["PATH=/usr/bin:/bin", "A=1", "B=2", "C=5", "X=3", "Y=2"]),
        # the legacy form
        (["B two $A words"], ["PATH=/usr/bin:/bin", "A=1", "B=two 1 words", "C=3"]),
        # a variable added, then replaced by a later ENV
        (["Z=1", "A=0", "Z=2$Z"], ["PATH=/usr/bin:/bin", "A=0", "B=2", "C=3", "Z=21"]),
    ],
)
def test_env_replaces_in_place_and_appends_new_names(instructions: list[str], expected: list[str]) -> None:
    image = _Image(config={"config": {"Env": list(PARENT_ENV)}}, tree={}, diff_ids=[], history=[])
    for args in instructions:
        _configure(image, "ENV", args, "\\")
    assert image.run["Env"] == expected


def test_env_replaces_only_the_first_of_duplicate_names_and_reads_the_last() -> None:
    """A parent whose Env names a variable twice (the classic builder never writes one, but a loaded
    image may have it): Docker 20.10's classic builder replaces the first in place, keeps the
    other, and substitutes the last one's value."""
    image = _Image(config={"config": {"Env": ["A=1", "B=2", "A=dup"]}}, tree={}, diff_ids=[], history=[])
    _configure(image, "ENV", "C=$A", "\\")
    _configure(image, "ENV", "A=new$A", "\\")
    assert image.run["Env"] == ["A=newdup", "B=2", "A=dup", "C=dup"]


def test_env_wins_over_an_arg_of_the_same_name() -> None:
    image = _Image(config={"config": {"Env": ["A=1", "B=2"]}}, tree={}, diff_ids=[], history=[])
    image.env = {"B": "arg", "D": "argd"}
    _configure(image, "ENV", "A=$B B=new C=$B E=$D", "\\")
    assert image.run["Env"] == ["A=2", "B=new", "C=2", "E=argd"]


def test_env_on_a_config_without_env() -> None:
    image = _Image(config={}, tree={}, diff_ids=[], history=[])
    _configure(image, "ENV", "A=1 B=$A", "\\")
    assert image.run["Env"] == ["A=1", "B="]


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.txt", "a.txt", True),
        ("*.txt", "d/a.txt", False),
        ("d/*.py", "d/a.py", True),
        ("?.txt", "ab.txt", False),
        ("[ab].txt", "b.txt", True),
        ("[^ab].txt", "c.txt", True),
        ("[^ab].txt", "a.txt", False),
        ("\\*.txt", "*.txt", True),
        ("\\*.txt", "a.txt", False),
    ],
)
def test_copy_wildcards_are_gos_filepath_match(pattern: str, path: str, matches: bool) -> None:
    assert bool(_glob(pattern).fullmatch(path)) is matches


def _entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    return info


def test_layers_apply_with_whiteouts_and_opaque_directories() -> None:
    tree: dict[str, Node] = {}
    apply_layer(
        tree,
        [
            _entry("etc", tarfile.DIRTYPE, 0o755),
            _entry("etc/a"),
            _entry("etc/b"),
            _entry("var", tarfile.DIRTYPE),
        ],
    )
    apply_layer(tree, [_entry("var/x"), _entry("etc/.wh.a")])
    assert set(tree) == {"etc", "etc/b", "var", "var/x"}
    apply_layer(tree, [_entry("var", tarfile.DIRTYPE), _entry("var/.wh..wh..opq"), _entry("var/y")])
    assert set(tree) == {"etc", "etc/b", "var", "var/y"}
    apply_layer(tree, [_entry("var")])  # a directory replaced by a file takes its contents away
    assert set(tree) == {"etc", "etc/b", "var"} and tree["var"].kind == "f"
    facts = ImageFacts({"config": {}}, tree)
    assert ImageFacts.from_json(facts.to_json()) == facts


def test_a_layer_is_the_same_bytes_from_the_same_entries(tmp_path: Path) -> None:
    def write(path: Path) -> tuple[str, bytes]:
        with archive.LayerWriter(path) as layer:
            info = _entry("a.txt")
            info.size = 2
            layer.add(info, io.BytesIO(b"hi"))
        return layer.diff_id, path.read_bytes()

    first, second = write(tmp_path / "1.tar"), write(tmp_path / "2.tar")
    assert first == second
    assert first[0] == "sha256:" + __import__("hashlib").sha256(first[1]).hexdigest()


def test_the_config_is_written_one_way_and_named_by_its_digest() -> None:
    one = archive.config_bytes({"b": 1, "a": {"y": [1, 2], "x": "é"}})
    two = archive.config_bytes({"a": {"x": "é", "y": [1, 2]}, "b": 1})
    assert one == two == '{"a":{"x":"é","y":[1,2]},"b":1}'.encode()
    assert archive.image_id(one).startswith("sha256:") and len(archive.image_id(one)) == 71
    assert archive.timestamp(1704067200) == "2024-01-01T00:00:00Z"


def _saved_image() -> list[bytes]:
    """A docker save stream of a one-layer image: a directory and a file."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.addfile(_entry("etc", tarfile.DIRTYPE, 0o755))
        info = _entry("etc/passwd")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"root"))
    out = io.BytesIO()
    documents = {
        "manifest.json": b'[{"Config": "c.json", "RepoTags": null, "Layers": ["l/layer.tar"]}]',
        "c.json": b'{"config": {"Env": ["A=1"]}}',
    }
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in [*documents.items(), ("l/layer.tar", layer.getvalue())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = out.getvalue()
    return [raw[i : i + 1000] for i in range(0, len(raw), 1000)]


class _Saving:
    def __init__(self) -> None:
        self.saves = 0

    def save(self, image: str, *, stall: float | None) -> Iterator[bytes]:
        self.saves += 1
        return iter(_saved_image())


def test_facts_are_read_once_from_docker_save_then_from_the_cache(tmp_path: Path) -> None:
    cache, daemon = FactsCache(tmp_path), _Saving()
    facts = cache.get(daemon, "sha256:abc", stall=None)  # type: ignore[arg-type]
    assert facts.config == {"config": {"Env": ["A=1"]}}
    assert facts.tree == {"etc": Node("d", 0o755, 0, 0), "etc/passwd": Node("f", 0o644, 0, 0)}
    assert cache.get(daemon, "sha256:abc", stall=None) == facts  # type: ignore[arg-type]
    assert daemon.saves == 1
    (tmp_path / "images" / "abc.json").write_text("{not json")  # a broken cache file: read again
    assert cache.get(daemon, "sha256:abc", stall=None) == facts  # type: ignore[arg-type]
    assert daemon.saves == 2


def test_the_facts_cache_keeps_the_most_recently_used(tmp_path: Path) -> None:
    import os

    from envkit.images import facts as facts_module

    cache = FactsCache(tmp_path)
    for n in range(facts_module.KEEP + 5):
        cache.put(f"sha256:{n:04d}", ImageFacts({}, {}))
        os.utime(tmp_path / "images" / f"{n:04d}.json", (1000 + n, 1000 + n))
    cache.put("sha256:last", ImageFacts({}, {}))
    kept = {p.stem for p in (tmp_path / "images").glob("*.json")}
    assert len(kept) == facts_module.KEEP
    assert "last" in kept and "0000" not in kept and f"{facts_module.KEEP + 4:04d}" in kept


@pytest.mark.parametrize(
    ("platform", "fields"),
    [
        ("linux/amd64", {"architecture": "amd64", "os": "linux"}),
        ("linux/arm64/v8", {"architecture": "arm64", "os": "linux", "variant": "v8"}),
    ],
)
def test_a_scratch_image_names_the_platforms_architecture_and_variant_apart(
    tmp_path: Path, platform: str, fields: dict[str, str]
) -> None:
    from envkit.images.assemble import Assembler
    from envkit.images.digest import Inputs

    assembler = Assembler(
        None,  # type: ignore[arg-type]  (FROM scratch asks the engine nothing)
        spec(tmp_path, "FROM scratch\n"),
        Inputs("FROM scratch\n", {}, None, platform, {}, {}, {}),
        parents={},
        labels={},
        facts=None,  # type: ignore[arg-type]
        platform=platform,
        stall=None,
    )
    config = assembler._base("scratch").config
    assert {k: config[k] for k in ("architecture", "os", "variant") if k in config} == fields
    assert list(config)[:2] == ["architecture", "os"]
