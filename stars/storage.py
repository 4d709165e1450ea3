"""Artefact storage: one set of file operations for local paths and object stores.

Pipeline roots and data directories may be URLs (``gs://``, ``s3://``, ``hdfs://``) when the
pipeline runs on Vertex AI or Kubeflow. Every component reads and writes through TFX's
``fileio``, which hands URLs to TensorFlow's filesystems and local paths to the local one,
so a component never needs to know where its artefacts live. ``fileio`` (and with it
TensorFlow) is imported on first use: the data CLI stays quick to start.

What object stores lack, and this module does not pretend to offer: atomic renames of
directories, POSIX locks, SQLite. State that needs them (MLMD, releases, the embedded
user store) lives on a local path -- see ``pipeline.configs.PipelineConfig``.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
from typing import IO, Any, List


def _fileio():
    from tfx.dsl.io import fileio
    return fileio


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL (``gs://bucket/x``), False for a local path."""
    return "://" in os.fspath(path)


def join(base: str | os.PathLike, *parts: str) -> str:
    """``os.path.join`` for local paths, ``/``-joined for URLs."""
    base = os.fspath(base)
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(base, *parts)


def basename(path: str | os.PathLike) -> str:
    return posixpath.basename(os.fspath(path).rstrip("/"))


def open(path: str | os.PathLike, mode: str = "r") -> IO[Any]:  # noqa: A001 - io.open's twin
    return _fileio().open(os.fspath(path), mode)


def exists(path: str | os.PathLike) -> bool:
    return _fileio().exists(os.fspath(path))


def isdir(path: str | os.PathLike) -> bool:
    return _fileio().isdir(os.fspath(path))


def isfile(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    return _fileio().exists(path) and not _fileio().isdir(path)


def makedirs(path: str | os.PathLike) -> None:
    _fileio().makedirs(os.fspath(path))


def listdir(path: str | os.PathLike) -> List[str]:
    """Entry names; object stores mark directories with a trailing ``/``, dropped here."""
    return [name.rstrip("/") for name in _fileio().listdir(os.fspath(path))]


def glob(pattern: str | os.PathLike) -> List[str]:
    """Sorted matches. Keep wildcards in the last path component: TensorFlow's modular
    GCS filesystem matches nothing for ``gs://b/*/x`` (Beam's FileSystems does)."""
    return sorted(_fileio().glob(os.fspath(pattern)))


def size(path: str | os.PathLike) -> int:
    return int(_fileio().stat(os.fspath(path)).length)


def copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    _fileio().copy(os.fspath(source), os.fspath(target), overwrite=True)


def rename(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Atomic on local disks; a copy and a delete on object stores (readers there must
    not depend on it, and names are run-unique where two writers could meet)."""
    _fileio().rename(os.fspath(source), os.fspath(target), overwrite=True)


def rmtree(path: str | os.PathLike) -> None:
    """Removes a directory tree; absent is fine."""
    path = os.fspath(path)
    if _fileio().exists(path):
        _fileio().rmtree(path)


def read_text(path: str | os.PathLike) -> str:
    with open(path) as f:
        return f.read()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text``, creating the parent directory first."""
    makedirs(posixpath.dirname(os.fspath(path)) if is_remote(path)
             else os.path.dirname(os.path.abspath(path)))
    with open(path, "w") as f:
        f.write(text)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(read_text(path))


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(value, indent=indent, sort_keys=True))


def read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class _Reader(io.RawIOBase):
    """A seekable binary reader over a fileio file. pyarrow and zipfile need ``closed``,
    ``seekable()`` and ``readinto``, which TensorFlow's GFile does not provide."""

    def __init__(self, path: str):
        self._file = open(path, "rb")
        self._size = size(path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._file.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset += self._size
        elif whence == io.SEEK_CUR:
            offset += self._file.tell()
        self._file.seek(offset)
        return offset

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def binary_reader(path: str | os.PathLike) -> io.BufferedReader:
    """A seekable, buffered binary file for pyarrow, zipfile and numpy."""
    return io.BufferedReader(_Reader(os.fspath(path)), buffer_size=1 << 20)
