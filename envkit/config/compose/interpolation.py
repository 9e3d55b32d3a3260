"""Compose's variables: ``${V}`` substitution, and the dotenv files that feed it.

The syntax is compose's (compose-spec's "Interpolation"): ``$V``, ``${V}``,
``${V:-default}`` (unset or empty), ``${V-default}`` (unset), ``${V:?error}``
and ``${V?error}`` (required), ``${V:+other}`` and ``${V+other}`` (replacement),
nested in the defaults (``${A:-${B:-x}}``), and ``$$`` for a literal ``$``. A
``$`` followed by anything else is kept as it is. A variable that is not set
and has no default becomes the empty string, and is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from envkit.errors import ConfigError

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_BRACED = re.compile(r"([_a-zA-Z][_a-zA-Z0-9]*)(?:(:?[-+?])(.*))?", re.DOTALL)

Lookup = Callable[[str], "str | None"]


class InterpolationError(ValueError):
    """A ``${...}`` that cannot be substituted: ``problem`` and ``fix`` for the user."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix)
        self.problem = problem
        self.fix = fix


@dataclass
class Substitution:
    """Substitutes variables from ``lookup``, remembering the ones that were not set."""

    lookup: Lookup
    unset: set[str] = field(default_factory=set)

    def __call__(self, text: str) -> str:
        if "$" not in text:
            return text
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            dollar = text.find("$", i)
            if dollar < 0:
                out.append(text[i:])
                break
            out.append(text[i:dollar])
            after = text[dollar + 1 : dollar + 2]
            if after == "$":
                out.append("$")
                i = dollar + 2
            elif after == "{":
                end = _closing(text, dollar + 2)
                if end < 0:
                    raise InterpolationError(
                        f"invalid interpolation format {text[dollar:]!r}: no closing brace",
                        "close it with }, or write $$ for a literal $",
                    )
                out.append(self._braced(text[dollar + 2 : end]))
                i = end + 1
            else:
                name = _NAME.match(text, dollar + 1)
                if name is None:
                    out.append("$")
                    i = dollar + 1
                else:
                    out.append(self._get(name.group()))
                    i = name.end()
        return "".join(out)

    def tracked(self, text: str) -> tuple[str, tuple[str, ...]]:
        """``text`` substituted, and the variables it took that were not set (sorted)."""
        one = Substitution(self.lookup)
        try:
            return one(text), tuple(sorted(one.unset))
        finally:
            self.unset |= one.unset

    def _get(self, name: str) -> str:
        value = self.lookup(name)
        if value is None:
            self.unset.add(name)
            return ""
        return value

    def _braced(self, inner: str) -> str:
        match = _BRACED.fullmatch(inner)
        if match is None:
            raise InterpolationError(
                f"invalid interpolation format ${{{inner}}}",
                "write ${NAME}, ${NAME:-default} or ${NAME:?error} (NAME: letters, digits, _), "
                "or $$ for a literal $",
            )
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = self.lookup(name)
        if op is None:
            return self._get(name)
        empty = value is None or (op.startswith(":") and value == "")
        if op in (":-", "-"):
            return self(arg) if empty else str(value)
        if op in (":+", "+"):
            return "" if empty else self(arg)
        if empty:  # :? and ?
            said = self(arg)
            unset = "not set" if value is None else "empty"
            raise InterpolationError(
                f"the variable {name} is required but {unset}" + (f": {said}" if said else ""),
                f"set {name} in the environment or in the .env file beside the compose file",
            )
        return str(value)


def _closing(text: str, start: int) -> int:
    """The index of the ``}`` that closes a ``${`` opened just before ``start``, or -1."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$$"}


def read_dotenv(file: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of dotenv file ``file`` (``.env``, or a service's ``env_file``), as compose
    reads it: ``KEY=value`` lines (``export`` allowed), ``#`` comments, single quotes literal,
    double quotes with escapes, both over several lines; unquoted and double-quoted values are
    interpolated from ``environ``, then the file's earlier variables. A bare ``KEY`` takes its
    value from ``environ`` (and is left out when it is not set there)."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(file, "", "not UTF-8 text", "save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(file, "", f"cannot be read: {err.strerror}", "make it readable") from None
    values: dict[str, str] = {}
    substitute = Substitution(lambda name: environ[name] if name in environ else values.get(name))
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].strip()
        key, equals, rest = line.partition("=")
        key = key.strip()
        if not _KEY.match(key):
            raise ConfigError(
                file,
                "",
                f"{key!r} is not a variable name",
                "write KEY=value (a name of letters, digits and _), or start the line with # for a comment",
                line=number,
            )
        if not equals:
            if key in environ:
                values[key] = environ[key]
            continue
        rest = rest.lstrip()
        quote = rest[:1]
        try:
            if quote in ("'", '"'):
                body, i = _quoted(rest, quote, lines=lines, i=i, file=file, number=number)
                values[key] = body if quote == "'" else substitute(body)
            else:
                comment = re.search(r"\s#", rest)
                values[key] = substitute((rest[: comment.start()] if comment else rest).strip())
        except InterpolationError as err:
            raise ConfigError(file, key, err.problem, err.fix, line=number) from None
    return values


def _quoted(rest: str, quote: str, *, lines: list[str], i: int, file: Path, number: int) -> tuple[str, int]:
    """A quoted value that starts ``rest`` (and may go on over the next lines): its text, with
    double quotes' escapes applied, and the index of the line after it."""
    text = rest[1:]
    while True:
        end = _unescaped(text, quote)
        if end >= 0:
            break
        if i >= len(lines):
            raise ConfigError(
                file, "", f"the value's {quote} is never closed", f"close it with {quote}", line=number
            )
        text += "\n" + lines[i]
        i += 1
    body, after = text[:end], text[end + 1 :].strip()
    if after and not after.startswith("#"):
        raise ConfigError(
            file,
            "",
            f"unexpected {after!r} after the quoted value",
            "put it inside the quotes, or start a comment with #",
            line=number,
        )
    if quote == "'":
        return body, i
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body), i


def _unescaped(text: str, quote: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\" and quote == '"':
            i += 2
            continue
        if text[i] == quote:
            return i
        i += 1
    return -1
