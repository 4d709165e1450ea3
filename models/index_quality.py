"""The index's quality on real queries: ScaNN's recall@K against brute force for user embeddings.

An approximate index is only as good as its recall on the queries it will be asked.  Mixes
of item vectors (what the IndexBuilder used to probe with) sit inside the item cloud, where
ScaNN's partitions were trained; user embeddings need not: h_gen and h_next come out of the
transformer and its serving projections, plus the request context's offset, and can point
where few items are, so they cross partition boundaries more often.  So the figure that
gates a release is measured on real users: a sample of the interaction data's requests
(each example's history, request time, region and user features, as clients send them)
is encoded by the brute-force serving module, both h_gen and h_next serve as queries, and
the share of the exact top K that the ScaNN index returns is ScaNN's recall@K.

Used by the IndexBuilder (after training) and by the catalogue refresh (after a catalogue
change without retraining), so both record the same figure the same way.
"""
from __future__ import annotations

import json
import os
from typing import Callable, List, Sequence

import numpy as np

from models.serving import recall_against_brute_force
from stars import serving_requests as requests
from stars.batching import batches

REPORT_FILE = "index_report.json"  # in each export's artifact root (beside Format-Serving)
QUERY_SOURCE = "user_embeddings"
DEFAULT_QUERIES = 512     # user histories sampled (each gives two queries: h_gen, h_next)
DEFAULT_SPLIT = "eval"    # the requests after the training cut: what serving is asked next


def sample_requests(examples_uri: str, limit: int = DEFAULT_QUERIES, split: str = DEFAULT_SPLIT,
                    seed: int = 0) -> List[requests.EvalExample]:
    """Up to ``limit`` requests of the ``split`` split of an interaction Examples artifact
    (the InteractionExampleGen's raw ``examples``), drawn without replacement with ``seed``
    and kept in file order.  Raises when the split holds none."""
    if limit < 1:
        raise ValueError(f"the query sample needs at least 1 request, got limit={limit}")
    examples = list(requests.eval_examples(examples_uri, split))
    if not examples:
        raise ValueError(f"the {split!r} split of {examples_uri} holds no request to "
                         "measure the index on")
    if len(examples) <= limit:
        return examples
    picks = np.sort(np.random.default_rng(seed).choice(len(examples), limit, replace=False))
    return [examples[i] for i in picks]


def user_embedding_queries(module, examples: Sequence[requests.EvalExample],
                           batch_size: int = 256) -> np.ndarray:
    """[2N, D] float32: every request's h_gen, then every request's h_next, as ``module``
    (a ``models.serving.ServingModule``) encodes them for ``recommend_with_context``."""
    gen, nxt = [], []
    for batch in batches(examples, batch_size):
        inputs = requests.request_batch(batch, module.adapter.max_history, module.user_numeric,
                                        module.user_categorical, module.num_signals)
        h_gen, h_next = module.user_queries(inputs)
        gen.append(h_gen.numpy())
        nxt.append(h_next.numpy())
    return np.concatenate(gen + nxt).astype(np.float32)


def recall_on_queries(approximate: Callable, exact: Callable, queries: np.ndarray) -> float:
    """Recall@K of ``approximate`` against ``exact``: each a search, queries [N, D] ->
    (scores, ids) [N, K] (``ServingModule.search_index``)."""
    _, approx_ids = approximate(queries)
    _, exact_ids = exact(queries)
    return recall_against_brute_force(np.asarray(approx_ids), np.asarray(exact_ids))


def index_recall(scann_module, brute_force_module, examples_uri: str,
                 limit: int = DEFAULT_QUERIES, split: str = DEFAULT_SPLIT, seed: int = 0) -> dict:
    """ScaNN's recall@K against brute force on real user embeddings (module docstring):
    ``{"scann_recall_at_k", "k", "queries", "query_source"}``, ``queries`` the number of
    query vectors (two per sampled request)."""
    examples = sample_requests(examples_uri, limit, split, seed)
    queries = user_embedding_queries(brute_force_module, examples)
    recall = recall_on_queries(lambda q: _numpy(scann_module.search_index(q)),
                               lambda q: _numpy(brute_force_module.search_index(q)), queries)
    return {"scann_recall_at_k": recall, "k": int(scann_module.k), "queries": int(len(queries)),
            "query_source": QUERY_SOURCE}


def _numpy(answer):
    scores, ids = answer
    return scores.numpy(), ids.numpy()


__all__ = ["DEFAULT_QUERIES", "QUERY_SOURCE", "index_recall", "recall_on_queries",
           "sample_requests", "user_embedding_queries"]


def write_report(report: dict, export_dirs) -> None:
    """``index_report.json`` beside each export directory (in its artifact's root)."""
    import tensorflow as tf
    for directory in export_dirs:
        with tf.io.gfile.GFile(os.path.join(os.path.dirname(directory), REPORT_FILE), "w") as f:
            f.write(json.dumps(report, indent=1))


def read_report(artifact_uri: str) -> dict:
    """The report a served model's artifact holds (written by ``write_report``)."""
    import tensorflow as tf
    with tf.io.gfile.GFile(os.path.join(artifact_uri, REPORT_FILE)) as f:
        return json.loads(f.read())
