"""Atomic file writes: a reader never sees a half-written file.

The text goes to a temporary file in the destination folder, is flushed to disk,
and then replaces the destination with ``os.replace`` (atomic on POSIX and Windows
when both paths are on the same file system, which they are here).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "atomic_write_json", "plain_permissions", "temporary_folder"]


def _default_mode(folder: bool) -> int:
    """The permissions a plain ``open``/``mkdir`` would give under the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def temporary_folder(parent: Path, prefix: str) -> Path:
    """A new folder in ``parent``, for an atomic rename into place, with the permissions a plain
    ``mkdir`` would give it (``tempfile.mkdtemp`` makes it private, 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, _default_mode(folder=True))
    return tmp


def plain_permissions(folder: Path) -> None:
    """Give every file and folder under ``folder`` the permissions a plain write would give
    under the umask (what libraries write through ``mkstemp``, such as safetensors' weights
    files, is private, 0600)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), _default_mode(folder=True))
        for name in files:
            os.chmod(os.path.join(root, name), _default_mode(folder=False))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; create missing parent folders.

    Returns the destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.chmod(tmp_name, _default_mode(folder=False))   # mkstemp's files are private (0600)
        with os.fdopen(fd, "w", encoding=encoding, newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    return dest


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, indent: int | None = 2, allow_nan: bool = False
) -> Path:
    """Serialise ``obj`` as JSON (UTF-8, ``ensure_ascii=False``, trailing newline) atomically.

    ``allow_nan=False`` by default: NaN and infinities are not valid JSON, and
    ``json.dumps`` raises ``ValueError`` for them before anything is written.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=allow_nan)
    return atomic_write_text(path, text + "\n")
