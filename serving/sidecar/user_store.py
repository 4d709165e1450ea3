"""Where the sidecar reads the batch job's user embeddings: a protocol, an in-memory
implementation, and a loader for the real stores (written by ``serving/batch/``).

A store answers ``get(user_id) -> (h_gen_base, h_next_base, version[, latest_items]) |
None``: the two context-free embeddings (``user_embeddings``' ``*_base`` outputs), a
version and, optionally, the user's latest item ids (oldest first), with which NI's
search also merges the model's successor source (``search_after_items``).  When
the version is a model version (an integer, as TF Serving numbers them) the sidecar
pins its calls to it (embeddings of different model versions live in different
spaces); the batch stores of ``serving/batch/`` give their generation id instead,
which cannot be pinned, so the current model version is used.
"""
from __future__ import annotations

import importlib
from typing import Callable, Mapping, Optional, Protocol

import numpy as np

StoredEmbedding = tuple  # (h_gen_base, h_next_base, version[, latest_items])


class UserEmbeddingStore(Protocol):
    def get(self, user_id: str) -> Optional[StoredEmbedding]:
        """The user's (h_gen_base, h_next_base, version[, latest_items]), or None when
        unknown.  Stores that keep generations (``serving/batch/``) also take
        ``get(user_id, generation)``: a release reads the generation it names."""


class InMemoryUserEmbeddingStore:
    """A dict-backed store (tests, demos, small deployments)."""

    def __init__(self, rows: Optional[Mapping[str, StoredEmbedding]] = None):
        self._rows = dict(rows or {})

    def put(self, user_id: str, h_gen_base, h_next_base, version, latest_items=()) -> None:
        self._rows[user_id] = (np.asarray(h_gen_base, np.float32),
                               np.asarray(h_next_base, np.float32), str(version),
                               tuple(str(i) for i in latest_items))

    def get(self, user_id: str) -> Optional[StoredEmbedding]:
        return self._rows.get(user_id)

    def __len__(self) -> int:
        return len(self._rows)


def load_user_store(factory: str, location: str) -> UserEmbeddingStore:
    """Opens a store with ``factory`` (``"package.module:callable"``) called on ``location``.

    The callable returns any object with ``get(user_id)`` as above, e.g. the batch
    job's store reader in ``serving/batch/``.
    """
    module_name, sep, attribute = factory.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"user store factory must be 'module:callable', got {factory!r}")
    try:
        opener: Callable = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load user store factory {factory!r}: {e}") from e
    store = opener(location)
    if not callable(getattr(store, "get", None)):
        raise ValueError(f"{factory}({location!r}) returned {type(store).__name__}, which has "
                         "no get(user_id)")
    return store


__all__ = ["UserEmbeddingStore", "InMemoryUserEmbeddingStore", "load_user_store",
           "StoredEmbedding"]
