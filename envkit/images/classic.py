"""The classic builder: ``docker build`` on a context tar envkit writes itself.

The context is a deterministic tar of exactly the files that were hashed
(sorted, owner 0, mtime 0, normalised modes), each hashed again as it is
written, so a file that changed since its key was computed fails the build
instead of producing an image that does not match its key. The Dockerfile is
rewritten first: references to the stack's other images point at their
content-addressed tags, and envkit's labels are appended as one ``LABEL``.

A build that fails after the engine made the image (the stream broke or stalled
after naming it, or named it only in ``Successfully built ID``) removes that
image, untagged and labelled, before it raises. One killed outright leaves it
to ``envkit gc`` (:mod:`envkit.images.gc`), which finds it by its labels.
"""

from __future__ import annotations

import collections
import io
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from envkit.config.model import ImageSpec
from envkit.docker.engine import Daemon
from envkit.errors import BuildError, DaemonError
from envkit.images.archive import CheckedReader, discard
from envkit.images.digest import Inputs, split_entry
from envkit.images.dockerfile import parse as parse_dockerfile
from envkit.progress import Progress
from envkit.settings import BUILD_STALL

LOG_TAIL = 30
DOCKERFILE_IN_TAR = ".envkit.Dockerfile"
_BUILT = re.compile(r"^Successfully built ([0-9a-f]{12,64})$")


def build(
    daemon: Daemon,
    spec: ImageSpec,
    inputs: Inputs,
    *,
    parents: Mapping[str, str],
    labels: Mapping[str, str],
    progress: Progress,
    stall: float | None = None,
) -> str:
    """Build ``spec`` from ``inputs`` (its parents at the tags ``parents`` names); the image ID.

    The tag is applied by the caller only after success, so a failed build
    never leaves a tag behind.
    """
    text = parse_dockerfile(spec.dockerfile_text).rewrite(
        spec.args, parents, labels=labels, target=spec.target
    )
    made = _Made()
    try:
        return _run(daemon, spec, inputs, text, made, progress=progress, stall=stall)
    except BaseException:
        if made.image:  # the engine made the image, and this build fails: nobody will tag it
            discard(daemon, made.image, labels)
        raise


@dataclass
class _Made:
    """What the builder said it made: the ID (as the engine names it), and the short ID of
    ``Successfully built ID`` in its log (which names the image when the engine names none)."""

    image_id: str = ""
    built: str = ""

    @property
    def image(self) -> str:
        return self.image_id or self.built


def _run(
    daemon: Daemon,
    spec: ImageSpec,
    inputs: Inputs,
    text: str,
    made: _Made,
    *,
    progress: Progress,
    stall: float | None,
) -> str:
    """Send the context with ``text`` as its Dockerfile and read the stream to its end (noting in
    ``made`` the image it names, as soon as it does); the image ID."""
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)

    def on_line(line: str) -> None:
        tail.append(line)
        progress.log(spec.name, line)
        found = _BUILT.match(line.strip())
        made.built = found.group(1) if found else made.built

    def on_image(image_id: str) -> None:
        made.image_id = image_id

    with tempfile.TemporaryFile() as context:
        write_context(context, spec, inputs, text)
        size = context.tell()
        context.seek(0)
        try:
            daemon.build(  # reads the stream to its end, also after an error
                context,
                size,
                dockerfile=DOCKERFILE_IN_TAR,
                buildargs=spec.args,
                target=spec.target,
                platform=spec.platform,
                stall=stall,
                on_line=on_line,
                on_image=on_image,
            )
        except DaemonError as err:
            if err.timed_out:
                raise BuildError(
                    spec.name,
                    f"the builder printed nothing for {stall or 0:g}s: it is stuck, or a step is that silent",
                    list(tail),
                    fix=f"check the daemon (`docker info`); for a step silent longer, raise {BUILD_STALL}",
                ) from None
            raise BuildError(spec.name, err.detail, list(tail)) from None
    if not made.image_id:
        raise BuildError(spec.name, "the builder reported no image ID", list(tail))
    return made.image_id


def write_context(fileobj: IO[bytes], spec: ImageSpec, inputs: Inputs, dockerfile_text: str) -> None:
    """A deterministic tar of exactly the hashed files: sorted, owner 0, mtime 0.

    Each file's content is hashed again as it is written; one that no longer
    matches its digest fails the build. The Dockerfile travels under a private
    name that a generated ``.dockerignore`` tells the daemon to drop before
    ``COPY`` sees the context.
    """
    import tarfile  # only a build needs it; a no-op build starts faster without it

    def _tarinfo(name: str, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode = mode
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, entry in inputs.files.items():
            kind, mode, digest = split_entry(entry)
            info = _tarinfo(path, mode)
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "l":
                info.type = tarfile.SYMTYPE
                info.linkname = digest
                tar.addfile(info)
            else:
                try:
                    with open(spec.context / path, "rb") as f:
                        info.size = os.fstat(f.fileno()).st_size
                        checked = CheckedReader(f, info.size)
                        tar.addfile(info, checked)
                        unchanged = checked.hexdigest() == digest
                except OSError:  # deleted or truncated since it was hashed
                    unchanged = False
                if not unchanged:
                    raise BuildError(
                        spec.name,
                        f"{spec.context / path} changed while the build was being prepared; "
                        "run the build again",
                    )
        for name, data in (
            (DOCKERFILE_IN_TAR, dockerfile_text.encode("utf-8")),
            (".dockerignore", f".dockerignore\n{DOCKERFILE_IN_TAR}\n".encode()),
        ):
            info = _tarinfo(name, 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
