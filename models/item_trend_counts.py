"""The item trend's event counts, as a Transform analyzer: a Beam job over the training split.

The trend (``models.item_trend``) counts each item's DISTINCT training events (user,
item, time) per period.  Training examples repeat events (consecutive windows share their
boundary event), so the counts need the distinct events: a shuffle, which a Python pass
in the Trainer did by holding every example in memory.  Here it is a Beam PTransform
inside the Transform (``tft.experimental.ptransform_analyzer``): the runner that scales
the Transform (Dataflow, Flink, Spark) scales the counts, and the Trainer reads a table
of (period, item) counts whose size is the catalogue's, not the data's.

The analyzer writes one asset, ``item_trend_counts`` (``tft_output.vocabulary_file_by_name``):
a header ``origin <unix s> period <s>`` (origin: the earliest training event), then
``<period> <count> <item id>`` lines sorted by period and item id.
"""
from __future__ import annotations

import collections
from typing import Dict, FrozenSet, Iterator, Optional, Set, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import beam as tft_beam

from models import features as F
from models.item_trend import PERIOD_S, WINDOW, TrendTable, table_from_counts
from stars import storage

ASSET = "item_trend_counts"


def analyze(inputs, period_s: int = PERIOD_S) -> None:
    """In a ``preprocessing_fn``: counts the events of every example's history and first
    target (what the model trains on) into the ``item_trend_counts`` asset."""
    users = F.first(inputs["user_id"], default=b"")
    item_ids = tf.concat([F.values(inputs["item_id"]),
                          F.first(inputs["target_item_id"], default=b"")], 0)
    timestamps = tf.concat([tf.cast(F.values(inputs["timestamp"]), tf.int64),
                            tf.cast(F.first(inputs["target_timestamp"]), tf.int64)], 0)
    event_users = tf.concat([tf.gather(users, F.row_ids(inputs["item_id"])), users], 0)
    tft.experimental.ptransform_analyzer(
        [event_users, item_ids, timestamps], CountDistinctEvents(period_s),
        output_dtypes=[tf.string], output_shapes=[[]], output_asset_default_values=[b""],
        name="item_trend_counts")
    tft.annotate_asset(ASSET, ASSET)


class CountDistinctEvents(tft_beam.experimental.PTransformAnalyzer):
    """Batches of (user, item, time) -> the path of the counts file (one element)."""

    def __init__(self, period_s: int):
        super().__init__()
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self._period_s = period_s

    def expand(self, batches):
        period_s, path = self._period_s, storage.join(self.base_temp_dir, ASSET)
        # One element per user and batch, not per event: Beam's cost is per element.
        origin = beam.pvalue.AsSingleton(
            batches
            | "BatchStart" >> beam.Map(_batch_start)
            | "Origin" >> beam.CombineGlobally(_earliest))
        return (batches
                | "UserEvents" >> beam.FlatMap(_user_events)
                | "DistinctPerUser" >> beam.CombinePerKey(_union)
                | "Count" >> beam.Map(_period_counts, origin=origin, period_s=period_s)
                | "Sum" >> beam.CombineGlobally(merge_counts)
                | "Write" >> beam.Map(_write, path=path, origin=origin, period_s=period_s))


def _user_events(batch) -> Iterator[Tuple[bytes, FrozenSet[Tuple[bytes, int]]]]:
    users, items, timestamps = batch
    events: Dict[bytes, Set[Tuple[bytes, int]]] = collections.defaultdict(set)
    for user, item, timestamp in zip(users.tolist(), items.tolist(), timestamps.tolist()):
        if item:  # an example without a target
            events[user].add((item, int(timestamp)))
    for user, user_events in events.items():
        yield user, frozenset(user_events)


def _union(sets) -> FrozenSet:
    return frozenset().union(*sets)


def _batch_start(batch) -> Optional[int]:
    _, items, timestamps = batch
    known = timestamps[items != b""]
    return int(known.min()) if len(known) else None


def _earliest(timestamps) -> Optional[int]:
    return min((t for t in timestamps if t is not None), default=None)


def _period_counts(user_events, origin: int, period_s: int) -> collections.Counter:
    _, events = user_events
    return collections.Counter((item, (timestamp - origin) // period_s)
                               for item, timestamp in events)


def merge_counts(counters) -> collections.Counter:
    """Sums counters (a Beam combine: its inputs and partial results alike)."""
    total: collections.Counter = collections.Counter()
    for counter in counters:
        total.update(counter)
    return total


def _write(counts, path: str, origin: Optional[int], period_s: int) -> bytes:
    lines = [f"origin {origin or 0} period {period_s}"]
    lines += [f"{period} {count} {item.decode()}"
              for (item, period), count in sorted(counts.items(),
                                                  key=lambda kv: (kv[0][1], kv[0][0]))]
    storage.write_text(path, "\n".join(lines) + "\n")
    return path.encode()


def read_trend(path: str, item_index: Dict[str, int], window: int = WINDOW) -> TrendTable:
    """The trend table of a counts asset over the catalogue ``item_index`` (items the
    catalogue no longer has are skipped)."""
    with storage.open(path) as f:
        header = f.readline().split()
        if len(header) != 4 or header[0] != "origin" or header[2] != "period":
            raise ValueError(f"{path} is not an item trend counts file (header {header})")
        origin, period_s = int(header[1]), int(header[3])
        periods, items, counts = [], [], []
        for line in f:
            period, count, item = line.rstrip("\n").split(" ", 2)
            index = item_index.get(item, -1)
            if index >= 0:
                periods.append(int(period))
                items.append(index)
                counts.append(float(count))
    return table_from_counts(origin, period_s, window, np.asarray(periods, np.int64),
                             np.asarray(items, np.int64), np.asarray(counts, np.float32),
                             len(item_index))
