"""The StarsEvaluator's scoring as a Beam job: every eval example through the served model.

Each worker loads the served SavedModel (and the last blessed one, when there is one)
once, in ``setup()``, and sends batches of raw eval examples through
``recommend_with_context`` exactly as clients do.  One row per example comes out: the
request's user and time, its targets, its candidate-set size and each variant's top K
(catalogue indices; RR interleaves GI and NI).  The rows are read back sorted by (user,
request time), so one worker and many give the same rows.

The job is started from a spawned child process: loading a ScaNN model in the process
that built a ScaNN index (the IndexBuilder, under LocalDagRunner) crashes in ScaNN's ops
at 100k items.  With a remote runner the child only submits it.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf

from stars import serving_requests as requests
from stars import storage
from stars.data import tf_example
from stars.interleaving import interleave_round_robin

CANDIDATE = "stars"          # the served model's rows: stars_ni, stars_gi, stars_rr
BASELINE = "last_blessed"    # the last blessed model's NI
BATCH_SIZE = 256             # examples per signature call


class _ScoreBatches(beam.DoFn):
    def __init__(self, model_dirs: Mapping[str, str], item_ids: Sequence[str],
                 max_history: int):
        self._dirs, self._item_ids, self._max_history = dict(model_dirs), list(item_ids), \
            max_history

    def setup(self):
        from stars.saved_model import load_serving_model
        # An export named twice (the baseline can be the served model itself) is loaded
        # once: one copy of its ScaNN searcher in the worker.
        loaded = {d: load_serving_model(d) for d in sorted(set(self._dirs.values()))}
        self._models = {name: loaded[d] for name, d in self._dirs.items()}
        self._index = {item: i for i, item in enumerate(self._item_ids)}

    def process(self, batch: Sequence[bytes]) -> Iterator[str]:
        examples = [requests.eval_example(tf.train.Example.FromString(r)) for r in batch]
        tops = {}
        for name, model in self._models.items():
            top = requests.score_serving_model(model, examples, self._index, self._max_history)
            if name == CANDIDATE:
                top["rr"], _ = interleave_round_robin(top["gi"], top["ni"], top["ni"].shape[1])
                tops.update({f"{CANDIDATE}_{variant}": t for variant, t in top.items()})
            else:
                tops[name] = top["ni"]
        for i, example in enumerate(examples):
            yield json.dumps({
                "user_id": example.user_id, "request_timestamp": example.request_timestamp,
                "targets": example.targets, "candidate_set_size": example.candidate_set_size,
                "top": {name: top[i].tolist() for name, top in tops.items()}})


def build(pipeline: beam.Pipeline, model_dirs: Mapping[str, str], examples_uri: str,
          split: str, item_ids: Sequence[str], max_history: int, rows_dir: str) -> None:
    """Adds the scoring of ``split`` to ``pipeline``: rows as gzip JSON lines in ``rows_dir``."""
    _ = (pipeline
         | "Read" >> beam.io.ReadFromTFRecord(
             storage.join(tf_example.split_dir(examples_uri, split), "*.gz"))
         # A split is a few gzip files, which a runner cannot split: spread the examples.
         | "Spread" >> beam.Reshuffle()
         | "Batch" >> beam.BatchElements(min_batch_size=BATCH_SIZE, max_batch_size=BATCH_SIZE)
         | "Score" >> beam.ParDo(_ScoreBatches(model_dirs, item_ids, max_history))
         | "Write" >> beam.io.WriteToText(storage.join(rows_dir, "rows"),
                                          file_name_suffix=".json.gz"))


@dataclasses.dataclass(frozen=True)
class ScoredRows:
    """The job's rows in columns, sorted by (user, request time): each variant's top K as
    one int32 array [N, K] (4 bytes an id; 36 in a list of Python ints)."""
    user_id: List[str]
    request_timestamp: np.ndarray        # int64 [N]
    targets: List[List[str]]
    candidate_set_size: np.ndarray       # int64 [N]
    top: Dict[str, np.ndarray]           # variant -> int32 [N, K]

    def __len__(self) -> int:
        return len(self.user_id)


def read_rows(rows_dir: str) -> ScoredRows:
    users: List[str] = []
    times: List[int] = []
    targets: List[List[str]] = []
    sizes: List[int] = []
    tops: Dict[str, List[np.ndarray]] = {}
    for path in storage.glob(storage.join(rows_dir, "rows*.json.gz")):
        with gzip.open(storage.binary_reader(path), "rt") as f:
            for line in f:
                row = json.loads(line)
                users.append(row["user_id"])
                times.append(row["request_timestamp"])
                targets.append(row["targets"])
                sizes.append(row["candidate_set_size"])
                for name, top in row["top"].items():
                    tops.setdefault(name, []).append(np.asarray(top, np.int32))
    order = sorted(range(len(users)), key=lambda i: (users[i], times[i]))
    return ScoredRows([users[i] for i in order], np.asarray(times, np.int64)[order],
                      [targets[i] for i in order], np.asarray(sizes, np.int64)[order],
                      {name: np.stack(parts)[order] for name, parts in tops.items()})


def score(serving_dir: str, baseline_dir: Optional[str], examples_uri: str, split: str,
          item_ids: Sequence[str], max_history: int, rows_dir: str,
          beam_options: Optional[Dict] = None) -> ScoredRows:
    """The rows of every example of ``split``, scored by a Beam job (options as
    ``PipelineOptions.get_all_options`` gives them; None: in process) started from a
    fresh child process; ``rows_dir`` is scratch space the runner's workers can write."""
    import concurrent.futures
    import multiprocessing

    from stars.console import setup_child
    model_dirs = {CANDIDATE: serving_dir, **({BASELINE: baseline_dir} if baseline_dir else {})}
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=setup_child) as pool:
        pool.submit(_run, model_dirs, examples_uri, split, list(item_ids), max_history,
                    rows_dir, beam_options).result()
    return read_rows(rows_dir)


def _run(model_dirs, examples_uri, split, item_ids, max_history, rows_dir,
         beam_options) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions
    options = PipelineOptions.from_dictionary(beam_options) if beam_options else None
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, model_dirs, examples_uri, split, item_ids, max_history, rows_dir)
