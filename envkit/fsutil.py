"""Small file-system helpers shared by the modules that keep state on disk."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from envkit.errors import StateDirUnsafe, StateError


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

    One that other users may write to is refused (see :func:`check_state_dir`); one of ours
    that its group may read or write (an umask's 0775) is made 0700.
    """
    ensure_private_dir(path)
    st = check_state_dir(path)
    try:
        if st is not None and st.st_mode & 0o077:
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


def check_state_dir(path: Path) -> os.stat_result | None:
    """:class:`StateDirUnsafe` if the state directory ``path`` belongs to another user, or every
    user may write to it; its ``stat`` otherwise (None: there is none).

    Anyone who can write there could plant holder files that keep the stack up, a state file,
    or a link that envkit would write through. Making such a directory private now would keep
    what was planted already, so it is not used at all, not even read.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateError(path, err.strerror or str(err)) from None
    if st.st_uid != os.geteuid():
        raise StateDirUnsafe(
            path, f"it belongs to another user (uid {st.st_uid}; you are uid {os.geteuid()})"
        )
    if st.st_mode & stat.S_IWOTH:
        raise StateDirUnsafe(path, f"every user may write to it (mode {stat.S_IMODE(st.st_mode):04o})")
    return st


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


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of a file only its owner may read (mode 0600), created if missing. A file that
    exists keeps its mode through ``O_CREAT`` (0600 applies to new files only), so an older one
    left 0644 is made 0600 here; a symbolic link is not followed."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd
