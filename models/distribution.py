"""The ``tf.distribute`` strategy the Trainer trains under, chosen from the environment.

One place decides, so the Trainer (``models.trainer.run_fn``), the tests and a Vertex AI
Training job agree on what runs where:

* ``TF_CONFIG`` names a cluster with more than one worker (``chief`` / ``master`` and
  ``worker`` tasks; Vertex AI Training sets it on every replica of a job with several)
  -> ``MultiWorkerMirroredStrategy``: synchronous data parallelism across machines, the
  devices of each machine included;
* more than one local GPU, or an explicit request for N logical CPU devices (``logical_cpus``
  or ``STARS_LOGICAL_CPUS``; for tests and for checking a distributed run without GPUs)
  -> ``MirroredStrategy`` over the local devices;
* otherwise the default strategy: one device, exactly the code path without distribution.

Synchronous replicas of the whole model rather than parameter servers: STARS' parameters are
an item tower and a small transformer that fit one accelerator, so all-reducing gradients
keeps every replica's model the one a single device would train; a parameter server would
pay off only once the item-sized tables stop fitting one device's memory.

Batches. ``ModelConfig.batch_size`` is per replica: the global batch is ``batch_size`` x
replicas (``models.trainer.training_dataset``), so adding replicas adds throughput and a run
on R devices takes the same steps as one device with R times the batch. Each global batch is
built once per worker, exactly as on one device (length buckets, shuffle), and cut into one
slice of rows per replica (``distribute``); the model's loss is the mean over the whole
global batch (``global_loss``), so the gradients all-reduced across replicas are the
single-device gradient of that batch. Not ``experimental_distribute_dataset``: its
re-batching assumes every tensor is batch-major (the negative-sampling pools are ``[rows x
positions, None]``) and, for batches of unknown size such as the length buckets, rewrites the
pipeline's batch operations instead of splitting what they produce.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable, Mapping, Optional

import tensorflow as tf

log = logging.getLogger(__name__)

LOGICAL_CPUS_VAR = "STARS_LOGICAL_CPUS"
MULTI_WORKER, MIRRORED, DEFAULT = "multi_worker", "mirrored", "default"
# TF_CONFIG task types that train (an "evaluator" or "ps" task holds no replica).
TRAINING_TASKS = ("chief", "master", "worker")


def cluster_workers(tf_config: Optional[str]) -> int:
    """How many training tasks (chief/master + workers) ``TF_CONFIG`` names; 0 without one."""
    if not tf_config:
        return 0
    try:
        cluster = json.loads(tf_config).get("cluster") or {}
    except (ValueError, AttributeError):
        raise ValueError(f"TF_CONFIG is not a JSON object: {tf_config!r}") from None
    return sum(len(cluster.get(task) or ()) for task in TRAINING_TASKS)


def choose(tf_config: Optional[str], gpus: int, logical_cpus: int = 0) -> str:
    """The strategy kind for this environment: ``MULTI_WORKER``, ``MIRRORED`` or ``DEFAULT``
    (see the module docstring)."""
    if cluster_workers(tf_config) > 1:
        return MULTI_WORKER
    if gpus > 1 or logical_cpus > 1:
        return MIRRORED
    return DEFAULT


def is_chief(tf_config: Optional[str]) -> bool:
    """Whether this process writes the outputs: the chief (or master), else worker 0 of a
    cluster without one; always true outside a cluster."""
    if cluster_workers(tf_config) <= 1:
        return True
    config = json.loads(tf_config or "{}")
    task = config.get("task") or {}
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind in ("chief", "master"):
        return True
    cluster = config.get("cluster") or {}
    return kind == "worker" and index == 0 and not (cluster.get("chief") or cluster.get("master"))


def use_logical_cpus(count: int) -> list:
    """Splits the CPU into ``count`` logical devices; returns their names.  Must run before
    TensorFlow initialises its devices (a fresh process): afterwards the split cannot change,
    and a process already holding ``count`` CPU devices is accepted as it is."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise RuntimeError(
                f"{count} logical CPU devices were asked for after TensorFlow initialised its "
                f"devices ({len(tf.config.list_logical_devices('CPU'))} CPU device(s)); set "
                f"{LOGICAL_CPUS_VAR} (or call use_logical_cpus) before TensorFlow runs") from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def strategy_from_environment(logical_cpus: Optional[int] = None) -> tf.distribute.Strategy:
    """The strategy ``choose`` picks for this process: ``TF_CONFIG``, the visible GPUs and
    ``logical_cpus`` (default ``STARS_LOGICAL_CPUS``, else 0)."""
    tf_config = os.environ.get("TF_CONFIG")
    if logical_cpus is None:
        logical_cpus = int(os.environ.get(LOGICAL_CPUS_VAR) or 0)
    gpus = tf.config.list_physical_devices("GPU")
    kind = choose(tf_config, len(gpus), logical_cpus)
    if kind == MULTI_WORKER:  # its cluster resolver reads TF_CONFIG
        strategy: tf.distribute.Strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif kind == MIRRORED:
        devices = ([d.name for d in tf.config.list_logical_devices("GPU")] if len(gpus) > 1
                   else use_logical_cpus(logical_cpus))
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        strategy = tf.distribute.get_strategy()
    log.info("training strategy: %s (%s), %d replica(s)", kind, type(strategy).__name__,
             strategy.num_replicas_in_sync)
    return strategy


def replica_slices(rows, replicas: int, index: int):
    """[start, stop) of replica ``index``'s rows in a global batch of ``rows`` rows: the
    first replicas get ceil(rows / replicas) each, the last what is left (maybe none)."""
    per = (rows + replicas - 1) // replicas
    start = tf.minimum(per * index, rows)
    return start, tf.minimum(start + per, rows)


def distribute(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset,
               take_rows: Callable[[dict, tf.Tensor, tf.Tensor], dict]):
    """``dataset`` of global batches as ``strategy``'s per-replica batches: every worker
    builds the same global batches and hands each local replica its slice of rows
    (``take_rows(batch, start, stop)``; ``models.inputs.take_rows`` knows the layout).  With
    one replica, ``dataset`` itself."""
    replicas = strategy.num_replicas_in_sync
    if replicas == 1 or dataset is None:
        return dataset

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def slices(batch):
            rows = tf.shape(batch["valid"], out_type=tf.int64)[0]
            # Consecutive elements go to consecutive local replicas.
            out = None
            for i in range(local):
                part = tf.data.Dataset.from_tensors(
                    take_rows(batch, *replica_slices(rows, replicas, first + i)))
                out = part if out is None else out.concatenate(part)
            return out

        options = tf.data.Options()
        # Every worker reads the whole split and keeps its replicas' rows: the global
        # batches are then the single-device ones.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.flat_map(slices).with_options(options)

    return strategy.distribute_datasets_from_function(per_worker)


def global_loss(terms: Mapping[str, tuple], weights: Mapping[str, float]):
    """Inside a replica: (this replica's share of the global-batch loss, {term: its mean over
    the global batch}).

    ``terms``: ``{name: (mean over this replica's rows, row count)}``; ``weights``: each term's
    weight in the loss.  Every term is a mean over rows (positions, targets, negatives), and
    replicas hold different numbers of them, so averaging the replicas' means would weigh a
    row by the size of its slice.  Each replica contributes mean x count / global count
    instead: the gradients the optimiser sums across replicas are then those of the mean over
    the global batch, as on one device.  A replica without rows for a term contributes 0."""
    context = tf.distribute.get_replica_context()
    counts = {k: tf.cast(n, tf.float32) for k, (_, n) in terms.items()}
    totals = context.all_reduce(tf.distribute.ReduceOp.SUM, counts)
    shares = {k: tf.where(counts[k] > 0, tf.cast(mean, tf.float32), 0.0)
              * tf.math.divide_no_nan(counts[k], totals[k])
              for k, (mean, _) in terms.items()}
    objective = tf.add_n([weights[k] * shares[k] for k in terms])
    means = context.all_reduce(tf.distribute.ReduceOp.SUM,
                               {k: tf.stop_gradient(v) for k, v in shares.items()})
    return objective, means


class AgreeOnLogs(tf.keras.callbacks.Callback):
    """Every worker takes replica 0's ``monitor`` at each epoch end (placed before
    ``EarlyStopping``).  The workers compute it alike from the same weights, but a tie in a
    ranking metric broken differently (a GPU's reduction order) would make one worker stop
    and leave the others waiting in their next all-reduce."""

    def __init__(self, strategy: tf.distribute.Strategy, monitor: str):
        super().__init__()
        self.strategy = strategy
        self.monitor = monitor
        self._broadcast = None

    def _replica_zero(self, value):
        context = tf.distribute.get_replica_context()
        first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), value.dtype)
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value * first)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.monitor not in logs:
            return
        if self._broadcast is None:
            self._broadcast = tf.function(
                lambda value: self.strategy.run(self._replica_zero, args=(value,)))
        agreed = self._broadcast(tf.constant(float(logs[self.monitor]), tf.float64))
        logs[self.monitor] = float(self.strategy.experimental_local_results(agreed)[0])
