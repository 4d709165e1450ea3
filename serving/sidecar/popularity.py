"""Popular items per region: the answer for unknown users without events, the fallback
when the model server is down or slow, and the backfill when filters use up the model's
candidates.

By default the ranking ships with the model: its ``popular_items`` signature (the
training popularity prior) is read at start and again whenever the served version
changes (:class:`ModelPopularity`), so a fallback answer belongs to the same release as
the model's.  Until the model server has answered once, the catalogue order stands in,
and ``/readyz`` says so.  Counts can instead come from a file in either format:

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
import logging
import os
import threading
from typing import Dict, List, Mapping, Optional, Tuple

from serving.sidecar.filters import EVERYWHERE, EmbeddedFilterBackend, Filters

log = logging.getLogger(__name__)


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
    """Region rankings over the catalogue (``EmbeddedFilterBackend``) and counts;
    ``source`` says where the counts came from."""

    def __init__(self, catalog: EmbeddedFilterBackend,
                 counts: Optional[Mapping[str, float]] = None, source: str = ""):
        self.catalog = catalog
        self.source = source or ("counts" if counts else "catalogue order")
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
        if not counts_path:
            return cls(catalog)
        return cls(catalog, read_counts(counts_path), source=f"file {counts_path}")

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


class ModelPopularity:
    """Keeps ``recommender.popularity`` equal to the served model's ranking: read when the
    served version changes (checked every ``refresh_s``; every ``retry_s`` until the first
    answer), swapped in whole.  Runs on a daemon thread (``start``)."""

    def __init__(self, recommender, model, catalog: EmbeddedFilterBackend,
                 refresh_s: float = 30.0, retry_s: float = 1.0, timeout_s: float = 5.0):
        self.recommender, self.model, self.catalog = recommender, model, catalog
        self.refresh_s, self.retry_s, self.timeout_s = refresh_s, retry_s, timeout_s
        self.version: Optional[str] = None
        self.error: Optional[str] = None
        self._stop = threading.Event()

    def refresh(self) -> bool:
        """Reads the ranking when the served version is not the one loaded; True when the
        ranking is the served version's."""
        try:
            version = self.model.model_version(timeout_s=self.timeout_s)
            if version is not None and version == self.version:
                return True
            ranked, got = self.model.popular_items(len(self.catalog), timeout_s=self.timeout_s)
        except Exception as e:  # the model server down or without the signature
            if self.error is None:
                log.warning("popularity from the model: not yet (%s); %s", e,
                            "catalogue order meanwhile" if self.version is None
                            else f"keeping version {self.version}'s")
            self.error = str(e)[:200]
            return False
        counts = {i: p for i, p in ranked if i in self.catalog}
        self.recommender.popularity = Popularity(self.catalog, counts,
                                                 source=f"model version {got}")
        if self.version != got:
            log.info("popularity: %d ranked items from model version %s", len(counts), got)
        self.version, self.error = got, None
        return True

    def start(self) -> "ModelPopularity":
        def loop():
            while not self._stop.is_set():
                ok = self.refresh()
                self._stop.wait(self.refresh_s if ok else self.retry_s)
        threading.Thread(target=loop, name="model-popularity", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


__all__ = ["Popularity", "ModelPopularity", "read_counts"]
