"""Just enough of the Dockerfile grammar to find and rewrite image references.

envkit needs three things from a Dockerfile: the images it builds on (``FROM``
and ``COPY/ADD --from``), its stage names (to validate ``target`` and to tell a
stage from an image), and a copy in which references to other images of the
stack point at their content-addressed tags. Everything else is left to the
builder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the logical line after the keyword, continuations joined
    first_line: int  # 0-based physical line numbers
    last_line: int


@dataclass(frozen=True)
class Reference:
    """An image named by the Dockerfile: ``FROM ref`` or ``COPY --from=ref``."""

    ref: str
    instruction: int  # index into Dockerfile.instructions


@dataclass(frozen=True)
class Dockerfile:
    text: str
    instructions: tuple[Instruction, ...]
    escape: str

    @property
    def stages(self) -> tuple[str, ...]:
        """Stage names in order (``AS name``), lower-cased as the builder does."""
        names = (_stage_name(i.args) for i in self.instructions if i.keyword == "FROM")
        return tuple(name for name in names if name is not None)

    def references(self, build_args: Mapping[str, str]) -> tuple[Reference, ...]:
        """Images this Dockerfile reads, with global ``ARG``s substituted.

        Names of earlier stages and ``scratch`` are not images and are left out.
        """
        global_args: dict[str, str] = {}
        seen_from = False
        stages: set[str] = set()
        stage_count = 0
        refs: list[Reference] = []
        for index, ins in enumerate(self.instructions):
            if ins.keyword == "ARG" and not seen_from:
                for arg, default in _arg_declarations(ins.args):
                    value = build_args.get(arg, default)
                    if value is not None:
                        global_args[arg] = value
            elif ins.keyword == "FROM":
                seen_from = True
                words = _from_words(ins.args)
                if words:
                    ref = _substitute(words[0], global_args)
                    if ref.lower() not in stages and ref != "scratch":
                        refs.append(Reference(ref, index))
                    stage = _stage_name(ins.args)
                    if stage is not None:
                        stages.add(stage)
                stage_count += 1
            elif ins.keyword in ("COPY", "ADD"):
                source = _copy_from(ins.args)
                if source is None:
                    continue
                if source.lower() in stages or (source.isdigit() and int(source) < stage_count):
                    continue
                refs.append(Reference(source, index))
        return tuple(refs)

    def rewrite(
        self,
        build_args: Mapping[str, str],
        replace: Mapping[str, str],
        *,
        labels: Mapping[str, str] | None = None,
        target: str | None = None,
    ) -> str:
        """Return the text with each reference in ``replace`` pointing at its new name.

        A rewritten instruction is joined onto its first line, and the lines it
        spanned stay as blank lines so that the builder's line numbers still
        match the user's file. ``labels`` become one ``LABEL`` instruction at
        the end of the ``target`` stage (the last stage by default): the
        classic builder runs a container per label it is handed, but only one
        for a single instruction.
        """
        lines = self.text.split("\n")
        for reference in self.references(build_args):
            if reference.ref not in replace:
                continue
            ins = self.instructions[reference.instruction]
            new = replace[reference.ref]
            if ins.keyword == "FROM":
                words = _from_words(ins.args)
                flags = [w for w in ins.args.split() if w.startswith("--")]
                rest = words[1:]
                args = " ".join([*flags, new, *rest])
            else:
                args = re.sub(r"--from=\S+", f"--from={new}", ins.args, count=1)
            lines[ins.first_line] = f"{ins.keyword} {args}"
            for n in range(ins.first_line + 1, ins.last_line + 1):
                lines[n] = ""
        if labels:
            end = self._stage_end(target)
            pairs = " ".join(f'"{k}"="{v}"' for k, v in sorted(labels.items()))
            lines[end] = f"{lines[end]}\nLABEL {pairs}"
        return "\n".join(lines)

    def _stage_end(self, target: str | None) -> int:
        """The last physical line of the ``target`` stage (of the last stage if None)."""
        ends: list[tuple[str | None, int]] = []
        for ins in self.instructions:
            if ins.keyword == "FROM":
                ends.append((_stage_name(ins.args), ins.last_line))
            elif ends:
                ends[-1] = (ends[-1][0], ins.last_line)
        if target is not None:
            for name, last in ends:
                if name == target.lower():
                    return last
        return ends[-1][1] if ends else self.instructions[-1].last_line


def parse(text: str) -> Dockerfile:
    """Split a Dockerfile into logical instructions (continuations, comments, directives)."""
    lines = text.split("\n")
    escape = "\\"
    start = 0
    # Parser directives are only recognised before any other line.
    for start, line in enumerate(lines):  # noqa: B007 - start is used after the loop
        match = _DIRECTIVE.match(line.strip())
        if not match:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            escape = match.group(2)
    else:
        start = len(lines)

    instructions: list[Instruction] = []
    current: list[str] = []
    first = 0
    for number in range(start, len(lines)):
        stripped = lines[number].strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and (not stripped or stripped.startswith("#")):
            continue  # comments and blank lines inside a continuation are dropped
        if not current:
            first = number
        if stripped.endswith(escape):
            current.append(stripped[: -len(escape)])
            continue
        current.append(stripped)
        instructions.append(_instruction(" ".join(current), first, number))
        current = []
    if current:
        instructions.append(_instruction(" ".join(current), first, len(lines) - 1))
    return Dockerfile(text=text, instructions=tuple(instructions), escape=escape)


def _instruction(logical: str, first: int, last: int) -> Instruction:
    keyword, _, args = logical.strip().partition(" ")
    return Instruction(keyword.upper(), args.strip(), first, last)


def _from_words(args: str) -> list[str]:
    return [w for w in args.split() if not w.startswith("--")]


def _stage_name(from_args: str) -> str | None:
    words = _from_words(from_args)
    if len(words) >= 3 and words[-2].lower() == "as":
        return words[-1].lower()
    return None


def _copy_from(args: str) -> str | None:
    for word in args.split():
        if word.startswith("--from="):
            return word[len("--from=") :]
        if not word.startswith("--"):
            return None
    return None


def _arg_declarations(args: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for word in args.split():
        name, eq, default = word.partition("=")
        out.append((name, default.strip("\"'") if eq else None))
    return out


def _substitute(word: str, variables: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = variables.get(name, "")
        if match.group(2) == "-":
            return value or match.group(3)
        if match.group(2) == "+":
            return match.group(3) if value else ""
        return value

    return _VAR.sub(one, word)
