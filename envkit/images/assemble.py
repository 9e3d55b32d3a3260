"""envkit's own image builder, for Dockerfiles that need no container: no ``RUN``.

A Dockerfile whose target stage (and the stages it builds ``FROM``) uses only
``FROM``, ``ARG``, ``ENV``, ``LABEL``, ``WORKDIR``, ``USER``, ``COPY``/``ADD`` of
context files, ``EXPOSE``, ``VOLUME``, ``CMD``, ``ENTRYPOINT``, ``SHELL``,
``STOPSIGNAL`` and ``HEALTHCHECK`` is assembled here, the way the classic
builder would build it, without it: each ``COPY`` (and each ``WORKDIR`` that
creates a directory) becomes a deterministic layer tar of exactly the hashed
files (sorted, mtime 0, owner 0 unless ``--chown``, normalised modes), the
image config inherits the parent's as the classic builder does, with a fixed
``created`` and no host or container fields, and an archive that names the
parent's layers without carrying them is loaded (:mod:`envkit.images.archive`:
one that every engine and image store reads). No context is uploaded and no
container starts; the image ID is the digest of the config (or, on Docker's
containerd store, of the manifest), so the same key gives the same image on
every machine.

What the builder would need to look inside the image for (is a ``COPY``
destination an existing directory, which owner does it have) is answered from
the parent's facts (:mod:`envkit.images.facts`). What this cannot do the same
way (a parent with ``ONBUILD`` triggers, an ``ADD`` of an archive, a path
through a symlink, a source that matches nothing...) raises
:class:`CannotAssemble`, and the classic builder builds the image instead.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envkit.config.model import ImageSpec
from envkit.docker.engine import Daemon
from envkit.errors import BuildError, DaemonError
from envkit.images.digest import Inputs, split_entry
from envkit.images.dockerfile import Dockerfile, Instruction, parse
from envkit.images.words import WordError, json_list, pairs, split, word, words

if TYPE_CHECKING:  # the assembler's own modules load tarfile: not on the no-op build path
    from envkit.images.archive import Blob, LayerWriter
    from envkit.images.facts import FactsCache
    from envkit.images.parent import Tree

SUPPORTED = frozenset(
    {
        "FROM", "ARG", "ENV", "LABEL", "WORKDIR", "USER", "COPY", "ADD", "EXPOSE", "VOLUME",
        "CMD", "ENTRYPOINT", "SHELL", "STOPSIGNAL", "HEALTHCHECK",
    }
)  # fmt: skip
DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the builder's, for Linux
_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


class CannotAssemble(Exception):
    """What makes this image one for the classic builder; ``str()`` says why."""


def verdict(spec: ImageSpec) -> str | None:
    """None if envkit can assemble ``spec`` (so far as the Dockerfile alone tells), else why not.

    Decided before anything is built: it chooses the builder, whose identity is part of the key.
    """
    if spec.recipe is not None or spec.dockerfile is None:
        return "a Debian recipe"
    dockerfile = parse(spec.dockerfile_text)
    try:
        chain = _stage_chain(dockerfile, spec.target, spec.args)
    except CannotAssemble as err:
        return str(err)
    for index in chain:
        for number, ins in _stage_instructions(dockerfile, index):
            if ins.keyword not in SUPPORTED:
                return f"{ins.keyword} at line {number + 1} needs the classic builder"
            if ins.keyword in ("COPY", "ADD"):
                for flag in _flags(ins.args)[0]:
                    name = flag.partition("=")[0]
                    if name != "--chown":
                        return f"{ins.keyword} {name} at line {number + 1} needs the classic builder"
                if ins.keyword == "ADD" and "://" in ins.args:
                    return f"ADD of a URL at line {number + 1} needs the classic builder"
    return None


def _stage_starts(dockerfile: Dockerfile) -> list[int]:
    return [i for i, ins in enumerate(dockerfile.instructions) if ins.keyword == "FROM"]


def _stage_instructions(dockerfile: Dockerfile, stage: int) -> list[tuple[int, Instruction]]:
    """The instructions of stage ``stage`` (0-based), its FROM first, with their line numbers."""
    starts = _stage_starts(dockerfile)
    end = starts[stage + 1] if stage + 1 < len(starts) else len(dockerfile.instructions)
    return [(ins.first_line, ins) for ins in dockerfile.instructions[starts[stage] : end]]


def _stage_chain(dockerfile: Dockerfile, target: str | None, build_args: Mapping[str, str]) -> list[int]:
    """The stages the target stage builds on (through ``FROM <stage>``), oldest first."""
    starts = _stage_starts(dockerfile)
    if not starts:
        raise CannotAssemble("no FROM")
    names = [_stage_name(dockerfile.instructions[i].args) for i in starts]
    index = len(starts) - 1 if target is None else names.index(target.lower())
    chain = [index]
    while True:
        base = _from_ref(dockerfile.instructions[starts[chain[0]]].args, _global_args(dockerfile, build_args))
        earlier = [i for i in range(chain[0]) if names[i] == base.lower()]
        if not earlier:
            return chain
        chain.insert(0, earlier[-1])


def _stage_name(args: str) -> str | None:
    parts = [w for w in args.split() if not w.startswith("--")]
    return parts[-1].lower() if len(parts) >= 3 and parts[-2].lower() == "as" else None


def _global_args(dockerfile: Dockerfile, build_args: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for ins in dockerfile.instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            for name, default in _arg_declarations(ins.args, values, dockerfile.escape):
                if name in build_args:
                    values[name] = build_args[name]
                elif default is not None:
                    values[name] = default
    return values


def _from_ref(args: str, env: Mapping[str, str]) -> str:
    parts = [w for w in args.split() if not w.startswith("--")]
    return word(parts[0], env) if parts else ""


def _arg_declarations(args: str, env: Mapping[str, str], escape: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for raw in split(args, escape):
        name, eq, default = raw.partition("=")
        out.append((name, word(default, env, escape) if eq else None))
    return out


def _flags(args: str) -> tuple[list[str], str]:
    """Leading ``--flag=value`` words, and the rest."""
    flags = []
    rest = args.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.strip()
    return flags, rest


@dataclass
class _Entry:
    """One entry of a layer: where it goes and what it is."""

    kind: str  # "d", "f", "l"
    mode: int
    uid: int
    gid: int
    source: Path | None = None  # a file's content, in the context
    digest: str = ""  # ... and its expected sha256
    target: str = ""  # a symlink's target


@dataclass
class _Image:
    """The image being assembled: what the config will say, its layers and its tree."""

    config: dict[str, Any]  # the parent's image config (canonical), changed as instructions go
    tree: Tree
    diff_ids: list[str]
    history: list[dict[str, Any]]
    blobs: list[Blob] = field(default_factory=list)  # every layer as the manifest names it
    layers: list[tuple[str, Path]] = field(default_factory=list)  # our layers: diff id, tar file
    env: dict[str, str] = field(default_factory=dict)  # ARG values of this stage, for substitution
    cmd_set: bool = False

    @property
    def run(self) -> dict[str, Any]:
        """The container config part (Env, Cmd, ...)."""
        run: dict[str, Any] = self.config.setdefault("config", {})
        return run

    def variables(self) -> dict[str, str]:
        """What ``$VAR`` means here: the stage's ARGs, then the image's ENV (which wins)."""
        out = dict(self.env)
        for item in self.run.get("Env") or []:
            name, _, value = str(item).partition("=")
            out[name] = value
        return out


class Assembler:
    """Assembles one image; see the module docstring."""

    def __init__(
        self,
        daemon: Daemon,
        spec: ImageSpec,
        inputs: Inputs,
        *,
        parents: Mapping[str, str],
        labels: Mapping[str, str],
        facts: FactsCache,
        platform: str,
        stall: float | None,
    ) -> None:
        self.daemon = daemon
        self.spec = spec
        self.inputs = inputs
        self.parents = parents
        self.labels = labels
        self.facts = facts
        self.platform = platform
        self.stall = stall
        self.dockerfile = parse(spec.dockerfile_text)
        self.escape = self.dockerfile.escape
        from envkit.images.parent import Parents

        self.known = Parents(daemon, facts, labels, stall)

    def assemble(self, workdir: Path) -> str:
        """Write the image's new layers and config under ``workdir`` and load it (untagged); its ID.

        CannotAssemble: the classic builder's job (nothing was loaded).
        """
        from envkit.images import archive
        from envkit.images.facts import ImageFacts

        image = self._target(workdir)
        labels = dict(image.run.get("Labels") or {})
        labels.update(self.labels)
        image.run["Labels"] = labels
        config = self._config(image)
        raw = archive.config_bytes(config)
        image_id = archive.load(
            self.daemon,
            self.spec.name,
            raw,
            layers=image.blobs,
            new_layers=dict(image.layers),
            workdir=workdir,
            stall=self.stall,
        )
        if image.tree.complete:  # else a child looks this image up in turn
            self.facts.put(image_id, ImageFacts(config, image.tree.whole(), list(image.blobs)))
        return image_id

    # -- the stages ---------------------------------------------------------------------------

    def _target(self, tmp: Path) -> _Image:
        """The target stage, assembled: parents looked up where they can be, else (a lookup that
        cannot tell, or fails) from their facts."""
        try:
            try:
                return self._stages(tmp)
            except (CannotAssemble, BuildError):
                raise
            except Exception as err:
                if not self.known.fall_back(err):
                    raise
            return self._stages(tmp)
        finally:
            self.known.close()

    def _stages(self, tmp: Path) -> _Image:
        chain = _stage_chain(self.dockerfile, self.spec.target, self.spec.args)
        global_args = _global_args(self.dockerfile, self.spec.args)
        image: _Image | None = None
        for stage in chain:
            instructions = _stage_instructions(self.dockerfile, stage)
            base = _from_ref(instructions[0][1].args, global_args)
            if image is None or _stage_name_of(self.dockerfile, chain, base) is None:
                image = self._base(base)
            image.env = {}
            image.cmd_set = False
            _begin_stage(image.run)
            for number, ins in instructions[1:]:
                self._instruction(image, number, ins, tmp)
        assert image is not None
        return image

    def _base(self, ref: str) -> _Image:
        if ref == "scratch":
            from envkit.images.archive import EPOCH, platform_fields

            config: dict[str, Any] = {**platform_fields(self.platform), "config": {}, "created": EPOCH}
            from envkit.images.parent import Tree

            return _Image(config=config, tree=Tree({}), diff_ids=[], history=[])
        resolved = self.parents.get(ref, ref)
        try:
            found = self.daemon.inspect_image(resolved)
        except DaemonError as err:
            raise CannotAssemble(f"cannot look at {resolved}: {err.detail}") from None
        if found is None:
            raise CannotAssemble(f"the base image {resolved} is not present")
        from envkit.images.parent import CannotRead

        try:
            config, tree, blobs = self.known.known(resolved, str(found["Id"]), found)
        except CannotRead as err:
            raise CannotAssemble(str(err)) from None
        run = config["config"]
        if run.get("OnBuild"):
            raise CannotAssemble(f"its base {resolved} has ONBUILD triggers")
        diff_ids = list(config["rootfs"]["diff_ids"])
        from envkit.images.archive import Blob

        if len(blobs) != len(diff_ids):  # not known: name each layer by its diff id
            if self.daemon.engine.store == "containerd":  # keeps pulled layers compressed
                raise CannotAssemble(f"the blobs of its base {resolved}'s layers are not known")
            blobs = [Blob(diff_id, 0) for diff_id in diff_ids]
        return _Image(
            config=config,
            tree=tree,
            diff_ids=diff_ids,
            history=list(config["history"]),
            blobs=blobs,
        )

    # -- the instructions ---------------------------------------------------------------------

    def _instruction(self, image: _Image, number: int, ins: Instruction, tmp: Path) -> None:
        try:
            layer = self._apply(image, ins, tmp)
        except WordError as err:
            raise CannotAssemble(f"line {number + 1}: {err}") from None
        created = image.config.get("created")  # the parent's (a canonical config may have none)
        entry: dict[str, Any] = {"created": created} if created else {}
        entry["created_by"] = f"{ins.keyword} {ins.args}".strip()
        if layer is None:
            entry["empty_layer"] = True
        image.history.append(entry)

    def _apply(self, image: _Image, ins: Instruction, tmp: Path) -> str | None:
        """Carry out one instruction; the diff id of the layer it made, if it made one."""
        run, keyword, args, esc = image.run, ins.keyword, ins.args, self.escape
        if keyword == "ARG":
            for name, default in _arg_declarations(args, image.variables(), esc):
                value = self.spec.args.get(name, default)
                if value is not None:
                    image.env[name] = value
            return None
        if keyword in _CONFIG_ONLY:
            _configure(image, keyword, args, esc)
            return None
        if keyword == "WORKDIR":
            requested = word(args, image.variables(), esc)
            current = run.get("WorkingDir") or "/"
            path = posixpath.normpath(posixpath.join(current, requested))
            run["WorkingDir"] = path
            entries: dict[str, _Entry] = {}
            self._parents(image, path.strip("/") + "/x", (0, 0), entries)
            if not any(p not in image.tree for p in entries):
                return None  # it exists: nothing to commit
            return _write_layer(self.spec.name, image, entries, tmp)
        if keyword in ("COPY", "ADD"):
            return self._copy(image, ins, tmp)
        raise CannotAssemble(f"{keyword} needs the classic builder")

    # -- COPY and ADD ---------------------------------------------------------------------------

    def _copy(self, image: _Image, ins: Instruction, tmp: Path) -> str:
        variables = image.variables()
        flags, rest = _flags(ins.args)
        uid = gid = 0
        for flag in flags:
            name, _, value = flag.partition("=")
            if name != "--chown":
                raise CannotAssemble(f"{ins.keyword} {name} needs the classic builder")
            owner = word(value, variables, self.escape)
            user, _, group = owner.partition(":")
            if not user.isdigit() or (group and not group.isdigit()):
                raise CannotAssemble(f"--chown={owner} names a user or group: the image's passwd decides")
            uid, gid = int(user), int(group or user)
        listed = json_list(rest)
        items = (
            [word(w, variables, self.escape) for w in listed]
            if listed is not None
            else words(rest, variables, self.escape)
        )
        if len(items) < 2:
            raise CannotAssemble(f"{ins.keyword} needs a source and a destination")
        *sources, raw_dest = items
        workdir = image.run.get("WorkingDir") or "/"
        dest = posixpath.normpath(posixpath.join("/", workdir, raw_dest)).strip("/")
        matched: list[str] = []
        for source in sources:
            found = _match(self.inputs.files, source)
            if not found:
                raise CannotAssemble(f"{ins.keyword} source {source!r} matches nothing in the context")
            matched += found
        into = raw_dest.endswith("/") or len(matched) > 1 or self._is_dir(image, dest)
        if len(matched) > 1 and not raw_dest.endswith("/") and not self._is_dir(image, dest):
            raise CannotAssemble(f"{ins.keyword} of several sources to {raw_dest!r}: it must end with /")
        entries: dict[str, _Entry] = {}
        for named in matched:
            source = self._follow(named)  # the builder follows a source that is a symlink
            kind = self._kind(source)
            if kind == "d":
                if dest:
                    self._parents(image, dest + "/x", (uid, gid), entries)
                prefix = "" if source == "." else source + "/"
                for path in self.inputs.files:
                    if path.startswith(prefix):
                        target = posixpath.join(dest, path[len(prefix) :])
                        self._add(image, target, path, owner=(uid, gid), entries=entries)
                continue
            target = posixpath.join(dest, posixpath.basename(named)) if into else dest
            if ins.keyword == "ADD" and kind == "f" and _is_archive(self.spec.context / source):
                raise CannotAssemble(
                    f"ADD of the archive {source!r} unpacks it: the classic builder does that"
                )
            self._add(image, target, source, owner=(uid, gid), entries=entries)
        return _write_layer(self.spec.name, image, entries, tmp)

    def _follow(self, path: str) -> str:
        """The context path a source names once its symlinks are followed (as the builder does,
        inside the context only)."""
        seen: set[str] = set()
        while path != "." and self._kind(path) == "l":
            if path in seen or len(seen) > 40:
                raise CannotAssemble(f"the source {path!r} is a symlink loop")
            seen.add(path)
            target = split_entry(self.inputs.files[path])[2]
            joined = posixpath.normpath(posixpath.join("/", posixpath.dirname(path), target))
            resolved = joined.strip("/") or "."
            if resolved != "." and resolved not in self.inputs.files:
                raise CannotAssemble(f"the source {path!r} is a symlink to {target!r}, not in the context")
            path = resolved
        return path

    def _kind(self, path: str) -> str:
        if path == ".":
            return "d"
        return split_entry(self.inputs.files[path])[0]

    def _is_dir(self, image: _Image, path: str) -> bool:
        node = image.tree.get(path)
        if node is not None and node.kind == "l":
            raise CannotAssemble(f"/{path} is a symlink in the image: the classic builder follows it")
        return node is not None and node.kind == "d"

    def _add(
        self, image: _Image, target: str, source: str, *, owner: tuple[int, int], entries: dict[str, _Entry]
    ) -> None:
        uid, gid = owner
        entry = self.inputs.files[source]
        self._parents(image, target, owner, entries)
        kind, mode, digest = split_entry(entry)
        existing = image.tree.get(target)
        if existing is not None and existing.kind == "d" and kind != "d":
            raise CannotAssemble(f"/{target} is a directory in the image")
        if kind == "d":
            node = existing if existing is not None and existing.kind == "d" else None
            entries[target] = _Entry("d", node.mode if node else mode, uid, gid)
        elif kind == "l":
            entries[target] = _Entry("l", 0o777, uid, gid, target=digest)
        else:
            entries[target] = _Entry("f", mode, uid, gid, source=self.spec.context / source, digest=digest)

    def _parents(self, image: _Image, path: str, owner: tuple[int, int], entries: dict[str, _Entry]) -> None:
        """The directories above ``path``: as they are in the image, or new (0755, the owner)."""
        uid, gid = owner
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent in entries:
                continue
            node = image.tree.get(parent)
            if node is None:
                entries[parent] = _Entry("d", 0o755, uid, gid)
            elif node.kind == "d":
                entries[parent] = _Entry("d", node.mode, node.uid, node.gid)
            else:
                raise CannotAssemble(f"/{parent} is not a directory in the image")

    # -- layers, config, archive ----------------------------------------------------------------

    def _config(self, image: _Image) -> dict[str, Any]:
        config = dict(image.config)
        config["rootfs"] = {"type": "layers", "diff_ids": list(image.diff_ids)}
        config["history"] = list(image.history)
        return config


_CONFIG_ONLY = frozenset(
    {"ENV", "LABEL", "USER", "STOPSIGNAL", "EXPOSE", "VOLUME", "SHELL", "CMD", "ENTRYPOINT", "HEALTHCHECK"}
)


def _set_env(env: list[str], name: str, value: str) -> None:
    """Set ``name`` in ``env`` as the classic builder's ENV does: in place of the first entry of
    that name (its place kept, any later duplicate left alone), else appended at the end."""
    for i, item in enumerate(env):
        if item.partition("=")[0] == name:
            env[i] = f"{name}={value}"
            return
    env.append(f"{name}={value}")


def _configure(image: _Image, keyword: str, args: str, esc: str) -> None:  # noqa: PLR0911
    """Carry out an instruction that changes only the image's config."""
    run = image.run
    if keyword == "ENV":
        env = [str(e) for e in run.get("Env") or []]
        for name, value in pairs(args, image.variables(), esc):  # all substituted first
            _set_env(env, name, value)
        run["Env"] = env
        return
    if keyword == "LABEL":
        labels = dict(run.get("Labels") or {})
        labels.update(pairs(args, image.variables(), esc))
        run["Labels"] = labels
        return
    if keyword == "USER":
        run["User"] = word(args, image.variables(), esc)
        return
    if keyword == "STOPSIGNAL":
        run["StopSignal"] = word(args, image.variables(), esc)
        return
    if keyword == "EXPOSE":
        ports = dict(run.get("ExposedPorts") or {})
        for item in words(args, image.variables(), esc):
            ports.update({port: {} for port in _ports(item)})
        run["ExposedPorts"] = ports
        return
    if keyword == "VOLUME":
        volumes = dict(run.get("Volumes") or {})
        listed = json_list(args)
        for path in listed if listed is not None else words(args, image.variables(), esc):
            volumes[word(path, image.variables(), esc) if listed is not None else path] = {}
        run["Volumes"] = volumes
        return
    if keyword == "SHELL":
        shell = json_list(args)
        if not shell:
            raise CannotAssemble("SHELL needs a JSON array")
        run["Shell"] = shell
        return
    if keyword in ("CMD", "ENTRYPOINT"):
        command = json_list(args)
        argv = command if command is not None else [*(run.get("Shell") or DEFAULT_SHELL), args]
        if keyword == "CMD":
            run["Cmd"] = argv
            image.cmd_set = True
        else:
            run["Entrypoint"] = argv
            if not image.cmd_set:
                run["Cmd"] = None  # an ENTRYPOINT resets a CMD inherited from the base
        return
    if keyword == "HEALTHCHECK":
        run["Healthcheck"] = _healthcheck(args)
        return


def _write_layer(name: str, image: _Image, entries: Mapping[str, _Entry], tmp: Path) -> str:
    """Write ``entries`` as a deterministic layer tar; its diff id."""
    import tarfile

    from envkit.images.archive import Blob, LayerWriter
    from envkit.images.facts import Node

    with LayerWriter(tmp / f"layer-{len(image.layers)}.tar") as layer:
        for path in sorted(entries):
            entry = entries[path]
            info = tarfile.TarInfo(path + ("/" if entry.kind == "d" else ""))
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 0
            if entry.kind == "d":
                info.type = tarfile.DIRTYPE
                layer.add(info)
            elif entry.kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                layer.add(info)
            else:
                _add_file(name, layer, info, entry)
            image.tree[path] = Node(entry.kind, entry.mode, entry.uid, entry.gid, entry.target)
    image.layers.append((layer.diff_id, layer.path))
    image.diff_ids.append(layer.diff_id)
    image.blobs.append(Blob(layer.diff_id, layer.path.stat().st_size))
    return layer.diff_id


def _add_file(image_name: str, layer: LayerWriter, info: Any, entry: _Entry) -> None:
    """Add a context file, hashed again as it is written: one that changed since its key was
    computed fails the build (the layer is thrown away) instead of making a wrong image."""
    from envkit.images.archive import CheckedReader

    assert entry.source is not None
    try:
        with entry.source.open("rb") as f:
            info.size = os.fstat(f.fileno()).st_size
            checked = CheckedReader(f, info.size)
            layer.add(info, checked)
            unchanged = checked.hexdigest() == entry.digest
    except OSError:  # deleted or truncated since it was hashed
        unchanged = False
    if not unchanged:
        raise BuildError(
            image_name,
            f"{entry.source} changed while the image was being assembled; run the build again",
        )


def _stage_name_of(dockerfile: Dockerfile, chain: Sequence[int], ref: str) -> str | None:
    """``ref`` when it names a stage of ``chain``, else None."""
    starts = _stage_starts(dockerfile)
    names = {_stage_name(dockerfile.instructions[starts[i]].args) for i in chain}
    return ref.lower() if ref.lower() in names else None


def _match(files: Mapping[str, str], source: str) -> list[str]:
    """The context paths a COPY source names (Go's filepath.Match for wildcards)."""
    clean = posixpath.normpath("/" + source).strip("/") or "."
    if clean == ".":
        return ["."]
    if not any(ch in clean for ch in "*?[\\"):
        return [clean] if clean in files else []
    pattern = _glob(clean)
    return [p for p in files if pattern.fullmatch(p)]


def _glob(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match as a regex: ``*`` and ``?`` stop at ``/``; classes; escapes."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise CannotAssemble(f"bad pattern {pattern!r}")
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


def _ports(item: str) -> Iterator[str]:
    port, _, proto = item.partition("/")
    proto = (proto or "tcp").lower()
    low, _, high = port.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        raise CannotAssemble(f"EXPOSE {item!r} is not a port")
    for number in range(int(low), int(high or low) + 1):
        yield f"{number}/{proto}"


def _healthcheck(args: str) -> dict[str, Any]:
    flags, rest = _flags(args)
    keyword, _, command = rest.partition(" ")
    if keyword.upper() == "NONE":
        return {"Test": ["NONE"]}
    if keyword.upper() != "CMD":
        raise CannotAssemble("HEALTHCHECK needs CMD or NONE")
    listed = json_list(command.strip())
    check: dict[str, Any] = {
        "Test": ["CMD", *listed] if listed is not None else ["CMD-SHELL", command.strip()]
    }
    for flag in flags:
        name, _, value = flag.partition("=")
        key = {"--interval": "Interval", "--timeout": "Timeout", "--start-period": "StartPeriod"}.get(name)
        if key is not None:
            nanoseconds = _duration(value)
            if nanoseconds:
                check[key] = nanoseconds
        elif name == "--retries" and value.isdigit():
            if int(value):
                check["Retries"] = int(value)
        else:
            raise CannotAssemble(f"HEALTHCHECK {name} needs the classic builder")
    return check


def _duration(text: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in nanoseconds."""
    if text in ("0", ""):
        return 0
    total, position = 0, 0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        total += int(float(match.group(1)) * _UNITS[match.group(2)])
        position = match.end()
    if position != len(text):
        raise CannotAssemble(f"{text!r} is not a duration")
    return total


def _is_archive(path: Path) -> bool:
    """Whether ADD would unpack this file (a tar, or a compressed one), by its first bytes."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar"


def _begin_stage(run: dict[str, Any]) -> None:
    """What the classic builder does to the parent's config as a stage begins."""
    env = [str(e) for e in run.get("Env") or []]
    if not any(e.partition("=")[0] == "PATH" for e in env):
        run["Env"] = [*env, f"PATH={DEFAULT_PATH}"]
    run["OpenStdin"] = False
    run["StdinOnce"] = False


def build(
    daemon: Daemon,
    spec: ImageSpec,
    inputs: Inputs,
    *,
    parents: Mapping[str, str],
    labels: Mapping[str, str],
    facts: FactsCache,
    platform: str,
    stall: float | None,
) -> str:
    """Assemble ``spec`` and load it (untagged); its image ID (CannotAssemble: the classic builder's)."""
    import tempfile

    assembler = Assembler(
        daemon, spec, inputs, parents=parents, labels=labels, facts=facts, platform=platform, stall=stall
    )
    with tempfile.TemporaryDirectory(prefix="envkit-assemble-") as workdir:
        return assembler.assemble(Path(workdir))
