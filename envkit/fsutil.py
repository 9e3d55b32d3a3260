"""Small file-system helpers shared by the modules that keep state on disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from envkit.errors import StateError


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and its missing parents) if needed, each mode 0700: envkit's own
    directories are readable by their owner only (``mkdir -p`` would give the parents 0755)."""
    missing = []
    for directory in (path, *path.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    try:
        for directory in reversed(missing):
            directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        raise StateError(path, err.strerror or str(err)) from None
    return path


IGNORE_ALL = "# envkit's state: nothing here belongs in version control\n*\n"


def ensure_state_dir(path: Path) -> Path:
    """A stack's state directory (``.envkit/`` in a project), created if needed, holding a
    ``.gitignore`` of ``*`` so that it never shows up in the project's ``git status``.

    One that other users may write to (a 0777 left by a copy or an umask) is made 0700: anyone
    who can write there could plant holder files that keep the stack up, or a state file.
    """
    ensure_private_dir(path)
    try:
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            path.chmod(0o700)
    except OSError as err:
        raise StateError(path, err.strerror or str(err)) from None
    ignore = path / ".gitignore"
    if not ignore.exists():
        try:
            ignore.write_text(IGNORE_ALL, encoding="utf-8")
        except OSError as err:
            raise StateError(ignore, err.strerror or str(err)) from None
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never a torn one."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise StateError(path, err.strerror or str(err)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise StateError(path, err.strerror or str(err)) from None
        raise
