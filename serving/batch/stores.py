"""Which user-embedding store a spec names (``embedded:PATH``, ``redis://...``).

Apart from :mod:`serving.batch.store` (the protocol the backends implement), so the
backends import the protocol and this module imports the backends: no cycle.
"""
from __future__ import annotations

from typing import Any, Optional

from serving.batch.embedded_store import EmbeddedStore
from serving.batch.redis_store import RedisStore
from serving.batch.store import UserEmbeddingStore


def open_store(spec: str, grace_seconds: Optional[float] = None) -> UserEmbeddingStore:
    """``embedded:PATH`` (a directory) or ``redis://host:port/db`` (also ``rediss://``,
    ``unix://``)."""
    spec = str(spec)
    kwargs: dict[str, Any] = {} if grace_seconds is None else {"grace_seconds": grace_seconds}
    if spec.startswith("embedded:"):
        path = spec[len("embedded:"):]
        if not path:
            raise ValueError("embedded store needs a directory: embedded:PATH")
        return EmbeddedStore(path, **kwargs)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore.from_url(spec, **kwargs)
    raise ValueError(f"unknown store {spec!r}: expected embedded:PATH or redis://host:port/db")


__all__ = ["open_store"]
