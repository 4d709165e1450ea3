"""User-embedding key-value store: what the batch job writes and the sidecar reads.

One *generation* is one complete refresh: every user's ``(h_gen, h_next)`` (the *base*
embeddings, without the context offset — the request's context is added online), computed
by one model version, and the user's latest item ids (what the model's successor source
merges after the search; empty when not stored).  ``get`` answers ``(h_gen_base,
h_next_base, model_version, latest_items)``: the TF Serving version of the model that
computed them (the sidecar pins ``context_offset`` and ``search`` to it; "" when unknown),
while ``version()`` is the store's live *generation* id, which changes with every
committed refresh.
Readers only ever see committed generations, and every call answers from one
generation: a refresh is written next to the live one and switched in atomically
by :meth:`RefreshWriter.commit`, which then removes the superseded generation after
a grace period (so a reader that has just resolved the old generation can finish).

Reading (the sidecar): :class:`UserEmbeddingReader` — ``get``, ``get_many``, ``version``.
Writing (the batch job): ``begin_refresh()`` on the driver returns a
:class:`RefreshWriter` (``put``, ``put_many``, ``commit``, ``abort``);
workers write into the same generation through ``shard_writer(generation)``
(``put``, ``put_many``, ``close``), and the driver commits once at the end.

Backends: :mod:`serving.batch.embedded_store` (default; a directory of SQLite files
and an atomically renamed pointer file) and :mod:`serving.batch.redis_store`.
``serving.batch.stores.open_store("embedded:/path" | "redis://host:port/db")`` picks one.
"""
from __future__ import annotations

import json
import secrets
import time
from typing import (
    TYPE_CHECKING,
    Iterable,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    runtime_checkable,
)

import numpy as np

# (h_gen_base, h_next_base, model_version, latest item ids oldest first, () when none)
Entry = Tuple[np.ndarray, np.ndarray, str, Tuple[str, ...]]
# A value with latest items starts with this NaN pattern, which no stored vector holds
# (``as_vectors`` refuses non-finite values); a value without is the two vectors alone.
_WITH_ITEMS = np.array([0x7FFFFFFF], "<u4").tobytes()
DEFAULT_GRACE_SECONDS = 5.0


class StoreError(RuntimeError):
    """A store that cannot do what was asked (missing generation, wrong dimension, ...)."""


def new_generation() -> str:
    """A generation id that sorts by creation time: ``20261123T073618123456-a1b2c3``."""
    now = time.time_ns()
    seconds, micros = divmod(now // 1000, 1_000_000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds))
    return f"{stamp}{micros:06d}-{secrets.token_hex(3)}"


def check_generation(generation: str) -> str:
    text = str(generation)
    if not text or any(c in text for c in ":/*?[]\\ \n") or text.startswith("."):
        raise StoreError(f"not a generation id: {generation!r}")
    return text


def as_vectors(h_gen, h_next) -> Tuple[np.ndarray, np.ndarray]:
    """Two 1-D finite float32 vectors of the same length, or StoreError."""
    g = np.asarray(h_gen, dtype=np.float32).reshape(-1)
    n = np.asarray(h_next, dtype=np.float32).reshape(-1)
    if g.shape != n.shape or g.size == 0:
        raise StoreError(f"h_gen and h_next must be non-empty and the same size, got "
                         f"{g.shape} and {n.shape}")
    if not (np.isfinite(g).all() and np.isfinite(n).all()):
        raise StoreError("h_gen and h_next must be finite")
    return g, n


def as_items(latest_items) -> Tuple[str, ...]:
    """Item ids as a tuple of non-empty strings (oldest first), or StoreError."""
    items = tuple(str(i) for i in (latest_items or ()))
    if any(not i for i in items):
        raise StoreError(f"latest item ids must be non-empty strings, got {latest_items!r}")
    return items


def encode(h_gen, h_next, latest_items=()) -> bytes:
    """``h_gen`` then ``h_next`` as little-endian float32 bytes; with ``latest_items``,
    prefixed by a marker and the dimension, and followed by the ids as a JSON list."""
    g, n = as_vectors(h_gen, h_next)
    vectors = np.concatenate([g, n]).astype("<f4").tobytes()
    items = as_items(latest_items)
    if not items:
        return vectors
    return (_WITH_ITEMS + np.array([g.size], "<u4").tobytes() + vectors +
            json.dumps(list(items)).encode("utf-8"))


def decode(blob: bytes) -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
    """(h_gen, h_next, latest_items) of an ``encode``d value (either layout)."""
    items: Tuple[str, ...] = ()
    if blob[:4] == _WITH_ITEMS and len(blob) >= 8:
        dim = int(np.frombuffer(blob[4:8], "<u4")[0])
        end = 8 + 8 * dim
        try:
            items = tuple(json.loads(blob[end:].decode("utf-8")))
        except (UnicodeDecodeError, ValueError) as e:
            raise StoreError(f"corrupt embedding value ({len(blob)} bytes): {e}") from e
        blob = blob[8:end]
        if len(blob) != 8 * dim:
            raise StoreError(f"corrupt embedding value: {len(blob)} vector bytes for "
                             f"dimension {dim}")
    values = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if values.size == 0 or values.size % 2:
        raise StoreError(f"corrupt embedding value ({len(blob)} bytes)")
    half = values.size // 2
    return values[:half], values[half:], items


def read_entry(blob: bytes, model_version: str) -> Entry:
    """A stored value as the readers answer it."""
    g, n, items = decode(blob)
    return g, n, model_version, items


def row_parts(row) -> Tuple[str, np.ndarray, np.ndarray, Tuple[str, ...]]:
    """A ``put_many`` row checked: (user_id, h_gen, h_next, latest_items)."""
    if len(row) not in (3, 4):
        raise StoreError(f"a row is (user_id, h_gen, h_next[, latest_items]), got "
                         f"{len(row)} values")
    g, n = as_vectors(row[1], row[2])
    return str(row[0]), g, n, as_items(row[3] if len(row) == 4 else ())


@runtime_checkable
class UserEmbeddingReader(Protocol):
    """What the serving sidecar needs."""

    def get(self, user_id: str, generation: Optional[str] = None) -> Optional[Entry]:
        """``(h_gen_base, h_next_base, model_version, latest_items)`` from the live
        generation (or the committed ``generation`` named: a release's), None if the
        user is not in it (or nothing was committed yet).  A named generation that is
        not there raises StoreError.  The previous committed generation is kept when a
        new one is committed, so a reader pinned to the last release keeps working."""

    def get_many(self, user_ids: Sequence[str],
                 generation: Optional[str] = None) -> List[Optional[Entry]]:
        """One entry (or None) per id, all from the same generation."""

    def version(self) -> Optional[str]:
        """The live generation id, None before the first commit."""


class ShardWriter(Protocol):
    """Writes into a begun (uncommitted) generation; one per worker/bundle."""

    generation: str

    def put(self, user_id: str, h_gen, h_next, latest_items=()) -> None: ...

    def put_many(self, rows: Iterable[tuple]) -> int:
        """``rows``: (user_id, h_gen, h_next) or (user_id, h_gen, h_next, latest_items)."""

    def close(self) -> None:
        """Makes what was put durable in the generation (not visible to readers)."""


class RefreshWriter(ShardWriter, Protocol):
    """The driver's handle on a refresh: commit once, or abort."""

    def commit(self, expected_count: Optional[int] = None) -> str:
        """Switches readers to this generation atomically; returns its version.

        With ``expected_count``, refuses (and aborts) when the generation does not
        hold exactly that many users.  Then removes superseded generations after the
        store's grace period."""

    def abort(self) -> None:
        """Drops the generation; readers keep the previous one."""

    def count(self) -> int:
        """Users written so far (all shards)."""


@runtime_checkable
class UserEmbeddingStore(UserEmbeddingReader, Protocol):
    """A reader that can also be refreshed."""

    def begin_refresh(self, model_version: Optional[str] = None) -> RefreshWriter:
        """A new generation whose entries answer ``model_version`` ("" when None)."""

    def resume_refresh(self, generation: str) -> RefreshWriter:
        """The driver's handle on a generation begun elsewhere (another process: a
        release writes user embeddings first and commits them when it is published)."""

    def shard_writer(self, generation: str) -> ShardWriter: ...

    def generations(self) -> List[str]:
        """Every generation present (live, superseded-not-yet-removed, in progress)."""

    def stats(self) -> dict:
        """The live generation's ``version``, ``count``, ``dim`` and ``model_version``."""

    def close(self) -> None: ...


class RefreshContext:
    """Mixin: ``with store.begin_refresh() as w:`` commits on success, aborts on error."""

    if TYPE_CHECKING:  # provided by the class it is mixed into
        def commit(self, expected_count: Optional[int] = None) -> str: ...

        def abort(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            if not getattr(self, "_done", False):
                self.commit()
        elif not getattr(self, "_done", False):
            self.abort()
        return False


__all__ = ["Entry", "StoreError", "UserEmbeddingReader", "UserEmbeddingStore", "RefreshWriter",
           "ShardWriter", "as_items", "read_entry", "row_parts", "RefreshContext",
           "new_generation", "encode", "decode",
           "as_vectors", "DEFAULT_GRACE_SECONDS"]
