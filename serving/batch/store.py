"""User-embedding key-value store: what the batch job writes and the sidecar reads.

One *generation* is one complete refresh: every user's ``(h_gen, h_next)`` (the *base*
embeddings, without the context offset — the request's context is added online), computed
by one model version.  ``get`` answers ``(h_gen_base, h_next_base, model_version)``: the
TF Serving version of the model that computed them (the sidecar pins ``context_offset`` and
``search`` to it; "" when unknown), while ``version()`` is the store's live *generation*
id, which changes with every committed refresh.
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
``open_store("embedded:/path")`` / ``open_store("redis://host:port/db")`` picks one.
"""
from __future__ import annotations

import secrets
import time
from typing import Iterable, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import stars  # noqa: F401

import numpy as np

Entry = Tuple[np.ndarray, np.ndarray, str]  # (h_gen_base, h_next_base, model_version)
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
    """Two 1-D float32 vectors of the same length, or StoreError."""
    g = np.asarray(h_gen, dtype=np.float32).reshape(-1)
    n = np.asarray(h_next, dtype=np.float32).reshape(-1)
    if g.shape != n.shape or g.size == 0:
        raise StoreError(f"h_gen and h_next must be non-empty and the same size, got "
                         f"{g.shape} and {n.shape}")
    return g, n


def encode(h_gen, h_next) -> bytes:
    """``h_gen`` then ``h_next`` as little-endian float32 bytes."""
    g, n = as_vectors(h_gen, h_next)
    return np.concatenate([g, n]).astype("<f4").tobytes()


def decode(blob: bytes) -> Tuple[np.ndarray, np.ndarray]:
    values = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if values.size == 0 or values.size % 2:
        raise StoreError(f"corrupt embedding value ({len(blob)} bytes)")
    half = values.size // 2
    return values[:half], values[half:]


@runtime_checkable
class UserEmbeddingReader(Protocol):
    """What the serving sidecar needs."""

    def get(self, user_id: str) -> Optional[Entry]:
        """``(h_gen_base, h_next_base, model_version)`` from the live generation, None if
        the user is not in it (or nothing was committed yet)."""

    def get_many(self, user_ids: Sequence[str]) -> List[Optional[Entry]]:
        """One entry (or None) per id, all from the same generation."""

    def version(self) -> Optional[str]:
        """The live generation id, None before the first commit."""


class ShardWriter(Protocol):
    """Writes into a begun (uncommitted) generation; one per worker/bundle."""

    generation: str

    def put(self, user_id: str, h_gen, h_next) -> None: ...

    def put_many(self, rows: Iterable[Tuple[str, object, object]]) -> int: ...

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

    def shard_writer(self, generation: str) -> ShardWriter: ...

    def generations(self) -> List[str]:
        """Every generation present (live, superseded-not-yet-removed, in progress)."""

    def close(self) -> None: ...


class RefreshContext:
    """Mixin: ``with store.begin_refresh() as w:`` commits on success, aborts on error."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            if not getattr(self, "_done", False):
                self.commit()
        elif not getattr(self, "_done", False):
            self.abort()
        return False


def open_store(spec: str, grace_seconds: Optional[float] = None) -> UserEmbeddingStore:
    """``embedded:PATH`` (a directory) or ``redis://host:port/db`` (also ``rediss://``,
    ``unix://``)."""
    spec = str(spec)
    kwargs = {} if grace_seconds is None else {"grace_seconds": grace_seconds}
    if spec.startswith("embedded:"):
        from serving.batch.embedded_store import EmbeddedStore
        path = spec[len("embedded:"):]
        if not path:
            raise ValueError("embedded store needs a directory: embedded:PATH")
        return EmbeddedStore(path, **kwargs)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        from serving.batch.redis_store import RedisStore
        return RedisStore.from_url(spec, **kwargs)
    raise ValueError(f"unknown store {spec!r}: expected embedded:PATH or redis://host:port/db")


__all__ = ["Entry", "StoreError", "UserEmbeddingReader", "UserEmbeddingStore", "RefreshWriter",
           "ShardWriter", "RefreshContext", "open_store", "new_generation", "encode", "decode",
           "as_vectors", "DEFAULT_GRACE_SECONDS"]
