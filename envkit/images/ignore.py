"""Docker's ``.dockerignore`` rules, exactly as Docker applies them.

The behaviour is that of moby/patternmatcher, the matcher the docker CLI,
BuildKit and the daemon share, and of the ignore-file reader in front of it.
This module implements that behaviour itself (no Docker code is used or
imported); ``tests/unit/test_ignore_rules.py`` holds the upstream test tables.

Reading (:func:`read_patterns`): a line ends at ``\\n`` (one ``\\r`` before it
is dropped), a UTF-8 byte-order mark may open the file, a line that starts with
``#`` is a comment, each pattern is trimmed and cleaned like Go's
``filepath.Clean`` (``a/./b/`` is ``a/b``), ``!`` marks an exception, and a
leading ``/`` is dropped.

Matching (:class:`IgnoreRules`): a pattern must pass the syntax check of Go's
``filepath.Match``; Docker then turns it into a regular expression (``*`` and
``?`` never cross ``/``, ``**`` crosses any number of directories, ``\\``
escapes the next character, ``[...]`` is a class, ``[^...]`` its negation,
and, as Docker leaves them unescaped, ``|`` and ``{n,m}`` are an alternation
and a counted repetition), or, when that is enough, into a plain comparison:
equal, starts with (``dir/**``) or ends with (``**/name``, ``**.log``). The
regular expression is in Go's RE2 syntax, whose escapes and classes differ from
Python's (``\\d``, ``\\b``, ``\\Q...\\E``, ``[[:alpha:]]``, ``\\pL``): it is
parsed here with Go's rules, and what Go would refuse to compile is refused
here too. A path is left out when the last pattern that matches it, or one of
its parent directories, is not an exception.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TypeAlias

from envkit.errors import ConfigError

#: bufio.Scanner's token limit: Docker cannot read a line of this many bytes or more.
MAX_LINE_BYTES = 64 * 1024

# Go's unicode.IsSpace, which strings.TrimSpace trims (Python's strip() also trims \x1c-\x1f).
_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
_BOM = "\ufeff"
_MAX_RUNE = 0x10FFFF

EXACT, PREFIX, SUFFIX, REGEXP = "exact", "prefix", "suffix", "regexp"


def _trim(text: str) -> str:
    return text.strip(_SPACE)


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` on a ``/``-separated path (Python's normpath keeps ``//a``)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def read_patterns(text: str, source: Path | str = ".dockerignore") -> list[tuple[int, str]]:
    """The patterns of an ignore file's ``text``, each with its line number, as Docker reads them.

    A line Docker cannot read (:data:`MAX_LINE_BYTES` or longer) is a
    :class:`ConfigError` naming ``source`` and the line. The patterns are not
    checked here: :class:`IgnoreRules` does that.
    """
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # a final newline ends the last line; it does not start another
    patterns = []
    for number, raw in enumerate(lines, 1):
        size = len(raw.encode("utf-8"))
        if size >= MAX_LINE_BYTES:
            raise ConfigError(
                source,
                f"line {number}",
                f"the line is {size:,} bytes long; Docker reads lines of at most "
                f"{MAX_LINE_BYTES - 1:,} bytes (bufio.Scanner: token too long)",
                "shorten the line",
            )
        line = raw[:-1] if raw.endswith("\r") else raw
        if number == 1 and line.startswith(_BOM):
            line = line[1:]
        if line.startswith("#"):  # a comment only in the first column: " #x" is a pattern
            continue
        pattern = _trim(line)
        if not pattern:
            continue
        negated = pattern.startswith("!")
        if negated:
            pattern = _trim(pattern[1:])
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append((number, "!" + pattern if negated else pattern))
    return patterns


class _Rejected(Exception):
    """A pattern Docker refuses: why (``reason``), what Docker says, and what to do instead."""

    def __init__(self, reason: str, docker: str, fix: str) -> None:
        super().__init__(reason, docker, fix)
        self.reason = reason
        self.docker = docker
        self.fix = fix


_SYNTAX = "syntax error in pattern"  # Go's filepath.ErrBadPattern, what Docker prints


def _unclosed() -> _Rejected:
    return _Rejected(
        'opens a character class with "[" that is never closed',
        _SYNTAX,
        'close the class with "]", or write a literal "[" as "\\["',
    )


def _empty_class() -> _Rejected:
    return _Rejected(
        'has a character class that is empty or starts with "]"',
        _SYNTAX,
        'put at least one character between "[" and "]", and write a literal "]" in a class as "\\]"',
    )


def _stray_dash() -> _Rejected:
    return _Rejected(
        'has a "-" in a character class that does not stand between two characters',
        _SYNTAX,
        'write a range as "a-z", and a literal "-" in a class as "\\-"',
    )


def _dangling_backslash() -> _Rejected:
    return _Rejected(
        'ends with a "\\" that escapes nothing',
        _SYNTAX,
        'remove it, or write a literal backslash as "\\\\"',
    )


# --- the syntax check of Go's filepath.Match, which Docker runs on every pattern ---------------


def _check_glob(pattern: str) -> None:
    """Raise :class:`_Rejected` where ``filepath.Match(pattern, ".")`` fails.

    Go checks every chunk (the text between unbracketed ``*``) whether or not
    it matches, so the check does not depend on the name matched.
    """
    rest = pattern
    while rest:
        rest = rest.lstrip("*")
        in_class = False
        end = 0
        while end < len(rest):
            char = rest[end]
            if char == "\\":
                if end + 1 < len(rest):
                    end += 1
            elif char == "[":
                in_class = True
            elif char == "]":
                in_class = False
            elif char == "*" and not in_class:
                break
            end += 1
        _check_chunk(rest[:end])
        rest = rest[end:]


def _check_chunk(chunk: str) -> None:
    i = 0
    while i < len(chunk):
        char = chunk[i]
        if char == "[":
            i += 1
            if i < len(chunk) and chunk[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < len(chunk) and chunk[i] == "]" and ranges > 0:
                    i += 1
                    break
                i = _class_member(chunk, i, first=ranges == 0, upper=False)
                if chunk[i] == "-":
                    i = _class_member(chunk, i + 1, first=False, upper=True)
                ranges += 1
        elif char == "\\":
            if i + 1 >= len(chunk):
                raise _dangling_backslash()
            i += 2
        else:
            i += 1


def _class_member(chunk: str, i: int, first: bool, upper: bool) -> int:
    """Go's getEsc: one (possibly escaped) character of a class, which must not end the pattern."""
    if i >= len(chunk):
        raise _unclosed()
    if chunk[i] == "-" or (chunk[i] == "]" and upper):
        raise _stray_dash()
    if chunk[i] == "]":
        raise _empty_class() if first else _unclosed()
    if chunk[i] == "\\":
        i += 1
        if i >= len(chunk):
            raise _dangling_backslash()
    i += 1
    if i >= len(chunk):
        raise _unclosed()
    return i


# --- the regular expression Docker builds from a pattern ----------------------------------------


def translate(pattern: str) -> tuple[str, str]:
    """How Docker matches the cleaned ``pattern`` (without ``!``): the kind of match, and the
    regular expression (Go syntax) it builds, which only a :data:`REGEXP` match uses.

    :data:`EXACT` compares the path with the pattern, :data:`PREFIX` checks the
    path starts with the pattern less its final ``**``, :data:`SUFFIX` that it
    ends with the pattern less its leading ``**`` (or, for ``**/name``, is ``name``).
    """
    regexp = ["^"]
    kind = EXACT
    # Docker reads the pattern with Go's text/scanner, which skips a byte-order mark that opens it.
    i = 1 if pattern.startswith(_BOM) else 0
    step = 0
    while i < len(pattern):
        char = pattern[i]
        i += 1
        if char == "*":
            if i < len(pattern) and pattern[i] == "*":
                i += 1
                if i < len(pattern) and pattern[i] == "/":
                    i += 1
                if i == len(pattern):
                    if kind == EXACT:
                        kind = PREFIX
                    else:
                        regexp.append(".*")
                        kind = REGEXP
                else:
                    regexp.append("(.*/)?")
                    kind = REGEXP
                if step == 0:
                    kind = SUFFIX
            else:
                regexp.append("[^/]*")
                kind = REGEXP
        elif char == "?":
            regexp.append("[^/]")
            kind = REGEXP
        elif char in ".+()$":  # Go's bitmap of what to escape has no room for "|", "{" and "}"
            regexp.append("\\" + char)
        elif char == "\\":
            if i < len(pattern):
                regexp.append("\\" + pattern[i])
                i += 1
                kind = REGEXP
            else:
                regexp.append("\\")
        elif char in "[]":
            regexp.append(char)
            kind = REGEXP
        else:
            regexp.append(char)
        step += 1
    if kind == REGEXP:
        regexp.append("$")
    return kind, "".join(regexp)


# --- Go's regular expressions (regexp/syntax with the Perl flags regexp.Compile uses) ----------

Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Set:
    """One character in ``ranges`` (sorted, disjoint, inclusive code point ranges)."""

    ranges: Ranges


@dataclass(frozen=True)
class _Cat:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Alt:
    alternatives: tuple[_Node, ...]


@dataclass(frozen=True)
class _Repeat:
    """``item`` from ``low`` to ``high`` times (-1: no limit); ``counted`` for ``{n,m}``."""

    item: _Node
    low: int
    high: int
    counted: bool


@dataclass(frozen=True)
class _Assert:
    """A zero-width test: ``begin`` or ``end`` of the text, ``word`` or ``notword`` boundary."""

    kind: str


_Node: TypeAlias = "_Set | _Cat | _Alt | _Repeat | _Assert"


class _GoSyntaxError(Exception):
    def __init__(self, code: str, expr: str) -> None:
        super().__init__(code, expr)
        self.code = code
        self.expr = expr


def _normalise(ranges: list[tuple[int, int]]) -> Ranges:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _negate(ranges: Ranges) -> Ranges:
    negated = []
    next_lo = 0
    for lo, hi in ranges:
        if next_lo <= lo - 1:
            negated.append((next_lo, lo - 1))
        next_lo = hi + 1
    if next_lo <= _MAX_RUNE:
        negated.append((next_lo, _MAX_RUNE))
    return tuple(negated)


def _group(*pairs: int) -> Ranges:
    return tuple((pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2))


_DIGIT = _group(0x30, 0x39)
_PERL_SPACE = _group(0x9, 0xA, 0xC, 0xD, 0x20, 0x20)
_WORD = _group(0x30, 0x39, 0x41, 0x5A, 0x5F, 0x5F, 0x61, 0x7A)
_PERL = {
    "\\d": _DIGIT,
    "\\D": _negate(_DIGIT),
    "\\s": _PERL_SPACE,
    "\\S": _negate(_PERL_SPACE),
    "\\w": _WORD,
    "\\W": _negate(_WORD),
}
_POSIX_CLASSES = {
    "alnum": _group(0x30, 0x39, 0x41, 0x5A, 0x61, 0x7A),
    "alpha": _group(0x41, 0x5A, 0x61, 0x7A),
    "ascii": _group(0x0, 0x7F),
    "blank": _group(0x9, 0x9, 0x20, 0x20),
    "cntrl": _group(0x0, 0x1F, 0x7F, 0x7F),
    "digit": _DIGIT,
    "graph": _group(0x21, 0x7E),
    "lower": _group(0x61, 0x7A),
    "print": _group(0x20, 0x7E),
    "punct": _group(0x21, 0x2F, 0x3A, 0x40, 0x5B, 0x60, 0x7B, 0x7E),
    "space": _group(0x9, 0xD, 0x20, 0x20),
    "upper": _group(0x41, 0x5A),
    "word": _WORD,
    "xdigit": _group(0x30, 0x39, 0x41, 0x46, 0x61, 0x66),
}
_POSIX = {f"[:{name}:]": ranges for name, ranges in _POSIX_CLASSES.items()}
_POSIX.update({f"[:^{name}:]": _negate(ranges) for name, ranges in _POSIX_CLASSES.items()})
# Go's unicode.Categories up to Go 1.24 (Go 1.25 also takes aliases, Cn, LC, and any letter case).
_CATEGORIES = frozenset(
    {"C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd"}
    | {"Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl"}
    | {"Zp", "Zs"}
)
_ANY: Ranges = ((0, _MAX_RUNE),)
_NOT_NEWLINE: Ranges = ((0, 9), (11, _MAX_RUNE))
_MAX_REPEAT = 1000  # Go's limit on a counted repetition, and on the product of nested ones


@cache
def _unicode_table(name: str) -> Ranges | None:
    """Go's ``\\p{name}``: ``Any`` or a general category (Go's ``C`` has no unassigned code point).

    The categories are Python's ``unicodedata``, whose Unicode version may differ
    from that of the Go that built Docker for code points assigned since.
    """
    if name == "Any":
        return _ANY
    if name not in _CATEGORIES:
        return None
    import unicodedata  # only a pattern with \p needs it

    ranges: list[tuple[int, int]] = []
    for code in range(_MAX_RUNE + 1):
        category = unicodedata.category(chr(code))
        if category == name or (len(name) == 1 and category[0] == name and category != "Cn"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return tuple(ranges)


def _literal(char: str) -> _Set:
    return _Set(((ord(char), ord(char)),))


def _alternation(alternatives: list[_Node], items: list[_Node]) -> _Node:
    current = _Cat(tuple(items))
    return _Alt((*alternatives, current)) if alternatives else current


def _number(text: str, i: int) -> tuple[int, int] | None:
    """Go's parseInt at ``text[i]``: decimal digits, no leading zero; -1 when too big."""
    end = i
    while end < len(text) and text[end] in "0123456789":
        end += 1
    if end == i or (end - i >= 2 and text[i] == "0"):
        return None
    value = int(text[i:end])
    return (-1 if value >= 100_000_000 else value), end


def _counts(text: str, i: int) -> tuple[int, int, int] | None:
    """Go's parseRepeat at ``text[i] == "{"``: ``{n}``, ``{n,}`` (max -1) or ``{n,m}``, and
    where it ends; None when it is not one (the ``{`` is then a literal)."""
    parsed = _number(text, i + 1)
    if parsed is None:
        return None
    low, i = parsed
    if i >= len(text):
        return None
    if text[i] != ",":
        high = low
    else:
        i += 1
        if i >= len(text):
            return None
        if text[i] == "}":
            high = -1
        else:
            parsed = _number(text, i)
            if parsed is None:
                return None
            high, i = parsed
            if high < 0:
                low = -1
    if i >= len(text) or text[i] != "}":
        return None
    return low, high, i + 1


def _repeat_is_valid(node: _Node, limit: int) -> bool:
    """Go's repeatIsValid: nested counted repetitions may not multiply past ``limit`` copies."""
    if isinstance(node, _Repeat):
        if node.counted:
            if node.high == 0:
                return True
            most = node.low if node.high < 0 else node.high
            if most > limit:
                return False
            if most > 0:
                limit //= most
        return _repeat_is_valid(node.item, limit)
    if isinstance(node, _Cat):
        return all(_repeat_is_valid(item, limit) for item in node.items)
    if isinstance(node, _Alt):
        return all(_repeat_is_valid(item, limit) for item in node.alternatives)
    return True


class _GoParser:
    """Go's regexp/syntax parser, for the expressions Docker's patterns can become.

    Flags as ``regexp.Compile`` sets them (``Perl``): ``^`` and ``$`` match only
    at the ends of the text, ``.`` does not match a newline and ``[^...]`` does,
    Perl's escapes, ``\\Q...\\E`` and ``\\pN`` are known. Docker escapes a
    pattern's ``.+()$`` but not its ``|{}``: ``a|b`` is an alternation and
    ``a{2}`` a counted repetition. A pattern cannot produce ``(?`` (its ``(``
    are escaped): it is refused.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def parse(self) -> _Node:
        text = self.text
        # A frame per open group: its finished alternatives, and the items of the current one.
        frames: list[tuple[list[_Node], list[_Node]]] = [([], [])]
        last_repeat = -1
        i = 0
        while i < len(text):
            repeat = -1
            char = text[i]
            alternatives, items = frames[-1]
            counts = _counts(text, i) if char == "{" else None
            if char == "(":
                if text.startswith("(?", i):
                    raise _GoSyntaxError("unsupported group", text[i:])
                frames.append(([], []))
                i += 1
            elif char == ")":
                if len(frames) == 1:
                    raise _GoSyntaxError("unexpected )", text)
                frames.pop()
                frames[-1][1].append(_alternation(alternatives, items))
                i += 1
            elif char == "|":
                alternatives.append(_Cat(tuple(items)))
                items.clear()
                i += 1
            elif char in "^$":
                items.append(_Assert("begin" if char == "^" else "end"))
                i += 1
            elif char == ".":
                items.append(_Set(_NOT_NEWLINE))
                i += 1
            elif char == "[":
                node, i = self._class(i)
                items.append(node)
            elif char in "*+?" or counts is not None:
                start = i
                if counts is not None:
                    low, high, i = counts
                    if low < 0 or low > _MAX_REPEAT or high > _MAX_REPEAT or 0 <= high < low:
                        raise _GoSyntaxError("invalid repeat count", text[start:i])
                else:
                    low, high = {"*": (0, -1), "+": (1, -1), "?": (0, 1)}[char]
                    i += 1
                if i < len(text) and text[i] == "?":
                    i += 1  # non-greedy: the same set of matches
                if last_repeat >= 0:
                    raise _GoSyntaxError("invalid nested repetition operator", text[last_repeat:i])
                if not items:
                    raise _GoSyntaxError("missing argument to repetition operator", text[start:i])
                items[-1] = _Repeat(items[-1], low, high, counts is not None)
                if (
                    counts is not None
                    and max(low, high) >= 2
                    and not _repeat_is_valid(items[-1], _MAX_REPEAT)
                ):
                    raise _GoSyntaxError("invalid repeat count", text[start:i])
                repeat = start
            elif char == "\\":
                i = self._backslash(i, items)
            else:
                items.append(_literal(char))
                i += 1
            last_repeat = repeat
        if len(frames) != 1:
            raise _GoSyntaxError("missing closing )", text)
        return _alternation(*frames[0])

    def _backslash(self, i: int, items: list[_Node]) -> int:
        text = self.text
        if i + 1 < len(text):
            after = text[i + 1]
            if after in "AbBz":
                kinds = {"A": "begin", "b": "word", "B": "notword", "z": "end"}
                items.append(_Assert(kinds[after]))
                return i + 2
            if after == "C":
                raise _GoSyntaxError("invalid escape sequence", "\\C")
            if after == "Q":  # everything up to \E, or to the end, is literal
                end = text.find("\\E", i + 2)
                quoted = text[i + 2 :] if end < 0 else text[i + 2 : end]
                items.extend(_literal(char) for char in quoted)
                return len(text) if end < 0 else end + 2
            if after in "pP":
                ranges, i = self._unicode_class(i)
                items.append(_Set(ranges))
                return i
            perl = _PERL.get(text[i : i + 2])
            if perl is not None:
                items.append(_Set(perl))
                return i + 2
        code, i = self._escape(i)
        items.append(_Set(((code, code),)))
        return i

    def _escape(self, i: int) -> tuple[int, int]:
        """One escaped character (Go's parseEscape) at ``text[i] == "\\"``, and where it ends."""
        text = self.text
        start = i
        i += 1
        if i >= len(text):
            raise _GoSyntaxError("trailing backslash at end of expression", "")
        char = text[i]
        i += 1
        if char.isascii() and not char.isalnum():
            return ord(char), i
        octal = "01234567"
        if char in octal and (char == "0" or (i < len(text) and text[i] in octal)):
            code = int(char)
            for _ in range(2):
                if i >= len(text) or text[i] not in octal:
                    break
                code = code * 8 + int(text[i])
                i += 1
            return code, i
        if char == "x" and i < len(text):
            char = text[i]
            i += 1
            if char == "{":
                code = digits = 0
                while i < len(text):
                    char = text[i]
                    i += 1
                    if char == "}":
                        if digits:
                            return code, i
                        break
                    if _unhex(char) < 0:
                        break
                    code = code * 16 + _unhex(char)
                    if code > _MAX_RUNE:
                        break
                    digits += 1
            else:
                high = _unhex(char)
                low = _unhex(text[i]) if i < len(text) else -1
                i += 1
                if high >= 0 and low >= 0:
                    return high * 16 + low, i
        controls = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
        if char in controls and i == start + 2:
            return controls[char], i
        raise _GoSyntaxError("invalid escape sequence", text[start:i])

    def _unicode_class(self, i: int) -> tuple[Ranges, int]:
        """``\\pN``, ``\\PN``, ``\\p{Name}`` or ``\\p{^Name}`` at ``text[i]``, and where it ends."""
        text = self.text
        sign = -1 if text[i + 1] == "P" else 1
        j = i + 2
        if j >= len(text):
            sequence, name, end = text[i:], "", len(text)
        elif text[j] != "{":
            sequence, name, end = text[i : j + 1], text[j], j + 1
        else:
            close = text.find("}", i)
            if close < 0:
                raise _GoSyntaxError("invalid character class range", text[i:])
            sequence, name, end = text[i : close + 1], text[i + 3 : close], close + 1
        if name.startswith("^"):
            sign, name = -sign, name[1:]
        table = _unicode_table(name)
        if table is None:
            raise _GoSyntaxError("invalid character class range", sequence)
        return (table if sign > 0 else _negate(table)), end

    def _class(self, i: int) -> tuple[_Set, int]:
        """A bracketed class (Go's parseClass) at ``text[i] == "["``, and where it ends."""
        text = self.text
        whole = i
        i += 1
        negated = i < len(text) and text[i] == "^"
        if negated:
            i += 1
        ranges: list[tuple[int, int]] = []
        first = True  # a "]" first in the class is a member
        while i >= len(text) or text[i] != "]" or first:
            first = False
            if len(text) - i > 2 and text.startswith("[:", i):
                end = text.find(":]", i + 2)  # anywhere further on: it may run past this class
                if end >= 0:
                    name = text[i : end + 2]
                    if name not in _POSIX:
                        raise _GoSyntaxError("invalid character class range", name)
                    ranges.extend(_POSIX[name])
                    i = end + 2
                    continue
            if text.startswith(("\\p", "\\P"), i):
                table, i = self._unicode_class(i)
                ranges.extend(table)
                continue
            perl = _PERL.get(text[i : i + 2])
            if perl is not None:
                ranges.extend(perl)
                i += 2
                continue
            start = i
            lo, i = self._class_char(i, whole)
            hi = lo
            if len(text) - i >= 2 and text[i] == "-" and text[i + 1] != "]":
                hi, i = self._class_char(i + 1, whole)
                if hi < lo:
                    raise _GoSyntaxError("invalid character class range", text[start:i])
            ranges.append((lo, hi))
        normal = _normalise(ranges)
        return _Set(_negate(normal) if negated else normal), i + 1

    def _class_char(self, i: int, whole: int) -> tuple[int, int]:
        if i >= len(self.text):
            raise _GoSyntaxError("missing closing ]", self.text[whole:])
        if self.text[i] == "\\":
            return self._escape(i)
        return ord(self.text[i]), i + 1


def _unhex(char: str) -> int:
    return int(char, 16) if char in "0123456789abcdefABCDEF" else -1


# --- Go's expression as a Python one, and as an automaton that can look ahead -------------------

_WORD_CHAR = "[0-9A-Za-z_]"


def _zero_width(node: _Node) -> bool:
    """Whether ``node`` can only ever match the empty string."""
    if isinstance(node, _Set):
        return False
    if isinstance(node, _Cat):
        return all(_zero_width(item) for item in node.items)
    if isinstance(node, _Alt):
        return all(_zero_width(item) for item in node.alternatives)
    if isinstance(node, _Repeat):
        return node.high == 0 or _zero_width(node.item)
    return True


def _python_set(ranges: Ranges) -> str:
    if not ranges:
        return "(?!)"  # matches nothing
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return f"\\U{ranges[0][0]:08x}"
    negated = ""
    if sum(hi - lo + 1 for lo, hi in ranges) > (_MAX_RUNE + 1) // 2:
        # Python's compiler walks every code point of a range: name the few that are left out
        ranges, negated = _negate(ranges), "^"
        if not ranges:
            return "(?s:.)"  # any character
    return (
        f"[{negated}"
        + "".join(f"\\U{lo:08x}" + (f"-\\U{hi:08x}" if hi > lo else "") for lo, hi in ranges)
        + "]"
    )


def _python(node: _Node) -> str:
    """A Python regular expression that matches exactly what ``node`` matches in Go."""
    if isinstance(node, _Set):
        return _python_set(node.ranges)
    if isinstance(node, _Cat):
        return "".join(_python(item) for item in node.items)
    if isinstance(node, _Alt):
        return "(?:" + "|".join(_python(item) for item in node.alternatives) + ")"
    if isinstance(node, _Repeat):
        if node.high == 0 or _zero_width(node.item):
            # Python refuses to repeat what only matches the empty string; so many copies of it
            # match the empty string, or what one copy does when at least one is needed.
            return "" if node.low == 0 or node.high == 0 else _python(node.item)
        high = "" if node.high < 0 else str(node.high)
        return f"(?:{_python(node.item)}){{{node.low},{high}}}"
    w = _WORD_CHAR
    return {
        "begin": "\\A",
        "end": "\\Z",  # Python's $ would also match before a final newline
        "word": f"(?:(?<={w})(?!{w})|(?<!{w})(?={w}))",
        "notword": f"(?:(?<={w})(?={w})|(?<!{w})(?!{w}))",
    }[node.kind]


def _is_word(char: str | None) -> bool:
    return char is not None and char.isascii() and (char.isalnum() or char == "_")


class _Automaton:
    """``node`` as a Thompson automaton, to ask whether a text that starts a given way may match."""

    def __init__(self, node: _Node) -> None:
        self.kinds: list[str] = []  # "char", "split", "accept", or an assertion's kind
        self.sets: list[tuple[list[int], Ranges] | None] = []
        self.outs: list[list[int]] = []
        self.accept = self._state("accept", None, [])
        self.start = self._build(node, self.accept)

    def _state(self, kind: str, ranges: Ranges | None, outs: list[int]) -> int:
        self.kinds.append(kind)
        self.sets.append(None if ranges is None else ([lo for lo, _ in ranges], ranges))
        self.outs.append(outs)
        return len(self.kinds) - 1

    def _build(self, node: _Node, after: int) -> int:
        if isinstance(node, _Set):
            return self._state("char", node.ranges, [after])
        if isinstance(node, _Cat):
            for item in reversed(node.items):
                after = self._build(item, after)
            return after
        if isinstance(node, _Alt):
            return self._state("split", None, [self._build(item, after) for item in node.alternatives])
        if isinstance(node, _Repeat):
            if node.high < 0:  # low copies, then a loop
                loop = self._state("split", None, [after])
                self.outs[loop].insert(0, self._build(node.item, loop))
                after = loop
            else:  # low copies, then high - low optional ones
                for _ in range(node.high - node.low):
                    after = self._state("split", None, [self._build(node.item, after), after])
            for _ in range(node.low):
                after = self._build(node.item, after)
            return after
        return self._state(node.kind, None, [after])

    def may_match_starting(self, prefix: str) -> bool:
        """Whether some text that starts with ``prefix`` and goes on past it has a match (anywhere
        in it, as Go's MatchString searches). Errs on the side of yes."""
        current: set[int] = set()
        for pos in range(len(prefix) + 1):
            before = prefix[pos - 1] if pos else None
            ahead = prefix[pos] if pos < len(prefix) else None  # None: not known, but not the end
            states = self._closure(current | {self.start}, pos, before, ahead)
            if self.accept in states:
                return True
            if ahead is None:
                return any(self.kinds[s] == "char" for s in states)
            code = ord(ahead)
            current = set()
            for s in states:
                entry = self.sets[s]
                if entry is not None:
                    k = bisect_right(entry[0], code) - 1
                    if k >= 0 and code <= entry[1][k][1]:
                        current.add(self.outs[s][0])
        return False  # not reached: the loop returns at the prefix's end

    def _closure(self, states: set[int], pos: int, before: str | None, ahead: str | None) -> set[int]:
        seen: set[int] = set()
        stack = list(states)
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            kind = self.kinds[s]
            if kind == "split":
                passes = True
            elif kind == "begin":
                passes = pos == 0
            elif kind in ("word", "notword"):
                passes = ahead is None or (_is_word(before) != _is_word(ahead)) == (kind == "word")
            else:  # "end" never holds before the text's end; "char" and "accept" do not pass on
                passes = False
            if passes:
                stack.extend(self.outs[s])
        return seen


# --- one pattern, and the rules of one ignore file ----------------------------------------------

_BYTES_OF_STRAYS = {code: 0xFFFD for code in range(0xDC80, 0xDD00)}


def _as_go_reads(path: str) -> str:
    """A path as Go's regexp reads it: each byte that is not UTF-8 (Python's surrogate escape) is U+FFFD."""
    return path if path.isascii() else path.translate(_BYTES_OF_STRAYS)


class _Pattern:
    """One cleaned pattern (without ``!``), ready to match paths."""

    def __init__(self, kind: str, text: str, test: Callable[[str], bool], node: _Node | None = None) -> None:
        self.kind = kind
        self.text = text  # what an exact, prefix or suffix match compares with
        self.test = test
        self._node = node
        self._automaton: _Automaton | None = None

    def may_match_below(self, directory: str) -> bool:
        """Whether some path under ``directory/`` could match (yes when unsure)."""
        below = directory + "/"
        if self.kind == EXACT:
            return self.text.startswith(below)
        if self.kind == PREFIX:
            return self.text.startswith(below) or below.startswith(self.text)
        if self._node is None:  # SUFFIX: "directory/..." followed by the suffix ends with it
            return True
        if self._automaton is None:
            self._automaton = _Automaton(self._node)
        return self._automaton.may_match_starting(_as_go_reads(below))


def _go_rejects(error: _GoSyntaxError, regexp: str) -> _Rejected:
    where = f"becomes the regular expression `{regexp}`, which Go refuses ({error.code}: `{error.expr}`)"
    if error.code == "invalid escape sequence":
        return _Rejected(
            f'uses "{error.expr}", which Docker reads as a regular-expression escape it does not know: '
            + where,
            _SYNTAX,
            'a "\\" escapes the next character: separate directories with "/", '
            'and write a literal backslash as "\\\\"',
        )
    if error.code == "invalid character class range":
        fix = (
            'write a range low to high ("a-z"); "[:name:]" and "\\pX" must name a class Go knows; '
            'write a literal "[" as "\\[" and a literal backslash as "\\\\"'
        )
    elif error.code == "missing closing ]":
        fix = 'close the class with "]", or write a literal "[" as "\\["'
    else:
        fix = "rewrite the pattern without it"
    return _Rejected(where, _SYNTAX, fix)


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> _Pattern:
    """The matcher of one cleaned pattern (without ``!``), or :class:`_Rejected` as Docker would."""
    _check_glob(pattern)
    kind, regexp = translate(pattern)
    if kind == EXACT:
        return _Pattern(kind, pattern, pattern.__eq__)
    if kind == PREFIX:
        prefix = pattern[:-2]
        return _Pattern(kind, prefix, lambda path: path.startswith(prefix))
    if kind == SUFFIX:
        if pattern.startswith(_BOM):  # Go cuts the "**" off by bytes, which here cuts into the mark
            tail = pattern.encode("utf-8")[2:]
            return _Pattern(
                kind, pattern, lambda path: path.encode("utf-8", "surrogateescape").endswith(tail)
            )
        suffix = pattern[2:]
        whole = suffix[1:] if suffix.startswith("/") else None  # "**/foo" matches "foo" too

        def ends_with(path: str) -> bool:
            return path.endswith(suffix) or path == whole

        return _Pattern(kind, suffix, ends_with)
    try:
        node = _GoParser(regexp).parse()
    except _GoSyntaxError as error:
        raise _go_rejects(error, regexp) from None
    compiled = re.compile(_python(node))
    anchored = isinstance(node, _Cat) and node.items[:1] == (_Assert("begin"),)
    find = compiled.match if anchored else compiled.search  # Go searches; "^" makes it a match
    return _Pattern(kind, regexp, lambda path: find(_as_go_reads(path)) is not None, node)


class IgnoreRules:
    """The patterns of one ignore file, checked and compiled as Docker does.

    A pattern Docker rejects is a :class:`ConfigError` naming ``source`` and
    the pattern's line (``lines[i]`` for ``patterns[i]``; without ``lines``,
    the pattern's position counts as its line). Docker itself refuses some of
    them only when it first matches a path against them (a class range that
    runs backwards, an escape Go's regular expressions do not know); they are
    refused here at once.
    """

    def __init__(
        self,
        patterns: Sequence[str],
        source: Path | str = ".dockerignore",
        lines: Sequence[int] | None = None,
    ) -> None:
        rules: list[tuple[bool, _Pattern]] = []
        for index, text in enumerate(patterns):
            pattern = _trim(text)
            if not pattern:
                continue
            pattern = clean(pattern)
            exception = pattern.startswith("!")
            try:
                if pattern == "!":
                    raise _Rejected(
                        'is a "!" with nothing after it',
                        'illegal exclusion pattern: "!"',
                        'write the path to bring back after the "!" ("!keep.txt"), or delete the line',
                    )
                rules.append((exception, _compile(pattern[1:] if exception else pattern)))
            except _Rejected as rejected:
                line = lines[index] if lines is not None else index + 1
                raise ConfigError(
                    source,
                    f"line {line}",
                    f'pattern "{text}" {rejected.reason}; Docker rejects it ("{rejected.docker}")',
                    rejected.fix,
                ) from None
        self._rules = rules
        self._above: dict[str, tuple[bool, ...]] = {}

    def excludes(self, path: str) -> bool:
        """Whether the context path ``path`` (``a/b``, relative, with ``/``) is left out.

        Docker's MatchesOrParentMatches: the patterns in order, each one that
        matches the path or one of its parent directories decides (an exception
        brings the path back), so the last one that matches wins.
        """
        if not self._rules:
            return False
        slash = path.rfind("/")
        above = self._matches_above(path[: slash + 1]) if slash >= 0 else None
        excluded = False
        for index, (exception, pattern) in enumerate(self._rules):
            if exception != excluded:
                continue  # cannot change the outcome
            if (above is not None and above[index]) or pattern.test(path):
                excluded = not exception
        return excluded

    def matches_exactly(self, path: str) -> bool:
        """Docker's MatchesExact: like :meth:`excludes`, without looking at parent directories."""
        excluded = False
        for exception, pattern in self._rules:
            if exception == excluded and pattern.test(path):
                excluded = not exception
        return excluded

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception could bring back something below the excluded ``directory``.

        Only an exception that matches a path under ``directory/`` can: one that
        matches ``directory`` or a parent of it already had its say on
        ``directory`` itself. A ``False`` lets a walk skip the directory.
        """
        return any(exception and pattern.may_match_below(directory) for exception, pattern in self._rules)

    def _matches_above(self, parent: str) -> tuple[bool, ...] | None:
        """Per pattern, whether it matches the directory ``parent`` names (Go's filepath.Dir of a
        path: ``parent`` is what comes before its last ``/``) or any directory above it."""
        known = self._above.get(parent)
        if known is None:
            directory = clean(parent)
            known = () if directory == "." else self._chain(directory)
            self._above[parent] = known
        return known or None

    def _chain(self, directory: str) -> tuple[bool, ...]:
        # Go splits the directory at every "/" and tries each leading part: "a", "a/b", ...
        key = "\0" + directory
        known = self._above.get(key)
        if known is None:
            cut = directory.rfind("/")
            above = self._chain(directory[:cut]) if cut >= 0 else None
            known = tuple(
                (above is not None and above[i]) or pattern.test(directory)
                for i, (_, pattern) in enumerate(self._rules)
            )
            self._above[key] = known
        return known
