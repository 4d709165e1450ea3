"""The results file of the offline evaluation, ``{"dataset", "protocol", "results"}``:
entries merged per model and seed across runs of the same dataset and protocol, values
JSON-safe (NaN is null)."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Iterable, List

import numpy as np

from evaluation import seed_means
from evaluation.protocol import ALL_MODELS, SECOND_SOURCE_MODEL

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULT_ORDER = ALL_MODELS[:3] + (SECOND_SOURCE_MODEL,) + ALL_MODELS[3:]


def json_value(value):
    """A figure as the results file holds it: NaN is null, numpy scalars are Python's."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating,)):
        return json_value(float(value))
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def _same_run(old: dict, dataset: str, protocol: dict) -> bool:
    """Same dataset and protocol; a run that scored nothing (``test_examples`` None: every
    model skipped) cannot tell its test size and matches on the other keys."""
    keys = ("num_items", "test_examples", "quick", "ks")
    return old.get("dataset") == dataset and all(
        old.get("protocol", {}).get(k) == protocol.get(k) for k in keys
        if not (k == "test_examples" and protocol.get(k) is None))


def merge_results(path, dataset: str, protocol: dict, entries: List[dict],
                  dropped: Iterable[str] = ()) -> dict:
    """Writes ``{"dataset", "protocol", "results"}``; entries of models run now replace
    the same (model, seed) entries of an earlier compatible run, and that model's other
    seeds are kept only if they were trained with the same settings (a mean over seeds
    must not mix presets); the rest are kept except those of the ``dropped`` models (no
    longer meaningful in this run)."""
    path = Path(path)
    old = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
    kept = []
    if old and _same_run(old, dataset, protocol):
        if protocol.get("test_examples") is None:
            protocol = {**protocol, "test_examples": old["protocol"].get("test_examples")}
        replaced = {(e["model"], e.get("seed")) for e in entries}
        current = {e["model"]: seed_means.settings(e) for e in entries}
        dropped = set(dropped)
        kept = [e for e in old.get("results", []) if (e["model"], e.get("seed")) not in replaced
                and e["model"] not in dropped
                and current.get(e["model"], seed_means.settings(e)) == seed_means.settings(e)]
    elif old:
        log.warning("%s holds results of another dataset/protocol: overwritten", path)
    order = {m: i for i, m in enumerate(RESULT_ORDER)}
    variants = {None: 0, "gi": 1, "ni": 2, "rr": 3}
    results = sorted(kept + entries, key=lambda e: (order.get(e["model"], 99), e["model"],
                                                    variants.get(e.get("variant"), 9),
                                                    e.get("seed") or 0))
    document = {"dataset": dataset, "protocol": protocol, "results": results,
                "schema_version": SCHEMA_VERSION}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, sort_keys=False, default=json_value,
                              allow_nan=False))
    os.replace(tmp, path)
    return document
