"""The successor source's counts, as a Transform analyzer: a Beam job over the training split.

``models.successor_source`` counts, in each training example's sequence (its history,
then its first target), item b after item a at distance d ≤ ``WINDOW`` with weight 1/d.
The Trainer did it in a Python pass that held every training example; here the same
counting (``successor_pairs``, batch by batch) is a Beam PTransform inside the
interaction Transform (``tft.experimental.ptransform_analyzer``), summed per pair by the
runner, and the Trainer reads a table whose size is the number of distinct pairs.

Weights are summed as integers in units of 1/lcm(1..WINDOW), so the sums do not depend on
the order in which workers add them.  The asset, ``successor_counts``
(``tft_output.vocabulary_file_by_name``), is JSON lines: a header ``{"window": W}``, then
``[source id, successor id, count]`` sorted by ids.
"""
from __future__ import annotations

import collections
import json
import math
from typing import Dict

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform import beam as tft_beam

from models import features as F
from models.item_trend_counts import merge_counts
from models.successor_source import WINDOW, SuccessorTable, pair_matrix, successor_pairs
from stars import storage

ASSET = "successor_counts"


def analyze(inputs, window: int = WINDOW) -> None:
    """In a ``preprocessing_fn``: counts the successor pairs of every example's history
    and first target into the ``successor_counts`` asset."""
    tft.experimental.ptransform_analyzer(
        [F.row_ids(inputs["item_id"]), F.values(inputs["item_id"]),
         F.first(inputs["target_item_id"], default=b"")],
        CountSuccessors(window), output_dtypes=[tf.string], output_shapes=[[]],
        output_asset_default_values=[b""], name="successor_counts")
    tft.annotate_asset(ASSET, ASSET)


class CountSuccessors(tft_beam.experimental.PTransformAnalyzer):
    """Batches of (history row, history item, first target per row) -> the counts file."""

    def __init__(self, window: int):
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self._window = window

    def expand(self, batches):
        window, path = self._window, storage.join(self.base_temp_dir, ASSET)
        # One element per batch (its pairs' counts), not per pair: Beam's cost is per element.
        return (batches
                | "Pairs" >> beam.Map(_pair_counts, window=window)
                | "Sum" >> beam.CombineGlobally(merge_counts)
                | "Write" >> beam.Map(_write, path=path, window=window))


def _units(window: int) -> int:
    return math.lcm(*range(1, window + 1))


def _pair_counts(batch, window: int) -> collections.Counter:
    """{(source id, successor id): weight in units of 1/lcm(1..window)} of one batch."""
    rows, items, targets = batch
    sequences: Dict[int, list] = collections.defaultdict(list)
    for row, item in zip(rows.tolist(), items.tolist()):
        if item:
            sequences[row].append(item)
    for row, target in enumerate(targets.tolist()):
        if target:
            sequences[row].append(target)
    ids = sorted({item for sequence in sequences.values() for item in sequence})
    code = {item: i for i, item in enumerate(ids)}
    sources, successors, weights = successor_pairs(
        ([code[item] for item in sequence] for sequence in sequences.values()), window)
    units = np.rint(weights.astype(np.float64) * _units(window)).astype(np.int64)
    keys, inverse = np.unique(sources * max(len(ids), 1) + successors, return_inverse=True)
    sums = np.bincount(inverse, weights=units, minlength=len(keys)).astype(np.int64)
    return collections.Counter({(ids[k // len(ids)], ids[k % len(ids)]): int(n)
                                for k, n in zip(keys.tolist(), sums.tolist())})


def _write(counts, path: str, window: int) -> bytes:
    unit = _units(window)
    lines = [json.dumps({"window": window})]
    lines += [json.dumps([a.decode(), b.decode(), n / unit])
              for (a, b), n in sorted(counts.items())]
    storage.write_text(path, "\n".join(lines) + "\n")
    return path.encode()


def read_successors(path: str, item_index: Dict[str, int]) -> SuccessorTable:
    """The successor table of a counts asset over the catalogue ``item_index`` (pairs
    with an item the catalogue no longer has are skipped)."""
    sources, successors, counts = [], [], []
    with storage.open(path) as f:
        first = f.readline()
        try:
            header = json.loads(first)
        except ValueError:
            header = first.strip()
        if not isinstance(header, dict) or "window" not in header:
            raise ValueError(f"{path} is not a successor counts file (header {header})")
        for line in f:
            a, b, count = json.loads(line)
            if a in item_index and b in item_index:
                sources.append(item_index[a])
                successors.append(item_index[b])
                counts.append(count)
    return SuccessorTable.from_matrix(pair_matrix(sources, successors, counts,
                                                  len(item_index)))
