"""Fixed-size batches of any iterable: the one chunking helper of the code base
(request batches, enrichment batches, Redis key deletes), streaming and lazy."""
from __future__ import annotations

from typing import Iterable, Iterator, List, TypeVar

T = TypeVar("T")


def batches(items: Iterable[T], size: int) -> Iterator[List[T]]:
    """Lists of ``size`` consecutive items (the last one shorter); nothing for no items."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    batch: List[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
