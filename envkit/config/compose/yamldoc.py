"""A compose file's YAML, read with compose's meaning.

Compose reads YAML 1.2 (Go's yaml.v3), not the YAML 1.1 of PyYAML's SafeLoader:
``22:22``, ``yes``, ``on`` and ``2024-01-01`` are strings, not 1342, True and a
date. ruamel.yaml parses and composes the file as YAML 1.2 and keeps every
node's line; this module builds the values itself from those nodes:

- a plain scalar with a leading zero (``0123``) stays the string it is written
  as, where YAML 1.1 reads an octal 83 and YAML 1.2 a lossy 123;
- other numbers are numbers, turned into strings as compose (Go) writes them:
  ``1.10`` is ``"1.1"`` and ``1e3`` is ``"1000"``, as with ``docker compose``
  (quote a version to keep it);
- anchors, aliases and ``<<`` merge keys are resolved (``x-`` fields are
  values like any other; the loader drops them);
- compose's own tags ``!reset`` and ``!override`` are recorded by path for the
  merge of several files; other tags are errors;
- a duplicate key, a recursive alias or an alias bomb is an error with its line.
"""

from __future__ import annotations

import io
import math
import re
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envkit.config.compose.located import Key, Located
from envkit.errors import ConfigError

if TYPE_CHECKING:
    from ruamel.yaml.nodes import Node, ScalarNode

MAX_VALUES = 200_000  # more values than any real file has: an alias bomb ("billion laughs")
_TAG = "tag:yaml.org,2002:"
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")
_TRUE = {"true", "yes", "on", "y"}
_FALSE = {"false", "no", "off", "n"}


def scalar_text(value: Any) -> str:
    """A scalar as compose turns it into a string: numbers as Go prints them, booleans as
    true/false, null as ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    return str(value)


def _go_float(value: float) -> str:
    """``fmt.Sprint`` of a float64: the shortest digits, without an exponent below 1e21."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0 or 1e-4 <= abs(value) < 1e21:
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return repr(value)


def read(file: Path, text: str) -> Located:
    """The values of compose file ``file`` (its ``text``), with their lines and compose's tags."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        node = YAML(typ="rt").compose(io.StringIO(text))
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = " ".join(p for p in (err.context, err.problem) if p)
        raise ConfigError(
            file,
            "",
            f"not valid YAML: {problem or 'cannot be parsed'}",
            "correct the YAML syntax at that line",
            line=mark.line + 1 if mark is not None else None,
        ) from None
    except (YAMLError, ValueError) as err:  # a reader error (a control character) has no mark
        raise ConfigError(file, "", f"not valid YAML: {err}", "correct the YAML syntax") from None
    except RecursionError:
        raise ConfigError(
            file, "", "not valid YAML: nested too deeply", "flatten the nesting of lists and mappings"
        ) from None
    located = Located(file, {})
    if node is None:
        return located  # an empty file; the loader says what it lacks
    builder = _Builder(located)
    try:
        data = builder.value(node, ())
    except RecursionError:
        raise ConfigError(
            file, "", "nested too deeply", "flatten the nesting of lists and mappings"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            file,
            "",
            f"the top level is a {_kind(data)}, not a mapping",
            "start the file with `services:` and the services under it",
            line=node.start_mark.line + 1,
        )
    located.data = data
    return located


def _shown(tag: str) -> str:
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if value is None:
        return "empty value"
    return "string" if isinstance(value, str) else "scalar"


class _Builder:
    """Builds values from ruamel's node tree, recording each value's line by its path."""

    def __init__(self, located: Located) -> None:
        self.located = located
        self.count = 0
        self.building: set[int] = set()  # the nodes being built: an alias to one is a cycle

    def error(self, node: Node, path: Key, problem: str, fix: str) -> ConfigError:
        from envkit.config.compose.located import dotted

        return ConfigError(self.located.file, dotted(path), problem, fix, line=node.start_mark.line + 1)

    def value(self, node: Node, path: Key) -> Any:
        from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

        self.count += 1
        if self.count > MAX_VALUES:
            raise self.error(
                node,
                path,
                f"the file expands to more than {MAX_VALUES} values (aliases of aliases?)",
                "use fewer nested aliases",
            )
        self.located.lines.setdefault(path, node.start_mark.line + 1)
        tag = str(node.tag)
        if tag in ("!reset", "!override"):
            (self.located.resets if tag == "!reset" else self.located.overrides).add(path)
        if id(node) in self.building:
            raise self.error(node, path, "an alias refers to a value that contains it", "remove the cycle")
        self.building.add(id(node))
        try:
            if isinstance(node, (MappingNode, SequenceNode)):
                kind = "map" if isinstance(node, MappingNode) else "seq"
                if tag not in (_TAG + kind, "!reset", "!override"):
                    raise self.error(
                        node, path, f"the YAML tag {_shown(tag)} means nothing to compose", "remove the tag"
                    )
                if kind == "map":
                    return self.mapping(node, path)
                return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, ScalarNode)
            return self.scalar(node, path, tag)
        finally:
            self.building.discard(id(node))

    def mapping(self, node: Node, path: Key) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}  # from << merge keys: the mapping's own keys win
        for key_node, value_node in node.value:
            if str(key_node.tag) == _TAG + "merge":
                sources = value_node.value if str(value_node.tag) == _TAG + "seq" else [value_node]
                for source in reversed(sources):  # earlier sources win over later ones
                    value = self.value(source, path)
                    if not isinstance(value, dict):
                        raise self.error(
                            source,
                            path,
                            "a << merge key needs a mapping (or a list of them)",
                            "merge an anchor of a mapping",
                        )
                    merged.update(value)
                continue
            key = self.value(key_node, path)
            if isinstance(key, (dict, list)):
                raise self.error(key_node, path, "a mapping key must be a plain value", "use a string key")
            name = scalar_text(key) if key is not None else "null"
            if name in out:
                raise self.error(
                    key_node,
                    (*path, name),
                    f"the key {name!r} is given twice in this mapping",
                    "keep one of them",
                )
            here: Key = (*path, name)
            self.located.lines[here] = key_node.start_mark.line + 1
            out[name] = self.value(value_node, here)
        for key, value in merged.items():
            out.setdefault(key, value)
        return out

    def scalar(self, node: ScalarNode, path: Key, tag: str) -> Any:
        text: str = node.value
        if node.style == ">":  # ruamel's scanner marks each fold of a folded scalar with a BEL
            text = text.replace("\a", "")
        plain = node.style is None
        if tag in ("!reset", "!override") or not tag.startswith(_TAG):
            if tag not in ("!reset", "!override"):
                raise self.error(
                    node, path, f"the YAML tag {_shown(tag)} means nothing to compose", "remove the tag"
                )
            tag = _resolve_plain(text) if plain else _TAG + "str"
        kind = tag.removeprefix(_TAG)
        try:
            if kind == "null":
                return None
            if kind == "bool":
                lowered = text.lower()
                if lowered not in _TRUE | _FALSE:
                    raise ValueError(text)
                return lowered in _TRUE
            if kind == "int":
                if plain and _LEADING_ZERO.match(text):
                    return text  # 0123: neither YAML 1.1's 83 nor 1.2's 123, but what it says
                return int(text.replace("_", ""), 0)
            if kind == "float":
                return _float(text)
        except ValueError:
            raise self.error(
                node, path, f"{text!r} is not a valid {kind}", f"write it without the !!{kind} tag"
            ) from None
        if kind in ("str", "timestamp", "merge"):
            return text  # compose has no dates: 2024-01-01 is a string
        raise self.error(node, path, f"the YAML tag !!{kind} means nothing to compose", "remove the tag")


def _float(text: str) -> float:
    lowered = text.lower().replace("_", "")
    if lowered in (".inf", "+.inf"):
        return float("inf")
    if lowered == "-.inf":
        return float("-inf")
    if lowered == ".nan":
        return float("nan")
    return float(lowered)


_PLAIN_INT = re.compile(r"^[-+]?(?:[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$")
_PLAIN_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def _resolve_plain(text: str) -> str:
    """The YAML 1.2 core schema's tag for a plain scalar carrying one of compose's own tags."""
    if text in ("", "~", "null", "Null", "NULL"):
        return _TAG + "null"
    if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
        return _TAG + "bool"
    if _PLAIN_INT.match(text):
        return _TAG + "int"
    if _PLAIN_FLOAT.match(text):
        return _TAG + "float"
    return _TAG + "str"
