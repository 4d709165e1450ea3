"""Catalogue refresh without retraining: the trained STARS model over a NEW catalogue.

A product launched today must be retrievable today, not after the next training run.
STARS can do it because an item's token is made of its content: the frozen text
embedding e_i and its attribute tags t_i, plus a learned residual δ_i that a never-seen
item does not have (δ = 0, ``models.item_tokens``).  So the trained weights embed any
item from its text and tags alone, and a refresh only has to rebuild the item side:

* the new enriched catalogue (the ItemEnricher's output) goes through the TRAINED
  catalogue Transform graph, never a new analysis, so tag, category, subclass and brand
  ids keep the meaning the weights learned (an unknown tag is dropped; an unknown
  subclass or category, which only the training sampler reads, gets its own bucket past
  the trained vocabulary);
* the new catalogue keeps its own item order (sorted ids): a new item has no old index;
* the model is rebuilt for it and filled from the trained checkpoint.  Variables that do
  not depend on the catalogue are copied; the item-indexed ones are remapped by item id
  (``ITEM_TABLES``): δ and the has-interactions mask, the popularity prior, the item
  trend's columns and the successor table keep each kept item's values and give a new
  item what a never-seen item had in training (δ = 0, count 0); the catalogue features
  (text embedding, tags, semantic-match keys) come from the new catalogue, so a changed
  title or tag changes the item's vector.  A checkpoint variable whose shape would change
  and that is not in ``ITEM_TABLES`` stops the refresh: it would be a catalogue-sized
  variable this module does not know how to remap;
* the ScaNN and brute-force serving models are exported as the IndexBuilder exports
  them (same signatures, popularity fallback from the remapped prior), ScaNN's recall is
  measured on real user embeddings (``models.index_quality``), and a report says what
  changed.

The semantic-match keys of the new items are computed in the trained catalogue's frame
(its mean and, with ``semantic_match_dim``, its principal directions), not the new
catalogue's: re-centring on the new mean would move every kept item's key, and the user
side of the match (the keys of the latest items) with it.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from models import features as F
from models import index_quality
from models.config import ModelConfig
from models.item_catalog import ItemCatalog
from models.popularity import read_popularity_counts
from models.semantic_match import principal_directions
from models.serving import export_serving_models
from models.successor_source import SuccessorTable
from models.trainer import CONFIG_FILE, MODEL_SUBDIR, WEIGHTS, ModelMeta, load_catalog, load_trained

CATALOG_SPLIT = "catalog"
VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
# The checkpoint's item-indexed variables and how each is rebuilt for the new catalogue.
ITEM_TABLES = {
    "model/items/delta_raw": "rows",             # δ: kept rows, zeros for new items
    "model/items/has_interactions": "rows",      # 0 for new items: their δ stays masked
    "model/log_p": "prior",                      # kept priors, the count-0 prior for new
    "model/item_trend/rows": "columns",          # [T, I]: kept columns, zeros (log1p 0)
    "model/successor_source/row_splits": "successors",
    "model/successor_source/successors": "successors",
    "model/successor_source/counts": "successors",
    "model/items/text_embedding": "catalogue",   # e_i of the new catalogue
    "model/items/tags": "catalogue",             # t_i of the new catalogue
    "model/semantic_match/keys": "catalogue",    # keys of the new text, trained frame
}


@dataclasses.dataclass
class CatalogChanges:
    """How the new catalogue relates to the trained one, by item id."""
    old_index: np.ndarray   # [I_new] int64: each new item's trained index, -1 = new item
    new_items: list
    removed_items: list
    changed_items: list     # kept items whose text embedding or known tags changed
    kept_items: list

    def summary(self) -> dict:
        return {"new_items": len(self.new_items), "removed_items": len(self.removed_items),
                "changed_items": len(self.changed_items), "kept_items": len(self.kept_items)}


# ---- the new catalogue through the trained Transform -------------------------------------
def transform_new_catalog(enriched_items_uri: str, catalog_transform_graph_uri: str,
                          batch_size: int = 1024) -> Dict[str, dict]:
    """{item id: transformed features} of the enriched items (split ``catalog``), through
    the TRAINED catalogue Transform graph: ``text_embedding`` [d_e], ``tag_ids`` (trained
    tag ids; unknown tags are -1), ``subclass_index``, ``category_index`` (-1 unknown),
    ``in_stock``.  Duplicate ids stop the refresh (CatalogExampleGen refuses them too)."""
    tft_output = tft.TFTransformOutput(catalog_transform_graph_uri)
    spec = tft_output.raw_feature_spec()
    files = sorted(tf.io.gfile.glob(os.path.join(enriched_items_uri, f"Split-{CATALOG_SPLIT}",
                                                 "*.gz")))
    if not files:
        raise ValueError(f"{enriched_items_uri} has no Split-{CATALOG_SPLIT} examples")
    items: Dict[str, dict] = {}
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(batch_size)
    for serialized in records:
        out = tft_output.transform_raw_features(tf.io.parse_example(serialized, spec),
                                                drop_unused_features=True)
        tags = tf.RaggedTensor.from_sparse(out["tag_ids"])
        for row, item in enumerate(out["item_id"].numpy()):
            item = item.decode()
            if item in items:
                raise ValueError(f"item {item!r} appears twice in {enriched_items_uri}")
            items[item] = {"text_embedding": out["text_embedding"][row].numpy(),
                           "tag_ids": tags[row].numpy(),
                           "subclass_index": int(out["subclass_index"][row]),
                           "category_index": int(out["category_index"][row]),
                           "in_stock": int(out["in_stock"][row])}
    return items


def new_item_catalog(items: Dict[str, dict], trained: ItemCatalog, catalog_transform_graph_uri: str,
                     popularity_vocab_file: Optional[str]) -> ItemCatalog:
    """The ``ItemCatalog`` of the transformed items, in sorted id order, with the trained
    tag space (unknown tags dropped), unknown subclasses/categories in one bucket past
    the trained vocabulary, and the training interaction counts (0 for new items)."""
    tft_output = tft.TFTransformOutput(catalog_transform_graph_uri)
    ids = np.array(sorted(items))
    n = len(ids)
    if n < 2:
        raise ValueError(f"the new catalogue has {n} item(s); STARS needs at least 2")
    text = np.stack([items[i]["text_embedding"] for i in ids]).astype(np.float32)
    if text.shape[1] != trained.text_embedding.shape[1]:
        raise ValueError(f"the new catalogue's text embeddings are {text.shape[1]} wide, the "
                         f"trained model's {trained.text_embedding.shape[1]}: embed it with "
                         "the encoder the model was trained with")
    tags = np.zeros((n, trained.tag_multi_hot.shape[1]), np.float32)
    for row, item in enumerate(ids):
        known = [t for t in items[item]["tag_ids"] if 0 <= t < tags.shape[1]]
        tags[row, known] = 1.0

    def bucketed(name: str, vocabulary: str) -> np.ndarray:
        values = np.array([items[i][name] for i in ids], np.int32)
        return np.where(values < 0, tft_output.vocabulary_size_by_name(vocabulary), values)

    counts = (read_popularity_counts(popularity_vocab_file, list(ids))
              if popularity_vocab_file else np.zeros(n, np.float64))
    return ItemCatalog(ids, text, tags, bucketed("subclass_index", F.SUBCLASS_VOCAB),
                       bucketed("category_index", F.CATEGORY_VOCAB), counts,
                       np.array([items[i]["in_stock"] for i in ids], np.int32),
                       trained.tag_names, trained.category_names)


def catalog_changes(trained: ItemCatalog, new: ItemCatalog, atol: float = 1e-6) -> CatalogChanges:
    """Kept, new, removed and changed (text or known tags) items, by id."""
    trained_index = trained.index_of()
    old_index = np.array([trained_index.get(i, -1) for i in new.item_ids], np.int64)
    kept = old_index >= 0
    new_rows, old_rows = np.flatnonzero(kept), old_index[kept]
    changed = ~np.all(np.isclose(new.text_embedding[new_rows], trained.text_embedding[old_rows],
                                 rtol=0.0, atol=atol), axis=1)
    changed |= np.any(new.tag_multi_hot[new_rows] != trained.tag_multi_hot[old_rows], axis=1)
    new_ids = set(new.item_ids.tolist())
    return CatalogChanges(old_index=old_index,
                          new_items=new.item_ids[~kept].tolist(),
                          removed_items=sorted(i for i in trained.item_ids.tolist()
                                               if i not in new_ids),
                          changed_items=new.item_ids[new_rows[changed]].tolist(),
                          kept_items=new.item_ids[new_rows].tolist())


# ---- the item-indexed variables, remapped ------------------------------------------------
def remap_rows(values: np.ndarray, old_index: np.ndarray, fill=0.0, axis: int = 0) -> np.ndarray:
    """``values`` indexed by trained item along ``axis`` -> indexed by new item: kept items
    take their trained slice, new ones (``old_index`` -1) ``fill``."""
    taken = np.take(values, np.maximum(old_index, 0), axis=axis)
    shape = [1] * values.ndim
    shape[axis] = len(old_index)
    return np.where((old_index >= 0).reshape(shape), taken, np.asarray(fill, values.dtype))


def remap_successors(row_splits: np.ndarray, successors: np.ndarray, counts: np.ndarray,
                     old_index: np.ndarray) -> SuccessorTable:
    """The successor counts over the new item indices: pairs between kept items keep
    their count, pairs touching a removed item are dropped, new items have none."""
    from scipy import sparse
    num_old = len(row_splits) - 1
    to_new = np.full(num_old, -1, np.int64)
    kept = old_index >= 0
    to_new[old_index[kept]] = np.flatnonzero(kept)
    sources = to_new[np.repeat(np.arange(num_old), np.diff(row_splits))]
    targets = to_new[successors]
    keep = (sources >= 0) & (targets >= 0)
    matrix = sparse.csr_matrix((counts[keep], (sources[keep], targets[keep])),
                               shape=(len(old_index), len(old_index)))
    matrix.sort_indices()
    return SuccessorTable(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64),
                          matrix.data.astype(np.float32))


def cold_log_prior(trained_counts: np.ndarray, beta: float) -> float:
    """log p of an item with count 0 under the trained prior (``models.popularity``): what
    a never-seen item got in training, and so what a new item gets."""
    total = float(np.sum(np.asarray(trained_counts, np.float64))) + beta * len(trained_counts)
    return float(np.log(beta) - np.log(total)) if beta > 0 else float("-inf")


def trained_frame_keys(text: np.ndarray, trained_text: np.ndarray, dim: int) -> np.ndarray:
    """``models.semantic_match.semantic_keys`` of ``text``, centred on the TRAINED
    catalogue's mean and projected on its principal directions (module docstring)."""
    trained_text = np.asarray(trained_text, np.float64)
    mean = trained_text.mean(axis=0)
    centred = np.asarray(text, np.float64) - mean
    if 0 < dim < trained_text.shape[1]:
        centred = centred @ principal_directions(trained_text - mean, dim)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    blank = (np.linalg.norm(text, axis=1) == 0) | (norms[:, 0] < 1e-9)
    keys = np.where(norms > 1e-9, centred / np.maximum(norms, 1e-9), 0.0)
    keys[blank] = 0.0
    return keys.astype(np.float32)


def remapped_checkpoint(reader, config: ModelConfig, trained: ItemCatalog, new: ItemCatalog,
                        changes: CatalogChanges) -> Dict[str, np.ndarray]:
    """{checkpoint key: value} of the model for the new catalogue: the trained checkpoint
    without its optimizer state, item tables remapped (``ITEM_TABLES``)."""
    out, old_index = {}, changes.old_index
    successors = None
    if reader.has_tensor("model/successor_source/row_splits" + VALUE):
        successors = remap_successors(
            *(reader.get_tensor(f"model/successor_source/{name}{VALUE}")
              for name in ("row_splits", "successors", "counts")), old_index)
    for key in reader.get_variable_to_shape_map():
        if key == OBJECT_GRAPH or key.startswith("model/optimizer/"):
            continue
        name = key[:-len(VALUE)] if key.endswith(VALUE) else key
        value = reader.get_tensor(key)
        rule = ITEM_TABLES.get(name)
        if rule == "rows":
            value = remap_rows(value, old_index)
        elif rule == "columns":
            value = remap_rows(value, old_index, axis=1)
        elif rule == "prior":
            value = remap_rows(value, old_index, cold_log_prior(trained.counts, config.beta))
        elif rule == "successors":
            value = getattr(successors, name.rsplit("/", 1)[1])
        elif name == "model/items/text_embedding":
            value = (new.text_embedding if config.use_text
                     else np.zeros((len(new), value.shape[1]), value.dtype))
        elif name == "model/items/tags":
            value = new.tag_multi_hot
        elif name == "model/semantic_match/keys":
            value = trained_frame_keys(new.text_embedding, trained.text_embedding,
                                       config.semantic_match_dim)
            check_keys_frame(value, reader.get_tensor(key), changes, new)
        out[key] = np.asarray(value)
    return out


def check_keys_frame(keys: np.ndarray, trained_keys: np.ndarray, changes: CatalogChanges,
                     new: ItemCatalog, atol: float = 1e-4) -> None:
    """The kept, unchanged items' keys recomputed in the trained frame must be the trained
    keys: otherwise the frame was not reproduced (e.g. another LAPACK's eigenvector signs)
    and new items' keys would not be comparable with the kept ones."""
    changed = set(changes.changed_items)
    rows = [r for r, (item, o) in enumerate(zip(new.item_ids, changes.old_index))
            if o >= 0 and item not in changed]
    if rows and not np.allclose(keys[rows], trained_keys[changes.old_index[rows]], atol=atol):
        raise ValueError("the semantic-match keys recomputed in the trained catalogue's frame "
                         "differ from the trained keys of unchanged items")


def write_checkpoint(values: Dict[str, np.ndarray], object_graph, prefix: str) -> str:
    """A TF2 object-based checkpoint at ``prefix`` holding ``values`` under the trained
    checkpoint's object graph (which names keys, not shapes), so ``tf.train.Checkpoint``
    restores it into a model built for the new catalogue."""
    keys = [OBJECT_GRAPH] + sorted(values)
    tensors = [tf.constant(object_graph)] + [tf.constant(values[k]) for k in keys[1:]]
    tf.io.gfile.makedirs(os.path.dirname(prefix))
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=keys, shape_and_slices=[""] * len(keys),
                      tensors=tensors)  # one shard: <prefix>.index + .data-00000-of-00001
    return prefix


# ---- checks on the rebuilt model ---------------------------------------------------------
def variable_keys(root) -> Dict[str, tf.Variable]:
    """{checkpoint key: variable} of ``root`` as ``tf.train.Checkpoint(model=root)`` saves
    it: the first (breadth-first) path to each variable."""
    checkpoint = tf.train.Checkpoint(model=root)
    seen, out = {id(checkpoint)}, {}
    queue = [("", checkpoint)]
    while queue:
        path, obj = queue.pop(0)
        for name, child in tf.train.TrackableView(obj).children(obj).items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            child_path = f"{path}/{name}" if path else name
            if isinstance(child, tf.Variable):
                out[child_path + VALUE] = child
            else:
                queue.append((child_path, child))
    return out


def check_restored(model, values: Dict[str, np.ndarray]) -> None:
    """Every variable of the rebuilt model holds the remapped checkpoint's value: none was
    left at its initial value (not in the checkpoint) or has another shape."""
    for key, variable in variable_keys(model).items():
        if key not in values:
            raise ValueError(f"the refreshed model has {key}, which the trained checkpoint "
                             "does not: it would serve an untrained value")
        if tuple(variable.shape) != values[key].shape:
            raise ValueError(f"{key}: {tuple(variable.shape)} in the refreshed model, "
                             f"{values[key].shape} remapped from the checkpoint")
        if not np.array_equal(variable.numpy(), values[key]):
            raise ValueError(f"{key} was not restored from the remapped checkpoint")


# ---- the refresh -------------------------------------------------------------------------
def refresh_serving_models(trainer_model_dir: str, enriched_items_uri: str,
                           interaction_examples_uri: str, scann_dir: str, brute_force_dir: str,
                           top_k: int = 100,
                           recall_queries: int = index_quality.DEFAULT_QUERIES) -> dict:
    """Exports ScaNN and brute-force serving models of the trained model over the new
    catalogue (module docstring) and returns the report, also written as
    ``index_report.json`` beside each export directory.

    ``trainer_model_dir``: the StarsTrainer's serving model dir (as the IndexBuilder gets
    it); ``enriched_items_uri``: the ItemEnricher's output for the new catalogue (split
    ``catalog``); ``interaction_examples_uri``: an InteractionExampleGen ``examples``
    artifact (its ``eval`` split's requests are the recall queries).

    The report: ``items``, ``new_items``, ``removed_items``, ``changed_items``,
    ``kept_items`` (counts), ``embedding_dim``, ``scann_recall_at_k``, ``k``, ``queries``,
    ``query_source``, ``cold_start_items``, ``source`` ("catalog-refresh"),
    ``trained_model``, and ``changes`` (the new, removed and changed ids).
    """
    path = os.path.join(trainer_model_dir, MODEL_SUBDIR)
    with tf.io.gfile.GFile(os.path.join(path, CONFIG_FILE)) as f:
        config = ModelConfig.from_json(f.read())
    meta = ModelMeta.load(path)
    trained = load_catalog(meta)
    tft_output = tft.TFTransformOutput(meta.transform_graph_uri)
    new = new_item_catalog(transform_new_catalog(enriched_items_uri,
                                                 meta.catalog_transform_graph_uri),
                           trained, meta.catalog_transform_graph_uri,
                           tft_output.vocabulary_file_by_name(F.POPULARITY_VOCAB))
    changes = catalog_changes(trained, new)
    reader = tf.train.load_checkpoint(os.path.join(path, WEIGHTS))
    values = remapped_checkpoint(reader, config, trained, new, changes)
    entries = values.get("model/successor_source/successors" + VALUE)
    refreshed_meta = dataclasses.replace(
        meta, successor_entries=0 if entries is None else len(entries))
    work = tempfile.mkdtemp(prefix="stars-refresh-")
    try:
        refreshed = os.path.join(work, MODEL_SUBDIR)
        write_checkpoint(values, reader.get_tensor(OBJECT_GRAPH),
                         os.path.join(refreshed, WEIGHTS))
        tf.io.gfile.copy(os.path.join(path, CONFIG_FILE), os.path.join(refreshed, CONFIG_FILE),
                         overwrite=True)
        refreshed_meta.save(refreshed)
        model, config, meta, new, adapter = load_trained(work, new)
        numeric = [n[len(F.USER_NUMERIC_PREFIX):] for n in meta.user_numeric]
        categorical = [n[len(F.USER_CATEGORICAL_PREFIX):] for n in meta.user_vocab_sizes]
        modules = export_serving_models(model, adapter, tft_output, new.item_ids, top_k,
                                        {"scann": scann_dir, "brute_force": brute_force_dir},
                                        numeric, categorical)
        check_restored(model, values)  # after the export: every variable is built by now
    finally:
        shutil.rmtree(work, ignore_errors=True)
    quality = index_quality.index_recall(modules["scann"], modules["brute_force"],
                                         interaction_examples_uri, limit=recall_queries)
    report = {"items": len(new), **changes.summary(),
              "embedding_dim": int(modules["scann"].item_embedding_table.shape[1]),
              **quality, "cold_start_items": int((new.counts == 0).sum()),
              "source": "catalog-refresh", "trained_model": trainer_model_dir,
              "changes": {"new": changes.new_items, "removed": changes.removed_items,
                          "changed": changes.changed_items}}
    index_quality.write_report(report, (scann_dir, brute_force_dir))
    return report


__all__ = ["ITEM_TABLES", "CatalogChanges", "catalog_changes", "refresh_serving_models",
           "remap_rows", "remap_successors", "transform_new_catalog", "trained_frame_keys"]
