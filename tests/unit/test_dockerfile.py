"""Finding and rewriting the images a Dockerfile builds on."""

from __future__ import annotations

from envkit.images.dockerfile import parse


def refs(text: str, args: dict[str, str] | None = None) -> list[str]:
    return [r.ref for r in parse(text).references(args or {})]


def test_from_copy_from_stages_and_scratch() -> None:
    text = (
        "FROM --platform=linux/amd64 base AS build\n"
        "RUN make\n"
        "FROM scratch\n"
        "COPY --from=build /out /out\n"
        "COPY --from=0 /x /x\n"
        "COPY --from=tools:1.2 /bin/tool /tool\n"
        "FROM build\n"
    )
    assert refs(text) == ["base", "tools:1.2"]
    assert parse(text).stages == ("build",)


def test_global_args_substitute_in_from_and_build_args_override() -> None:
    text = "ARG BASE=alpine\nARG TAG\nFROM ${BASE}:${TAG:-3.20}\nARG BASE\n"
    assert refs(text) == ["alpine:3.20"]
    assert refs(text, {"BASE": "debian", "TAG": "12"}) == ["debian:12"]


def test_continuations_comments_and_escape_directive() -> None:
    text = "# escape=`\n# a comment\nFROM `\n  # inside\n  base `\n  AS one\nRUN echo \\\n"
    parsed = parse(text)
    assert parsed.escape == "`"
    assert [i.keyword for i in parsed.instructions] == ["FROM", "RUN"]
    assert refs(text) == ["base"]
    assert parsed.stages == ("one",)


def test_rewrite_keeps_line_numbers_and_adds_one_label_to_the_target_stage() -> None:
    text = "FROM base \\\n  AS one\nRUN a\nFROM other\nCOPY --from=base /a /b\n"
    out = parse(text).rewrite(
        {}, {"base": "s/base:0123"}, labels={"envkit.key": "k", "envkit.stack": "s"}, target="one"
    )
    lines = out.split("\n")
    assert lines[0] == "FROM s/base:0123 AS one"
    assert lines[1] == ""
    assert lines[2] == "RUN a"
    assert lines[3] == 'LABEL "envkit.key"="k" "envkit.stack"="s"'
    assert lines[4] == "FROM other"
    assert lines[5] == "COPY --from=s/base:0123 /a /b"


def test_label_goes_to_the_last_stage_without_target() -> None:
    out = parse("FROM a AS x\nFROM b\nRUN c\n").rewrite({}, {}, labels={"k": "v"})
    assert out.rstrip("\n").split("\n")[-1] == 'LABEL "k"="v"'
