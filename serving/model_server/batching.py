"""Server-side batching (TF Serving's ``--enable_batching``): concurrent calls of the same
signature of the same version run as one TensorFlow call.

A call costs TensorFlow about the same for 1 row as for several (dispatch, kernel launch,
the index search's fixed work), so under concurrent load merging calls cuts the server's
TensorFlow's CPU per row several-fold (BUILD_NOTES, "Serving under load and faults",
which also says why it is off in the production settings).  Semantics follow TF Serving's
batching session:

* a call waits at most ``batch_timeout_micros`` for others to join; a batch holds at most
  ``max_batch_size`` rows; ``num_batch_threads`` batches run at once; a call of
  ``max_batch_size`` rows or more runs alone;
* only calls whose inputs have the same names, dtypes and shapes after the first
  dimension are merged (TF Serving's default ``pad_variable_length_inputs: false``);
  clients that want their variable-length calls merged pad them to a few fixed lengths;
* every output must have the batch's rows as its first dimension; the rows are split
  back to the callers in order;
* beyond ``max_enqueued_batches`` batches waiting, a call is refused at once
  (UNAVAILABLE), as TF Serving's queue does.

``BatchingParameters`` is TF Serving's message (``session_bundle_config.proto``, not
shipped in the ``tensorflow-serving-api`` wheel): its descriptor is built here from the
same field definitions, so ``--batching_parameters_file`` reads TF Serving's text format
with protobuf's own parser.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np

from serving.model_server import errors

# name, field number, wrapper type (google.protobuf.*Value) -- session_bundle_config.proto
_FIELDS = (("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
           ("max_enqueued_batches", 3, "Int64Value"), ("num_batch_threads", 4, "Int64Value"),
           ("thread_pool_name", 5, "StringValue"))
_REPEATED = (("allowed_batch_sizes", 6),)
_BOOLS = (("pad_variable_length_inputs", 7),)
_message_class = None


def batching_parameters_class():
    """The ``tensorflow.serving.BatchingParameters`` message class."""
    global _message_class
    if _message_class is None:
        from google.protobuf import (
            descriptor_pb2,
            wrappers_pb2,  # noqa: F401  (registers the wrappers)
        )

        from serving.model_server.protos import message_class
        F = descriptor_pb2.FieldDescriptorProto
        file = descriptor_pb2.FileDescriptorProto(
            name="stars/tensorflow_serving_batching_parameters.proto",
            package="tensorflow.serving", dependency=["google/protobuf/wrappers.proto"],
            syntax="proto3")
        message = file.message_type.add(name="BatchingParameters")
        for name, number, wrapper in _FIELDS:
            message.field.add(name=name, number=number, type=F.TYPE_MESSAGE,
                              type_name=f".google.protobuf.{wrapper}", label=F.LABEL_OPTIONAL)
        for name, number in _REPEATED:
            message.field.add(name=name, number=number, type=F.TYPE_INT64,
                              label=F.LABEL_REPEATED)
        for name, number in _BOOLS:
            message.field.add(name=name, number=number, type=F.TYPE_BOOL,
                              label=F.LABEL_OPTIONAL)
        _message_class = message_class(file, "tensorflow.serving.BatchingParameters")
    return _message_class


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's defaults, except ``batch_timeout_micros`` (1 ms: a latency-bound
    caller) and ``num_batch_threads`` (2 cores here)."""
    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 2

    @classmethod
    def from_text(cls, text: str, source: str = "batching parameters") -> "BatchingParameters":
        """TF Serving's ``--batching_parameters_file`` (text-format BatchingParameters)."""
        from google.protobuf import text_format
        proto = batching_parameters_class()()
        try:
            text_format.Parse(text, proto)
        except text_format.ParseError as e:
            raise ValueError(f"{source}: {e}") from None
        if proto.pad_variable_length_inputs:
            raise ValueError(f"{source}: pad_variable_length_inputs is not supported by this "
                             "server (pad on the client to fixed lengths)")
        values = {name: getattr(proto, name).value for name, _, wrapper in _FIELDS
                  if wrapper == "Int64Value" and proto.HasField(name)}
        params = cls(**{k: int(v) for k, v in values.items()})
        if min(params.max_batch_size, params.num_batch_threads, params.max_enqueued_batches) < 1 \
                or params.batch_timeout_micros < 0:
            raise ValueError(f"{source}: sizes and thread counts must be positive")
        return params

    @classmethod
    def from_file(cls, path: str) -> "BatchingParameters":
        with open(path, encoding="utf-8") as f:
            return cls.from_text(f.read(), path)


@dataclasses.dataclass(eq=False)
class _Call:
    inputs: Mapping[str, np.ndarray]
    rows: int
    enqueued: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: Optional[Dict[str, np.ndarray]] = None
    error: Optional[BaseException] = None


Run = Callable[[Mapping[str, np.ndarray]], Dict[str, np.ndarray]]


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    shapes = {a.shape[0] if np.ndim(a) else None for a in inputs.values()}
    rows = shapes.pop() if len(shapes) == 1 else None
    if rows is None:
        return -1  # no common first dimension: not batchable
    return int(rows)


class Batcher:
    """Merges concurrent :meth:`run` calls with the same key (see the module docstring)."""

    def __init__(self, params: BatchingParameters = BatchingParameters()):
        self.params = params
        self._cv = threading.Condition()
        self._queues: Dict[tuple, List[_Call]] = {}
        self._runs: Dict[tuple, Run] = {}
        self._waiting_batches = 0
        self._stopped = False
        self.batches = 0       # batches run (for tests and metrics)
        self.batched_calls = 0
        self._threads = [threading.Thread(target=self._work, name=f"batch-{n}", daemon=True)
                         for n in range(params.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def run(self, key: tuple, inputs: Mapping[str, np.ndarray], run: Run) -> Dict[str, np.ndarray]:
        """``run(inputs)``, merged with concurrent calls of the same ``key`` (the caller's
        servable, signature and outputs) and input layout."""
        rows = _rows(inputs)
        if rows < 1 or rows >= self.params.max_batch_size:
            return run(inputs)
        layout = tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()))
        key = (key, layout)
        call = _Call(inputs, rows, time.monotonic())
        with self._cv:
            if self._stopped:
                return run(inputs)
            queue = self._queues.setdefault(key, [])
            if not queue:
                if self._waiting_batches >= self.params.max_enqueued_batches:
                    raise errors.ServingError(errors.Code.UNAVAILABLE,
                                              "The batch scheduling queue is full")
                self._waiting_batches += 1
            queue.append(call)
            self._runs[key] = run
            self._cv.notify()
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.outputs is not None  # _run_batch sets one of the two
        return call.outputs

    def _take(self):
        """The next batch to run: (run, calls), once it is full or its oldest call has
        waited the timeout; None when stopping.  Called with the lock held."""
        timeout = self.params.batch_timeout_micros / 1e6
        while True:
            if self._stopped and not any(self._queues.values()):
                return None
            now = time.monotonic()
            ready, wait = None, None
            for key, queue in self._queues.items():
                if not queue:
                    continue
                due = queue[0].enqueued + timeout
                if sum(c.rows for c in queue) >= self.params.max_batch_size or due <= now \
                        or self._stopped:
                    ready = key
                    break
                wait = due - now if wait is None else min(wait, due - now)
            if ready is not None:
                queue, taken, rows = self._queues[ready], [], 0
                while queue and rows + queue[0].rows <= self.params.max_batch_size:
                    rows += queue[0].rows
                    taken.append(queue.pop(0))
                if not queue:
                    self._waiting_batches -= 1
                return self._runs[ready], taken
            self._cv.wait(wait)

    def _work(self) -> None:
        while True:
            with self._cv:
                batch = self._take()
            if batch is None:
                return
            self._run_batch(*batch)

    def _run_batch(self, run: Run, calls: List[_Call]) -> None:
        try:
            if len(calls) == 1:
                calls[0].outputs = run(calls[0].inputs)
            else:
                merged = {name: np.concatenate([c.inputs[name] for c in calls])
                          for name in calls[0].inputs}
                outputs = run(merged)
                total = sum(c.rows for c in calls)
                bad = [n for n, a in outputs.items() if np.ndim(a) == 0 or a.shape[0] != total]
                if bad:
                    raise errors.ServingError(
                        errors.Code.FAILED_PRECONDITION,
                        f"Batched output {bad[0]!r} does not have the batch's {total} rows: "
                        "this signature cannot be batched")
                start = 0
                for call in calls:
                    call.outputs = {n: a[start:start + call.rows] for n, a in outputs.items()}
                    start += call.rows
            self.batches += 1
            self.batched_calls += len(calls)
        except BaseException as e:  # every caller gets the failure
            for call in calls:
                call.error = e
        finally:
            for call in calls:
                call.done.set()

    def stop(self) -> None:
        """Runs what is queued, then ends the threads."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(10)


__all__ = ["BatchingParameters", "Batcher", "batching_parameters_class"]
