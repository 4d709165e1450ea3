"""The Trainer's ``run_fn``: transformed sequences -> a trained STARS model.

The TFX template split: the pipeline names ``models.trainer.run_fn``; this
module owns the input pipeline, training loop and what the Trainer writes:

* ``<serving_model_dir>/stars/``: weights (a TF checkpoint), ``model_config.json`` and
  ``model_meta.json`` (feature names, vocabulary sizes, catalogue URIs): what
  the IndexBuilder needs to rebuild the model and export it with an index;
* ``<model_run_dir>/``: TensorBoard scalars and histograms, and an item-embedding
  projector (embeddings + item-id metadata), plus ``history.json`` (per-epoch losses
  and validation ranking) and ``model_selection.json`` (best epoch, the choices made
  after training).

Model selection is the offline benchmark's (``stars eval``): after each epoch the eval
split's targets are ranked against the whole catalogue (``ValidationRanking``; the
loss on them keeps falling while the model memorises their histories), early stopping
keeps the best NDCG@10 epoch, and the semantic match's weight, the cold items' serving
norm and the successor source's weight are then chosen on the same ranking
(``select_after_training``), so the pushed model serves as the benchmarked one does.

The catalogue arrives as component inputs of the StarsTrainer (its executor
puts their URIs in ``custom_config``), never as user configuration.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from models import (
    cold_items,
    distribution,
    item_trend_counts,
    length_buckets,
    semantic_match,
    successor_counts,
    successor_source,
)
from models import features as F
from models import validation_ranking as VR
from models.config import ModelConfig, make_config
from models.epoch_progress import EpochProgress
from models.inputs import InputAdapter, numpy_rows, take_rows
from models.item_catalog import ItemCatalog, load_item_catalog
from models.item_trend import TrendTable
from models.schedule import make_optimizer
from models.stars_model import DeltaUnfreeze, StarsModel
from models.successor_source import SuccessorTable

log = logging.getLogger(__name__)
WEIGHTS = "weights"
CONFIG_FILE = "model_config.json"
META_FILE = "model_meta.json"
MODEL_SUBDIR = "stars"
SELECTION_FILE = "model_selection.json"


@dataclasses.dataclass
class ModelMeta:
    """What, besides weights and config, rebuilds the model: feature names and sizes."""
    num_event_types: int
    user_numeric: list
    user_vocab_sizes: dict
    catalog_transformed_uri: str
    catalog_transform_graph_uri: str
    transform_graph_uri: str
    # The item trend table's layout (models.item_trend; 0 rows = none); its values are
    # in the weights.
    trend_origin: int = 0
    trend_period_s: int = 0
    trend_window: int = 0
    trend_rows: int = 0
    # The successor table's size (models.successor_source; 0 = none); its values are in
    # the weights.
    successor_entries: int = 0

    def with_successors(self, table: Optional[SuccessorTable]) -> "ModelMeta":
        if table is None:
            return self
        return dataclasses.replace(self, successor_entries=len(table.successors))

    def with_trend(self, trend: Optional[TrendTable]) -> "ModelMeta":
        if trend is None:
            return self
        return dataclasses.replace(self, trend_origin=int(trend.origin),
                                   trend_period_s=int(trend.period_s),
                                   trend_window=int(trend.window), trend_rows=len(trend.rows))

    def save(self, directory: str) -> None:
        with tf.io.gfile.GFile(os.path.join(directory, META_FILE), "w") as f:
            f.write(json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, directory: str) -> "ModelMeta":
        with tf.io.gfile.GFile(os.path.join(directory, META_FILE)) as f:
            return cls(**json.loads(f.read()))


def user_features(tft_output) -> tuple:
    """(numeric feature names, {categorical feature: vocabulary size incl. OOV})."""
    spec = tft_output.transformed_feature_spec()
    numeric = sorted(k[:-2] for k in spec
                     if k.startswith(F.USER_NUMERIC_PREFIX) and k.endswith("_z"))
    categorical = {}
    for key in spec:
        if key.startswith(F.USER_CATEGORICAL_PREFIX) and key.endswith("_id"):
            name = key[:-3]
            categorical[name] = tft_output.vocabulary_size_by_name(name) + 1
    return numeric, dict(sorted(categorical.items()))


def build_meta(tft_output, transform_graph_uri: str, catalog_transformed_uri: str,
               catalog_transform_graph_uri: str) -> ModelMeta:
    numeric, categorical = user_features(tft_output)
    return ModelMeta(num_event_types=tft_output.vocabulary_size_by_name(F.EVENT_TYPE_VOCAB) + 1,
                     user_numeric=numeric, user_vocab_sizes=categorical,
                     catalog_transformed_uri=catalog_transformed_uri,
                     catalog_transform_graph_uri=catalog_transform_graph_uri,
                     transform_graph_uri=transform_graph_uri)


def has_user_features(meta: ModelMeta) -> bool:
    return bool(meta.user_numeric or meta.user_vocab_sizes)


def fit_user_token(config: ModelConfig, meta: ModelMeta) -> ModelConfig:
    """``config`` with the [USER] token off when the data has no user features.

    The token encodes coarse static user features (§4.1); without any it is the same
    learned vector for every user, and h_gen read at its position is a summary of the
    history made by a slot that knows nothing of the user.  On Amazon Beauty (no user
    features) h_gen as the mean of the item states instead (the "− [USER]" ablation)
    ranked better on both heads: NI NDCG@10 +2%, GI +3% (BUILD_NOTES.md)."""
    if config.use_user_token and not has_user_features(meta):
        return config.replace(use_user_token=False)
    return config


def load_catalog(meta: ModelMeta) -> ItemCatalog:
    tft_output = tft.TFTransformOutput(meta.transform_graph_uri)
    return load_item_catalog(meta.catalog_transformed_uri, meta.catalog_transform_graph_uri,
                             tft_output.vocabulary_file_by_name(F.POPULARITY_VOCAB))


def set_precision(config: ModelConfig) -> None:
    """Mixed precision for training only: float16 on a GPU, bfloat16 on CPUs.  Exports
    (IndexBuilder) rebuild the model under the default float32 policy."""
    tf.keras.mixed_precision.set_global_policy(
        ("mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
        if config.mixed_precision else "float32")


def build_model(catalog: ItemCatalog, config: ModelConfig, meta: ModelMeta,
                trend: Optional[TrendTable] = None,
                successors: Optional[SuccessorTable] = None) -> StarsModel:
    """The model; without ``trend`` (``successors``), an item trend (a successor table)
    of ``meta``'s layout whose values a checkpoint then restores.  Seeded here, so the
    first model of a process starts from the same weights as any later one."""
    tf.keras.utils.set_random_seed(config.seed)
    if config.item_trend and trend is None:
        if not meta.trend_rows:
            raise ValueError("item_trend is on but the model meta has no trend table")
        trend = TrendTable(meta.trend_origin, meta.trend_period_s, meta.trend_window,
                           np.zeros((meta.trend_rows, len(catalog)), np.float32))
    if config.successor_source and successors is None:
        successors = SuccessorTable.empty(len(catalog), meta.successor_entries)
    return StarsModel(catalog, config, meta.num_event_types,
                      user_numeric=meta.user_numeric, user_vocab_sizes=meta.user_vocab_sizes,
                      trend=trend if config.item_trend else None, successors=successors)


def training_trend(tft_output, catalog: ItemCatalog) -> TrendTable:
    """The item trend table from the Transform's counts of the training split's distinct
    events (``models.item_trend_counts``, a Beam job)."""
    path = tft_output.vocabulary_file_by_name(item_trend_counts.ASSET)
    if path is None:
        raise ValueError("item_trend is on but the Transform output has no "
                         f"{item_trend_counts.ASSET!r} asset: rerun the Transform")
    return item_trend_counts.read_trend(path, catalog.index_of())


def training_successors(tft_output, catalog: ItemCatalog) -> SuccessorTable:
    """The successor table from the Transform's pair counts over the training examples
    (``models.successor_counts``, a Beam job), as the offline co-occurrence baselines
    count them."""
    path = tft_output.vocabulary_file_by_name(successor_counts.ASSET)
    if path is None:
        raise ValueError("successor_source is on but the Transform output has no "
                         f"{successor_counts.ASSET!r} asset: rerun the Transform")
    return successor_counts.read_successors(path, catalog.index_of())


def make_adapter(catalog: ItemCatalog, config: ModelConfig, meta: ModelMeta) -> InputAdapter:
    return InputAdapter(catalog.item_ids, config.max_history, meta.user_numeric,
                        list(meta.user_vocab_sizes))


def input_dataset(file_pattern, data_accessor, tft_output, adapter: InputAdapter,
                  batch_size: int, shuffle: bool, seed: int = 0) -> tf.data.Dataset:
    options = tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle,
                                             shuffle_seed=seed, num_epochs=1)
    dataset = data_accessor.tf_dataset_factory(file_pattern, options,
                                               tft_output.transformed_metadata.schema)
    return dataset.map(adapter, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def training_dataset(file_pattern, data_accessor, tft_output, adapter: InputAdapter,
                     config: ModelConfig, replicas: int = 1):
    """(shuffled global training batches, batches per epoch): ``config.batch_size`` users per
    replica (``models.distribution``), length-bucketed and cut to their widest history when
    ``config.length_buckets`` (see ``models.length_buckets``)."""
    batch_size = config.batch_size * replicas
    data = input_dataset(file_pattern, data_accessor, tft_output, adapter, batch_size,
                         shuffle=True, seed=config.seed)
    if not config.length_buckets:
        return data, count_batches(data)
    histogram = length_buckets.span_histogram(data, adapter.max_history)  # the one extra pass
    mean = length_buckets.mean_span(histogram)
    return (length_buckets.bucketed(data, adapter.max_history, batch_size, mean,
                                    seed=config.seed),
            length_buckets.batches_per_epoch(histogram, adapter.max_history, batch_size, mean))


def user_embedding_variants(config: ModelConfig) -> tuple:
    """The user embeddings training shapes: h_gen ("gi") only when its loss is on."""
    return ("gi", "ni") if config.lambda_gen > 0 else ("ni",)


def validation_ranking(file_pattern, data_accessor, tft_output, adapter: InputAdapter,
                       config: ModelConfig):
    """The eval split's full-catalogue ranking callback (``ValidationRanking``), streamed
    from the files at every pass, each batch cut to its history span: each example's whole
    history masked as already seen, its target(s) held out.  None when the split holds no
    example."""
    options = tfxio.TensorFlowDatasetOptions(batch_size=256, shuffle=False, num_epochs=1)

    def split():  # the same order at every pass: no shuffling, no sloppy interleave
        data = data_accessor.tf_dataset_factory(file_pattern, options,
                                                tft_output.transformed_metadata.schema)
        for inputs, seen in data.map(lambda f: (adapter(f), adapter.history_indices(f))):
            yield VR.RankingBatch(
                length_buckets.trim({k: v for k, v in inputs.items()
                                     if k != length_buckets.POOLS}, adapter.max_history),
                [h[h >= 0].astype(np.int64) for h in numpy_rows(seen)],
                [t[t >= 0].astype(np.int64) for t in numpy_rows(inputs["targets"])])
    if next(iter(split()), None) is None:
        return None
    return VR.ValidationRanking(split, user_embedding_variants(config))


def local_data_accessor():
    """A DataAccessor over gzipped TFRecords of tf.Examples, as the Trainer's, for use
    outside a TFX component (evaluation, tests)."""
    from tfx.components.trainer.fn_args_utils import DataAccessor

    def factory(file_pattern, options, schema):
        patterns = file_pattern if isinstance(file_pattern, list) else [file_pattern]
        return tfxio.TFExampleRecord(patterns, schema=schema).TensorFlowDataset(options)
    return DataAccessor(tf_dataset_factory=factory, record_batch_factory=None,
                        data_view_decode_fn=None)


def count_batches(dataset: tf.data.Dataset) -> int:
    return int(dataset.reduce(0, lambda n, _: n + 1).numpy())


def save_trained(model: StarsModel, config: ModelConfig, meta: ModelMeta, directory: str) -> str:
    path = os.path.join(directory, MODEL_SUBDIR)
    tf.io.gfile.makedirs(path)
    tf.train.Checkpoint(model=model).write(os.path.join(path, WEIGHTS))
    with tf.io.gfile.GFile(os.path.join(path, CONFIG_FILE), "w") as f:
        f.write(config.to_json())
    meta.save(path)
    return path


def load_trained(directory: str, catalog: Optional[ItemCatalog] = None):
    """(model, config, meta, catalog) from a Trainer model directory."""
    path = os.path.join(directory, MODEL_SUBDIR)
    with tf.io.gfile.GFile(os.path.join(path, CONFIG_FILE)) as f:
        config = ModelConfig.from_json(f.read())
    meta = ModelMeta.load(path)
    catalog = catalog if catalog is not None else load_catalog(meta)
    tf.keras.mixed_precision.set_global_policy("float32")  # exports are float32
    model = build_model(catalog, config, meta)
    adapter = make_adapter(catalog, config, meta)
    model.item_embeddings(tf.constant([0]))  # build the item tower
    model.items.build(None)
    tf.train.Checkpoint(model=model).read(os.path.join(path, WEIGHTS)).expect_partial()
    return model, config, meta, catalog, adapter


def write_projector(model: StarsModel, catalog: ItemCatalog, log_dir: str) -> None:
    """The item embeddings w_j for TensorBoard's projector, labelled by item id."""
    from tensorboard.plugins import projector
    tf.io.gfile.makedirs(log_dir)
    with tf.io.gfile.GFile(os.path.join(log_dir, "item_metadata.tsv"), "w") as f:
        for item in catalog.item_ids:
            f.write(f"{item}\n")
    embeddings = tf.Variable(model.item_embeddings(), name="item_embeddings")
    tf.train.Checkpoint(item_embeddings=embeddings).save(os.path.join(log_dir, "projector.ckpt"))
    config = projector.ProjectorConfig()
    entry = config.embeddings.add()
    entry.tensor_name = "item_embeddings/.ATTRIBUTES/VARIABLE_VALUE"
    entry.metadata_path = "item_metadata.tsv"
    projector.visualize_embeddings(log_dir, config)


def model_config_from(custom_config: dict) -> ModelConfig:
    return make_config(custom_config.get("preset", "cpu"), custom_config.get("variant", "stars"),
                       **custom_config.get("overrides", {}))


def train(model: StarsModel, config: ModelConfig, train_data, eval_data, total_steps: int,
          log_dir: Optional[str] = None, verbose: int = 0, validation_callbacks=(),
          monitor: str = "val_loss_next", monitor_mode: str = "min",
          strategy: Optional[tf.distribute.Strategy] = None,
          steps_per_epoch: Optional[int] = None):
    """Fits with early stopping on ``monitor`` (best weights restored).

    ``validation_callbacks`` run before the early stopping at each epoch end, so a
    callback that writes ``monitor`` into the logs (the offline evaluation's
    validation ranking) is what decides when to stop.

    ``strategy`` (default: the current one): ``model`` must have been built in its scope;
    the optimiser is made there and the global batches of ``train_data`` and ``eval_data``
    are split across its replicas (``models.distribution.distribute``).

    ``steps_per_epoch`` (``train_data``'s batches per epoch; required with several replicas,
    as Keras cannot count distributed data): the epochs are read from one iterator over
    ``train_data`` repeated, so the batches of a run do not depend on the strategy.
    Without it each epoch iterates ``train_data`` anew (a different shuffle sequence).
    """
    strategy = strategy or tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model.compile(optimizer=make_optimizer(config, max(1, total_steps)))
    lengths = {}
    if steps_per_epoch:
        train_data, lengths["steps_per_epoch"] = train_data.repeat(), steps_per_epoch
    if strategy.num_replicas_in_sync > 1:
        if not steps_per_epoch:
            raise ValueError("training on several replicas needs steps_per_epoch")
        if eval_data is not None:  # Keras starts a fresh iterator for every evaluation
            lengths["validation_steps"] = count_batches(eval_data)
        train_data = distribution.distribute(strategy, train_data, take_rows)
        eval_data = distribution.distribute(strategy, eval_data, take_rows)
        # The steps return the global batch's losses on every replica (StarsModel's
        # train_step); Keras' default would add the replicas' copies up.
        model.distribute_reduction_method = "first"
    callbacks = [DeltaUnfreeze(config.delta_frozen_epochs), *validation_callbacks]
    if strategy.num_replicas_in_sync > 1:  # every worker must stop at the same epoch
        callbacks.append(distribution.AgreeOnLogs(strategy, monitor))
    if eval_data is not None or validation_callbacks:
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            monitor=monitor, mode=monitor_mode, patience=config.early_stopping_patience,
            restore_best_weights=True))
    if log_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=1))
    callbacks.append(EpochProgress())  # last: it reports what the callbacks above logged
    return model.fit(train_data, validation_data=eval_data, epochs=config.epochs,
                     callbacks=callbacks, verbose=verbose, **lengths)


def run_fn(fn_args) -> None:
    """Trains under ``models.distribution``'s strategy for this environment; in a cluster
    only the chief writes the model and the run's files."""
    strategy = distribution.strategy_from_environment()
    replicas = strategy.num_replicas_in_sync
    custom = fn_args.custom_config or {}
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    meta = build_meta(tft_output, fn_args.transform_output, custom["catalog_transformed_uri"],
                      custom["catalog_transform_graph_uri"])
    config = fit_user_token(model_config_from(custom), meta)
    catalog = load_catalog(meta)
    if len(catalog) < 2:
        raise ValueError(f"the catalogue has {len(catalog)} item(s); STARS needs at least 2")
    adapter = make_adapter(catalog, config, meta)
    train_data, steps = training_dataset(fn_args.train_files, fn_args.data_accessor,
                                         tft_output, adapter, config, replicas)
    eval_data = input_dataset(fn_args.eval_files, fn_args.data_accessor, tft_output, adapter,
                              config.batch_size * replicas, shuffle=False)
    if steps == 0:
        raise ValueError("the training split is empty: no user has enough history")
    ranking = validation_ranking(fn_args.eval_files, fn_args.data_accessor, tft_output,
                                 adapter, config)
    if ranking is None:
        raise ValueError("the eval split is empty: no user has an event after the training "
                         "cut, so there is nothing to stop on or select with")
    if fn_args.train_steps:
        train_data = train_data.take(fn_args.train_steps)
        steps = min(steps, fn_args.train_steps)
    trend = training_trend(tft_output, catalog) if config.item_trend else None
    successors = training_successors(tft_output, catalog) if config.successor_source else None
    meta = meta.with_trend(trend).with_successors(successors)
    set_precision(config)
    chief = distribution.is_chief(os.environ.get("TF_CONFIG"))
    with strategy.scope():
        model = build_model(catalog, config, meta, trend, successors)
    with tempfile.TemporaryDirectory() as scratch:  # the other workers' TensorBoard logs
        history = train(model, config, train_data, eval_data, steps * config.epochs,
                        log_dir=fn_args.model_run_dir if chief else scratch,
                        validation_callbacks=[ranking], monitor=VR.MONITOR,
                        monitor_mode="max", strategy=strategy, steps_per_epoch=steps)
    if not chief:
        # The chief writes the model; TFX's executor only checks that the directory exists.
        tf.io.gfile.makedirs(fn_args.serving_model_dir)
        return
    selection = model_selection(history, select_after_training(model, ranking, catalog.counts,
                                                                config))
    log.info("model selection: %s", json.dumps(selection))
    write_projector(model, catalog, fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "history.json"), "w") as f:
        f.write(json.dumps({k: [float(x) for x in v] for k, v in history.history.items()}))
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, SELECTION_FILE), "w") as f:
        f.write(json.dumps(selection, indent=2))
    save_trained(model, config, meta, fn_args.serving_model_dir)


def select_after_training(model, ranking, counts: np.ndarray, config) -> dict:
    """The choices made on the validation ranking once the weights are final, in order:
    the semantic match's weight (the warm ranking), the cold items' norm (which trades
    against the ranking as it then stands), then the successor source's weight (which
    leaves cold items as they are: they have no successor count).  Leaves them set on
    ``model``."""
    return {"semantic_match": semantic_match.choose_weight(model, ranking),
            "cold_item_norm": cold_items.choose_norm(model, ranking, counts, config),
            "successor_source": (successor_source.choose_weight(model, ranking)
                                 if config.successor_source else None)}


def model_selection(history, selected: dict) -> dict:
    """What was selected on the validation ranking: the epoch whose weights were kept
    (EarlyStopping restores the best one) and ``select_after_training``'s choices (None
    each where the model has no such part)."""
    curve = [float(x) for x in history.history.get(VR.MONITOR, [])]
    best = int(np.argmax(curve)) if curve else None
    return {"monitor": VR.MONITOR, "epochs_run": len(curve),
            "best_epoch": None if best is None else best + 1,
            "best": None if best is None else curve[best], **selected}
