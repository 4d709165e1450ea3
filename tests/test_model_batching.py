"""Server-side batching (``serving/model_server/batching.py``): TF Serving's
BatchingParameters text format, merged calls that give each caller exactly what it would
get alone, and the batching model server end to end."""

import threading
import time

import numpy as np
import pytest

from serving.model_server import errors
from serving.model_server.batching import Batcher, BatchingParameters


def test_parameters_read_tf_servings_text_format():
    text = """
        max_batch_size { value: 16 }
        batch_timeout_micros { value: 500 }
        num_batch_threads { value: 3 }
        max_enqueued_batches { value: 7 }
        allowed_batch_sizes: 4
    """
    assert BatchingParameters.from_text(text) == BatchingParameters(16, 500, 7, 3)
    assert BatchingParameters.from_text("") == BatchingParameters()
    with pytest.raises(ValueError, match="max_batch_sise"):
        BatchingParameters.from_text("max_batch_sise { value: 16 }", "b.pbtxt")
    with pytest.raises(ValueError, match="pad_variable_length_inputs"):
        BatchingParameters.from_text("pad_variable_length_inputs: true")
    with pytest.raises(ValueError, match="positive"):
        BatchingParameters.from_text("num_batch_threads { value: 0 }")


def _concurrently(batcher, calls, run):
    results = [None] * len(calls)

    def one(n, key, inputs):
        try:
            results[n] = batcher.run(key, inputs, run)
        except Exception as e:  # noqa: BLE001
            results[n] = e
    threads = [threading.Thread(target=one, args=(n, *c)) for n, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_calls_merge_and_split_back_exactly():
    seen = []

    def run(inputs):  # a "model": y = 2x + row-sum of v; records the batch sizes
        seen.append(len(inputs["x"]))
        time.sleep(0.01)
        return {"y": 2 * inputs["x"] + inputs["v"].sum(axis=1)}
    batcher = Batcher(BatchingParameters(max_batch_size=8, batch_timeout_micros=50_000,
                                         num_batch_threads=1))
    try:
        calls = [("sig", {"x": np.array([float(n)] * (1 + n % 2)),
                          "v": np.full((1 + n % 2, 3), n, np.float32)}) for n in range(6)]
        results = _concurrently(batcher, calls, run)
        for (_, inputs), got in zip(calls, results):  # each caller gets its own rows
            np.testing.assert_allclose(got["y"], 2 * inputs["x"] + inputs["v"].sum(axis=1))
        assert sum(seen) == 9 and max(seen) > 2 and batcher.batches < 6
        # other keys, or other shapes after the first dimension, are never merged
        seen.clear()
        calls = [("a", {"x": np.ones(1), "v": np.ones((1, 3))}),
                 ("b", {"x": np.ones(1), "v": np.ones((1, 3))}),
                 ("a", {"x": np.ones(1), "v": np.ones((1, 4))})]
        results = _concurrently(batcher, calls, run)
        assert seen == [1, 1, 1] and [r["y"].tolist() for r in results] == [[5.0], [5.0], [6.0]]
    finally:
        batcher.stop()


def test_failures_reach_every_caller_and_a_full_queue_refuses():
    def broken(inputs):
        raise errors.invalid_argument("bad input")

    def not_per_row(inputs):
        return {"total": np.array(inputs["x"].sum())}
    batcher = Batcher(BatchingParameters(max_batch_size=4, batch_timeout_micros=50_000,
                                         num_batch_threads=1, max_enqueued_batches=1))
    try:
        results = _concurrently(batcher, [("k", {"x": np.ones(1)})] * 3, broken)
        assert all(isinstance(r, errors.ServingError) and "bad input" in r.message
                   for r in results)
        results = _concurrently(batcher, [("s", {"x": np.ones(1)})] * 2, not_per_row)
        assert all(isinstance(r, errors.ServingError) and "cannot be batched" in r.message
                   for r in results)
        running, release = threading.Event(), threading.Event()

        def holds(inputs):
            running.set()
            release.wait(5)
            return {"y": inputs["x"]}
        first = threading.Thread(target=batcher.run, args=("p", {"x": np.ones(1)}, holds))
        first.start()
        assert running.wait(5)  # the only batch thread is busy
        second = threading.Thread(target=batcher.run, args=("q", {"x": np.ones(1)}, holds))
        second.start()
        time.sleep(0.1)  # "q" waits: the one batch the queue may hold
        started = time.monotonic()
        with pytest.raises(errors.ServingError, match="queue is full"):
            batcher.run("r", {"x": np.ones(1)}, holds)
        assert time.monotonic() - started < 0.05  # refused at once
        release.set()
        first.join()
        second.join()
    finally:
        batcher.stop()


def test_large_calls_run_alone():
    batcher = Batcher(BatchingParameters(max_batch_size=4))
    try:
        got = batcher.run("k", {"x": np.arange(5.0)}, lambda i: {"y": i["x"] + 1})
        assert got["y"].tolist() == [1, 2, 3, 4, 5] and batcher.batches == 0
    finally:
        batcher.stop()
