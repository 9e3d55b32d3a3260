"""Why an image was (re)built: its inputs as last built, and what changed since.

``<state dir>/manifests/<image>/<key>.json`` holds an image's inputs,
``<key>.builder`` which builder made it and why, and ``<image>/latest`` names
the key last recorded; :func:`explain` diffs two
inputs into one short phrase per change.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from envkit.fsutil import atomic_write_text, ensure_private_dir, ensure_state_dir
from envkit.images.digest import RECIPE_BUILDER, Inputs, short_key, split_entry

# Build args whose values are secrets, by their names: their values never reach envkit's files.
SECRET_ARG = re.compile(
    r"TOKEN|SECRET|PASS(WORD|WD)?($|_)|CREDENTIAL|AUTH|PRIVATE|CERT|APIKEY|API_KEY|_PAT$|^PAT$|_KEY$|^KEY$",
    re.IGNORECASE,
)


def redacted(args: Mapping[str, str]) -> dict[str, str]:
    """Build args as a manifest records them: a secret's value only as its digest."""
    return {
        name: value if not SECRET_ARG.search(name) or value.startswith("sha256:") else _digest(value)
        for name, value in args.items()
    }


def _digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


class Manifests:
    """The inputs of each image as last built or seen, to explain the next miss.

    ``<dir>/<image>/<key>.json`` holds an image's inputs, ``<dir>/<image>/latest``
    names the key last recorded.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def record(self, image: str, inputs: Inputs, *, made_by: tuple[str, str] = ("", "")) -> None:
        """Record ``inputs`` as the latest of ``image``, and which builder made it and why."""
        ensure_state_dir(self.directory.parent)
        folder = ensure_private_dir(self.directory / image)
        path = folder / f"{inputs.key}.json"
        if not path.exists():
            data = inputs.to_json()
            data["args"] = redacted(inputs.args)
            atomic_write_text(path, json.dumps(data, separators=(",", ":")))
        if made_by[0] and self.made_by(image, inputs.key) != made_by:
            builder, why = made_by
            text = json.dumps({"builder": builder, "why": why})
            atomic_write_text(folder / f"{inputs.key}.builder", text)
        latest = folder / "latest"
        try:
            current = latest.read_text(encoding="utf-8").strip()
        except OSError:
            current = ""
        if current != inputs.key:
            atomic_write_text(latest, inputs.key)

    def latest(self, image: str) -> Inputs | None:
        folder = self.directory / image
        try:
            key = (folder / "latest").read_text(encoding="utf-8").strip()
            return Inputs.from_json(json.loads((folder / f"{key}.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable, or a record of the wrong shape: nothing to explain from

    def made_by(self, image: str, key: str) -> tuple[str, str]:
        """Which builder made the image of ``key``, and why that one ("" when not recorded)."""
        try:
            data = json.loads((self.directory / image / f"{key}.builder").read_text(encoding="utf-8"))
            return str(data.get("builder") or ""), str(data.get("why") or "")
        except (OSError, ValueError, AttributeError):
            return "", ""

    def forget(self, image: str, keep: set[str]) -> None:
        """Drop recorded inputs except those of the keys in ``keep``."""
        folder = self.directory / image
        if not folder.is_dir():
            return
        for path in [*folder.glob("*.json"), *folder.glob("*.builder")]:
            if path.stem not in keep:
                path.unlink(missing_ok=True)
        if not any(folder.glob("*.json")):
            shutil.rmtree(folder, ignore_errors=True)


def explain(old: Inputs | None, new: Inputs, *, limit: int = 10) -> list[str]:
    """Why ``new`` is not ``old``: one short phrase per changed input."""
    if old is None:
        return ["no earlier build of this image is recorded here"]
    if old.key == new.key:
        return ["the image was removed locally; its inputs are unchanged"]
    reasons: list[str] = []
    if (old.schema, old.builder) != (new.schema, new.builder):
        reasons.append(f"the key schema or builder changed ({old.builder} -> {new.builder})")
    if old.dockerfile != new.dockerfile:
        reasons.append("the recipe changed" if new.builder == RECIPE_BUILDER else "the Dockerfile changed")
    reasons += _diff_map("build arg", redacted(old.args), redacted(new.args))
    if old.target != new.target:
        reasons.append(f"target changed: {old.target} -> {new.target}")
    if old.platform != new.platform:
        reasons.append(f"platform changed: {old.platform} -> {new.platform}")
    reasons += _diff_map("base image", old.bases, new.bases, short=True)
    for name in sorted(set(old.parents) | set(new.parents)):
        before, after = old.parents.get(name), new.parents.get(name)
        if before != after:
            if before and after:
                reasons.append(f"parent {name} changed ({short_key(before)} -> {short_key(after)})")
            else:
                reasons.append(f"parent {name} {'added' if after else 'removed'}")
    files: list[str] = []
    for path in sorted(set(old.files) | set(new.files)):
        before, after = old.files.get(path), new.files.get(path)
        if before == after:
            continue
        if before is None:
            files.append(f"file added: {path}")
        elif after is None:
            files.append(f"file removed: {path}")
        else:
            files.append(f"file changed: {path} ({_file_change(before, after)})")
    if len(files) > limit:
        files = [*files[:limit], f"... and {len(files) - limit} more file changes"]
    return reasons + files


def _file_change(before: str, after: str) -> str:
    kind_a, mode_a, digest_a = split_entry(before)
    kind_b, mode_b, digest_b = split_entry(after)
    if kind_a != kind_b:
        names = {"f": "file", "d": "directory", "l": "symlink"}
        return f"{names[kind_a]} -> {names[kind_b]}"
    parts = []
    if mode_a != mode_b:
        parts.append(f"mode {mode_a:o} -> {mode_b:o}")
    if digest_a != digest_b:
        parts.append(f"link target {digest_a} -> {digest_b}" if kind_b == "l" else "content")
    return ", ".join(parts)


def _diff_map(what: str, old: Mapping[str, str], new: Mapping[str, str], *, short: bool = False) -> list[str]:
    def show(value: str) -> str:
        if what == "build arg" and value.startswith("sha256:"):
            return "(a secret)"
        return value[:19] + "..." if short and len(value) > 22 else value

    out = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            out.append(f"{what} added: {name}={show(after or '')}")
        elif after is None:
            out.append(f"{what} removed: {name}")
        else:
            out.append(f"{what} changed: {name}: {show(before)} -> {show(after)}")
    return out
