"""Data fingerprints: what a pipeline step read, by content, for TFX's cache key.

TFX caches an execution under (component, exec properties, input artifacts).  An
ExampleGen's only input is a directory name, so with caching on, an edited file in
the same directory would be a cache hit and the pipeline would train on stale data.
A fingerprint of the table files (name, size, SHA-256 of the bytes) passed as an exec
property makes the key change exactly when the data does.  Bytes, not parsed rows:
hashing streams at disk speed, and any change a reader could see changes the bytes.
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

from stars import storage
from stars.data import contract

CHUNK_BYTES = 1 << 20  # files are hashed in 1 MiB reads: memory stays flat for any size


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with storage.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tables_fingerprint(data_dir: str | os.PathLike,
                       tables: Sequence[contract.Table]) -> str:
    """``items.csv:81234:sha256=<hex>`` per table present, ``;``-joined in ``tables`` order.

    Readable on purpose: it is stored on the artifact, where it says which files made
    it.  An absent optional table has no entry, so adding or removing one changes the
    fingerprint; a required one that is missing raises as the reader would.
    """
    parts = []
    for table in tables:
        path = contract.find_table_file(data_dir, table)
        if path is not None:
            parts.append(f"{storage.basename(path)}:{storage.size(path)}"
                         f":sha256={file_sha256(path)}")
    return ";".join(parts)


def check_unchanged(data_dir: str | os.PathLike, tables: Sequence[contract.Table],
                    expected: str) -> None:
    """Raises if the tables no longer match ``expected`` (the fingerprint the run was
    keyed on): the artifact would otherwise be cached under data it was not made from."""
    now = tables_fingerprint(data_dir, tables)
    if now != expected:
        raise contract.ContractError(
            str(data_dir), f"the data changed while the pipeline ran (fingerprinted "
            f"{expected!r}, now {now!r}); run the pipeline again once it is complete")
