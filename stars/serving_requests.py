"""Sequence examples -> serving requests, and serving answers -> ranked item lists.

The Evaluator scores the exported serving model exactly as clients call it
(``recommend_with_context`` with raw history, request time, region and user
features), so what is evaluated is what is served.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Sequence

import numpy as np

from stars.batching import batches
from stars.data import tf_example

USER_NUM, USER_CAT = "user_num_", "user_cat_"


@dataclasses.dataclass
class EvalExample:
    user_id: str
    history: list            # item ids, oldest first
    event_types: list
    timestamps: list
    request_timestamp: int
    region: str
    targets: list            # future item ids, first = next item
    candidate_set_size: int  # items shown on the target's page (0 = no page)
    user_features: dict


def _first(values, default):
    return values[0] if values else default


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def eval_examples(examples_uri: str, split: str) -> Iterator[EvalExample]:
    for example in tf_example.read_split(examples_uri, split):
        yield eval_example(example)


def eval_example(example) -> EvalExample:
    """One sequence example (``tf.train.Example``) as the request a client would send."""
    f = tf_example.from_example(example)
    users = {k: (_first(v, float("nan")) if k.startswith(USER_NUM) else _text(_first(v, b"")))
             for k, v in f.items() if k.startswith((USER_NUM, USER_CAT))}
    return EvalExample(
        user_id=_text(_first(f.get("user_id", []), b"")),
        history=[_text(v) for v in f.get("item_id", [])],
        event_types=[_text(v) for v in f.get("event_type", [])],
        timestamps=[int(v) for v in f.get("timestamp", [])],
        request_timestamp=int(_first(f.get("target_timestamp", []), 0)),
        region=_text(_first(f.get("target_region", []), b"")),
        targets=[_text(v) for v in f.get("target_item_id", [])],
        candidate_set_size=len(f.get("target_page_item_id", [])),
        user_features=users)


def request_batch(batch: Sequence[EvalExample], max_history: int, user_numeric: Sequence[str],
                  user_categorical: Sequence[str], num_signals: int = 4) -> dict:
    """Keyword inputs of the ``recommend_with_context`` signature for a batch."""
    import tensorflow as tf
    width = max(1, min(max_history, max(len(e.history) for e in batch)))

    def pad(rows, fill):
        return [[fill] * (width - len(r[-width:])) + list(r[-width:]) for r in rows]

    inputs = {
        "history_item_ids": tf.constant(pad([e.history for e in batch], "")),
        "history_event_types": tf.constant(pad([e.event_types for e in batch], "")),
        "history_timestamps": tf.constant(pad([e.timestamps for e in batch], 0), tf.int64),
        "request_timestamp": tf.constant([e.request_timestamp for e in batch], tf.int64),
        "region": tf.constant([e.region for e in batch]),
        "context_signals": tf.zeros([len(batch), num_signals]),
    }
    for name in user_numeric:
        values = [e.user_features.get(f"{USER_NUM}{name}", float("nan")) for e in batch]
        inputs[f"{USER_NUM}{name}"] = tf.constant(
            [float(v) if v is not None and not (isinstance(v, float) and math.isnan(v))
             else float("nan") for v in values], tf.float32)
    for name in user_categorical:
        inputs[f"{USER_CAT}{name}"] = tf.constant(
            [e.user_features.get(f"{USER_CAT}{name}", "") for e in batch])
    return inputs


def signature_inputs(signature) -> tuple:
    """(user numeric names, user categorical names, num_signals) a signature expects."""
    specs = signature.structured_input_signature[1]
    numeric = sorted(k[len(USER_NUM):] for k in specs if k.startswith(USER_NUM))
    categorical = sorted(k[len(USER_CAT):] for k in specs if k.startswith(USER_CAT))
    return numeric, categorical, int(specs["context_signals"].shape[-1])


def ids_to_indices(ids: np.ndarray, index: dict) -> np.ndarray:
    """Byte/str item ids [N, K] -> catalogue indices; -1 for unknown ids, padding and
    repeats (an approximate index may pad a short answer with repeated items)."""
    out = np.full((len(ids), len(ids[0]) if len(ids) else 0), -1, np.int64)
    for r, row in enumerate(ids):
        seen = set()
        for c, value in enumerate(row):
            i = index.get(_text(value), -1)
            if i >= 0 and i not in seen:
                out[r, c] = i
                seen.add(i)
    return out


def score_serving_model(loaded, examples: Sequence[EvalExample], item_index: dict,
                        max_history: int, batch_size: int = 256) -> dict:
    """Top-K catalogue indices [N, K] for NI and GI from a loaded serving SavedModel."""
    signature = loaded.signatures["recommend_with_context"]
    numeric, categorical, num_signals = signature_inputs(signature)
    out = {"ni": [], "gi": []}
    for batch in batches(examples, batch_size):
        answer = signature(**request_batch(batch, max_history, numeric, categorical,
                                           num_signals))
        for variant in out:
            out[variant].append(ids_to_indices(answer[f"{variant}_ids"].numpy(), item_index))
    return {v: np.concatenate(parts) if parts else np.zeros((0, 0), np.int64)
            for v, parts in out.items()}
