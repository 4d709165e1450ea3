"""Files that readers see whole or not at all: write under a temporary name in the same
directory, make it durable, rename.  A rename within one POSIX file system is atomic;
object stores (gs://) have no atomic rename, which is why releases and stores live on a
volume (deploy/README.md)."""
from __future__ import annotations

import os
import tempfile


def fsync_dir(path: str | os.PathLike) -> None:
    """Makes a rename in ``path`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """``data`` at ``path`` via a temporary file in the same directory and a rename:
    readers see the old content or the new, never a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


__all__ = ["fsync_dir", "fsync_file", "write_atomically"]
