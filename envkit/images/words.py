"""Dockerfile words as Docker's builder reads them: quotes, escapes and variable substitution.

``ENV``, ``LABEL``, ``ARG``, ``COPY``, ``ADD``, ``WORKDIR``, ``USER``, ``EXPOSE``,
``VOLUME`` and ``STOPSIGNAL`` take words in which ``$VAR``, ``${VAR}``,
``${VAR:-word}``, ``${VAR-word}``, ``${VAR:+word}`` and ``${VAR+word}`` are
replaced; single quotes keep everything literal, double quotes keep spaces and
still substitute, and the escape character (``\\`` or the ``# escape=``
directive's) makes the next character literal. ``CMD``, ``ENTRYPOINT``,
``HEALTHCHECK`` and ``SHELL`` are not substituted (a shell does it at run time).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

_NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME = _NAME_START | set("0123456789")


class WordError(ValueError):
    """A word the builder would refuse (an unterminated quote or substitution)."""


def words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Split ``text`` on unquoted whitespace, then substitute and unquote each word."""
    return [word(raw, env, escape) for raw in split(text, escape)]


def split(text: str, escape: str = "\\") -> list[str]:
    """The raw words of ``text``: whitespace outside quotes separates them."""
    out: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    started = False
    while i < len(text):
        ch = text[i]
        if ch == escape and quote != "'" and i + 1 < len(text):
            current += [ch, text[i + 1]]
            started = True
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if started:
                out.append("".join(current))
                current, started = [], False
            i += 1
            continue
        current.append(ch)
        started = True
        i += 1
    if quote:
        raise WordError(f"unterminated {quote} in {text!r}")
    if started:
        out.append("".join(current))
    return out


def word(raw: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word with its quotes removed and its variables substituted."""
    out: list[str] = []
    i = 0
    quote = ""
    while i < len(raw):
        ch = raw[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out.append(ch)
            i += 1
        elif ch == escape and i + 1 < len(raw):
            nxt = raw[i + 1]
            # Inside double quotes only a few characters are escapable; elsewhere the escape is kept.
            if quote == '"' and nxt not in ('"', "$", escape):
                out.append(ch)
            out.append(nxt)
            i += 2
        elif ch == '"':
            quote = "" if quote else '"'
            i += 1
        elif ch == "'" and not quote:
            quote = "'"
            i += 1
        elif ch == "$":
            value, i = _dollar(raw, i, env, escape)
            out.append(value)
        else:
            out.append(ch)
            i += 1
    if quote:
        raise WordError(f"unterminated {quote} in {raw!r}")
    return "".join(out)


def _dollar(raw: str, i: int, env: Mapping[str, str], escape: str) -> tuple[str, int]:
    """The value of the substitution starting at ``raw[i] == "$"``, and where it ends."""
    if i + 1 >= len(raw):
        return "$", i + 1
    nxt = raw[i + 1]
    if nxt in _NAME_START:
        end = i + 1
        while end < len(raw) and raw[end] in _NAME:
            end += 1
        return env.get(raw[i + 1 : end], ""), end
    if nxt != "{":
        return "$", i + 1
    end = i + 2
    while end < len(raw) and raw[end] in _NAME:
        end += 1
    name = raw[i + 2 : end]
    if not name or end >= len(raw):
        raise WordError(f"bad substitution in {raw!r}")
    if raw[end] == "}":
        return env.get(name, ""), end + 1
    colon = raw[end] == ":"
    op_at = end + 1 if colon else end
    if op_at >= len(raw) or raw[op_at] not in "-+":
        raise WordError(f"unsupported modifier in {raw!r}")
    op = raw[op_at]
    depth, close = 1, op_at + 1
    while close < len(raw) and depth:
        if raw[close] == "{":
            depth += 1
        elif raw[close] == "}":
            depth -= 1
        close += 1
    if depth:
        raise WordError(f"unterminated substitution in {raw!r}")
    alternative = word(raw[op_at + 1 : close - 1], env, escape)
    is_set = name in env
    has_value = is_set and env[name] != ""
    present = has_value if colon else is_set
    if op == "-":
        return (env[name] if present else alternative), close
    return (alternative if present else ""), close


def json_list(args: str) -> list[str] | None:
    """The exec form (``["a", "b"]``) as a list, or None when ``args`` is not one."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def pairs(args: str, env: Mapping[str, str], escape: str = "\\") -> list[tuple[str, str]]:
    """``ENV``/``LABEL`` arguments: ``key=value ...``, or the old ``key value`` form."""
    raw = split(args, escape)
    if raw and "=" not in raw[0]:
        key, _, rest = args.strip().partition(" ")
        if not rest.strip():
            raise WordError(f"{key!r} has no value")
        return [(word(key, env, escape), word(rest.strip(), env, escape))]
    out = []
    for item in raw:
        key, eq, value = item.partition("=")
        if not eq:
            raise WordError(f"{item!r} is not key=value")
        out.append((word(key, env, escape), word(value, env, escape)))
    return out
