"""File helpers: output paths checked before any work, staged (all-or-nothing) writes, content hashes."""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# errno values that say the output PATH is wrong (bad input, exit 2), not that writing failed
PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.EEXIST}


class OutputError(ValueError):
    """An output path that cannot be written: one ``error:`` line, exit 2."""


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be created in the existing ``folder`` (None: they can). Side-effect free:
    ``os.access`` (which also sees a read-only mount and, for root, an immutable folder) and
    the mount's read-only flag."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    return None


def check_output(path: str | os.PathLike, kind: str = "file", flag: str | None = None) -> None:
    """Raise OutputError unless ``path`` can be written as ``kind`` (``file`` or ``folder``):
    a file must not be an existing folder, a folder not an existing file, no parent may be a
    file, and the nearest existing folder must be writable. Call it before any work; nothing is
    created (a full disk is not foreseen)."""
    path = Path(path)
    label = f"{flag} {path}" if flag else str(path)
    if kind == "file" and path.is_dir():
        raise OutputError(f"{label} is a folder; name the file to write")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise OutputError(f"{label} is a file, not a folder")
    if kind == "file" and path.exists() and not path.is_file():
        raise OutputError(f"{label} exists and is not a regular file")
    existing = _nearest_existing(path if kind == "folder" else path.parent)
    if not existing.is_dir():
        raise OutputError(f"{label}: {existing} is a file, not a folder")
    why = _unwritable(existing)
    if why is not None:
        raise OutputError(f"{label}: cannot write into {existing} ({why})")


def describe_os_error(err: OSError) -> str:
    """``strerror: filename`` of an OSError, without Python's ``[Errno n]``."""
    where = f": {err.filename}" if err.filename else ""
    return f"{err.strerror or type(err).__name__}{where}"


class Staged:
    """Write several files as one transaction: each is written to a temporary sibling and only
    renamed into place by ``commit()``; leaving the ``with`` block without committing removes
    them, and the folders ``path()`` created for them, so a failed run never leaves a
    half-written or unverified output behind. Cleanup never raises: a file it cannot remove is
    logged, and the error that ended the block is the one that propagates."""

    def __init__(self):
        self._pending: dict[Path, Path] = {}
        self._created: list[Path] = []

    def path(self, final: str | os.PathLike) -> Path:
        final = Path(final)
        missing, folder = [], final.parent
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        final.parent.mkdir(parents=True, exist_ok=True)
        self._created.extend(reversed(missing))
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        self._pending[final] = tmp
        return tmp

    def write_json(self, final: str | os.PathLike, payload) -> None:
        self.path(final).write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")

    def commit(self) -> None:
        for final, tmp in self._pending.items():
            os.replace(tmp, final)
        self._pending.clear()
        self._created.clear()

    def discard(self) -> None:
        """Remove the temporary files and the folders created for them; never raises."""
        for tmp in self._pending.values():
            try:
                tmp.unlink(missing_ok=True)
            except OSError as err:
                log.warning("warning: could not remove the temporary file %s: %s", tmp, describe_os_error(err))
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty (another writer) or already gone: leave it
        self._pending.clear()
        self._created.clear()

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
