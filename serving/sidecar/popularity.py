"""Popular items per region: the answer for unknown users without events and the
fallback when the model server is down or slow.

Counts come from a file in either format:

* the Transform frequency vocabulary the pipeline writes (``item_popularity``):
  one ``COUNT ITEM`` per line, most frequent first;
* CSV with a header holding ``item_id`` and ``count`` columns.

Items are ranked by count (catalogue order breaks ties; without a counts file the
ranking is the catalogue order).  A region's ranking holds the items sold there or
everywhere.  The request's filters are applied with the embedded backend (so the
fallback works when Elasticsearch is down too).
"""
from __future__ import annotations

import csv
import io
import os
from typing import Dict, List, Mapping, Optional, Tuple

import stars  # noqa: F401

from serving.sidecar.filters import EVERYWHERE, EmbeddedFilterBackend, Filters


def read_counts(path: str | os.PathLike) -> Dict[str, float]:
    """Item counts from a frequency vocabulary (``COUNT ITEM``) or ``item_id,count`` CSV."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    lines = text.splitlines()
    counts: Dict[str, float] = {}
    if lines and "item_id" in lines[0].split(","):
        for row_number, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
            try:
                counts[row["item_id"]] = counts.get(row["item_id"], 0.0) + float(row["count"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}:{row_number}: expected item_id,count columns with a "
                                 f"number, got {row!r}") from None
        return counts
    for line_number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        count, sep, item = line.partition(" ")
        try:
            value = float(count)
        except ValueError:
            value, sep = None, ""
        if not sep or value is None:
            raise ValueError(f"{path}:{line_number}: expected 'COUNT ITEM', got {line!r}")
        counts[item] = counts.get(item, 0.0) + value
    return counts


class Popularity:
    """Region rankings over the catalogue (``EmbeddedFilterBackend``) and counts."""

    def __init__(self, catalog: EmbeddedFilterBackend,
                 counts: Optional[Mapping[str, float]] = None):
        self.catalog = catalog
        counts = counts or {}
        self.counts = {i: float(counts.get(i, 0.0)) for i in catalog.ids}
        position = {i: n for n, i in enumerate(catalog.ids)}
        self.ranking: List[str] = sorted(catalog.ids, key=lambda i: (-self.counts[i],
                                                                       position[i]))
        self.regions = catalog.regions()
        self._by_region: Dict[str, List[str]] = {}

    @classmethod
    def load(cls, catalog: EmbeddedFilterBackend,
             counts_path: Optional[str] = None) -> "Popularity":
        return cls(catalog, read_counts(counts_path) if counts_path else None)

    def region_ranking(self, region: Optional[str]) -> List[str]:
        if region is None:
            return self.ranking
        key = region if region in self.regions else EVERYWHERE  # bounded cache
        ranked = self._by_region.get(key)
        if ranked is None:
            ranked = [i for i in self.ranking if self.catalog.sold_in(i, key)]
            self._by_region[key] = ranked
        return ranked

    def top(self, k: int, filters: Filters = Filters()) -> List[Tuple[str, float]]:
        """The ``k`` most popular items passing ``filters`` (region included)."""
        ranked = self.region_ranking(filters.region)
        out: List[str] = []
        chunk = max(256, 4 * k)
        for start in range(0, len(ranked), chunk):
            out.extend(self.catalog.filter(ranked[start:start + chunk], filters))
            if len(out) >= k:
                break
        return [(i, self.counts[i]) for i in out[:k]]


__all__ = ["Popularity", "read_counts"]
