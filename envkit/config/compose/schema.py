"""Validation against the compose specification's own JSON schema.

The schema is the compose-spec project's ``compose-spec.json``, as the
check-jsonschema package ships it (vendored from compose-spec and kept current
by its maintainers), validated with jsonschema. A file that breaks it gets one
error: the deepest problem found, at its key and line, in words.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterator
from importlib import util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envkit.config.compose.located import Key, Located
from envkit.errors import ConfigError

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

_TYPES = {
    "string": "a string",
    "array": "a list",
    "object": "a mapping",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}


def schema_file() -> Path:
    """Where the compose specification's schema is: in the check-jsonschema package (found
    without importing it: its CLI is not needed)."""
    spec = util.find_spec("check_jsonschema")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "compose-spec.json",
            "",
            "the compose specification's schema is not installed (it comes with check-jsonschema)",
            "reinstall envkit with its dependencies: pip install envkit-docker",
        )
    return Path(spec.origin).parent / "builtin_schemas" / "vendor" / "compose-spec.json"


@functools.cache
def _validator() -> tuple[Validator, dict[str, Any]]:
    import jsonschema

    path = schema_file()
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            path,
            "",
            f"the compose specification's schema cannot be read: {err}",
            "reinstall check-jsonschema",
        ) from None
    return jsonschema.validators.validator_for(schema)(schema), schema


def validate(doc: Located) -> None:
    """Raise a ConfigError naming the file, line and key of ``doc``'s first breach of the spec."""
    validator, schema = _validator()
    errors = list(validator.iter_errors(doc.data))
    if errors:
        raise _explain(doc, errors, schema)


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The errors under a oneOf/anyOf: each alternative's own reasons."""
    if not error.context:
        yield error
    for sub in error.context or ():
        yield from _leaves(sub)


def _unexpected(error: ValidationError) -> list[str]:
    """The keys an additionalProperties/unevaluatedProperties error names."""
    if isinstance(error.instance, dict):
        named = re.findall(r"'([^']*)'", error.message.split("(", 1)[-1])
        return [k for k in named if k in error.instance] or [str(k) for k in error.instance][:1]
    return []


def _explain(doc: Located, errors: list[ValidationError], schema: dict[str, Any]) -> ConfigError:
    leaves = [leaf for error in errors for leaf in _leaves(error)]
    # A property whose value is invalid is also "unevaluated" for the object around it (its
    # subschema failed): that is the least helpful thing to say about it.
    deeper = {tuple(leaf.absolute_path) for leaf in leaves}

    def unexpected(leaf: ValidationError) -> list[str]:
        return [n for n in _unexpected(leaf) if (*leaf.absolute_path, n) not in deeper]

    unknown = ("unevaluatedProperties", "additionalProperties")
    reasons = [leaf for leaf in leaves if leaf.validator not in unknown or unexpected(leaf)] or leaves
    depth = max(len(leaf.absolute_path) for leaf in reasons)
    deepest = [leaf for leaf in reasons if len(leaf.absolute_path) == depth]
    # Prefer a reason that says what is wrong inside the value over "it is not of type X".
    specific = [leaf for leaf in deepest if leaf.validator != "type"]
    leaf = specific[0] if specific else deepest[0]
    path: Key = tuple(leaf.absolute_path)
    if leaf.validator in unknown:
        name = (unexpected(leaf) or ["?"])[0]
        return doc.error((*path, name), *_unknown_key(name, leaf, schema))
    if not specific:  # only "not of type": say every type the value could have
        wanted: list[str] = []
        for other in deepest:
            types: Any = other.validator_value
            for t in [types] if isinstance(types, str) else list(types):
                if _TYPES.get(t, t) not in wanted:
                    wanted.append(_TYPES.get(t, t))
        either = " or ".join(wanted)
        return doc.error(path, f"{_shown(leaf.instance)} is not {either}", f"write it as {either}")
    return doc.error(path, *_words(leaf))


def _unknown_key(name: str, leaf: ValidationError, schema: dict[str, Any]) -> tuple[str, str]:
    known = sorted(_properties(leaf.schema, schema) - {name})
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = f"; the keys allowed here: {', '.join(known)}" if known and len(known) <= 40 else ""
    return "unknown key (not in the compose specification)", f"{hint}remove it, or correct its name{listed}"


def _words(leaf: ValidationError) -> tuple[str, str]:
    """What is wrong and the fix, for one reason the schema gives."""
    if leaf.validator == "enum":
        allowed: Any = leaf.validator_value
        choices = ", ".join(str(c) for c in allowed)
        return f"{_shown(leaf.instance)} is not one of: {choices}", f"use one of: {choices}"
    if leaf.validator == "required":
        missing = re.findall(r"'([^']*)'", leaf.message)
        return (
            f"{missing[0] if missing else 'a key'} is required here",
            "add it (see the compose specification)",
        )
    if leaf.validator == "pattern":
        return f"{_shown(leaf.instance)} is not valid here", f"write a value matching {leaf.validator_value}"
    if leaf.validator in ("patternProperties", "propertyNames"):
        return f"{_shown(leaf.instance)} is not a valid name here", "rename it"
    if leaf.validator == "uniqueItems":
        return "lists the same entry twice", "remove the duplicate"
    return leaf.message, "correct it to the compose specification's form"


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _properties(fragment: Any, schema: dict[str, Any], seen: frozenset[str] = frozenset()) -> set[str]:
    """The property names a schema fragment allows, through $ref and allOf/anyOf/oneOf."""
    if not isinstance(fragment, dict):
        return set()
    names = set(fragment.get("properties", {}))
    ref = fragment.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and ref not in seen:
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        names |= _properties(target, schema, seen | {ref})
    for combinator in ("allOf", "anyOf", "oneOf"):
        for sub in fragment.get(combinator, []):
            names |= _properties(sub, schema, seen)
    return names
