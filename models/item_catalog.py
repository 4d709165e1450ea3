"""The item catalogue as the model sees it: per-item arrays in item-index order.

Built from the catalogue Transform's output (whole catalogue: cold-start items
included) and the interaction Transform's popularity counts.  The model holds
these arrays as constants; the item index is the catalogue Transform's item
vocabulary, so the model, the ScaNN index and the serving lookups agree.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from models import features as F
from models.popularity import read_popularity_counts


@dataclasses.dataclass
class ItemCatalog:
    item_ids: np.ndarray        # [I] str, index order
    text_embedding: np.ndarray  # [I, d_e] float32, frozen e_i
    tag_multi_hot: np.ndarray   # [I, V] float32, t_i
    subclass: np.ndarray        # [I] int32
    category: np.ndarray        # [I] int32
    counts: np.ndarray          # [I] float32 training interaction counts c_j
    in_stock: np.ndarray        # [I] int32
    tag_names: tuple = ()
    category_names: tuple = ()

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def num_subclasses(self) -> int:
        return int(self.subclass.max()) + 1 if len(self.subclass) else 0

    @property
    def num_categories(self) -> int:
        return int(self.category.max()) + 1 if len(self.category) else 0

    def index_of(self) -> dict:
        return {item: i for i, item in enumerate(self.item_ids)}


def _transformed_catalog_records(transformed_uri: str):
    # tf.io.gfile: the artefact may be on object storage, where glob.glob finds nothing
    pattern = os.path.join(transformed_uri, "Split-catalog", "*.gz")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no transformed catalogue examples match {pattern}")
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        yield tf.train.Example.FromString(record).features.feature


def load_item_catalog(catalog_transformed_uri: str, catalog_transform_graph_uri: str,
                      popularity_vocab_file: Optional[str]) -> ItemCatalog:
    import tensorflow_transform as tft
    tft_output = tft.TFTransformOutput(catalog_transform_graph_uri)
    item_ids = np.array([v.decode() for v in tft_output.vocabulary_by_name(F.ITEM_VOCAB)])
    tag_names = tuple(v.decode() for v in tft_output.vocabulary_by_name(F.TAG_VOCAB))
    category_names = tuple(v.decode() for v in tft_output.vocabulary_by_name(F.CATEGORY_VOCAB))
    n = len(item_ids)
    text, tags = None, np.zeros((n, max(1, len(tag_names))), np.float32)
    subclass, category = np.zeros(n, np.int32), np.zeros(n, np.int32)
    in_stock = np.ones(n, np.int32)
    for feature in _transformed_catalog_records(catalog_transformed_uri):
        i = feature["item_index"].int64_list.value[0]
        vector = np.asarray(feature["text_embedding"].float_list.value, np.float32)
        if text is None:
            text = np.zeros((n, len(vector)), np.float32)
        text[i] = vector
        for t in feature["tag_ids"].int64_list.value:
            if 0 <= t < tags.shape[1]:
                tags[i, t] = 1.0
        subclass[i] = feature["subclass_index"].int64_list.value[0]
        category[i] = feature["category_index"].int64_list.value[0]
        in_stock[i] = feature["in_stock"].int64_list.value[0]
    counts = (read_popularity_counts(popularity_vocab_file, item_ids)
              if popularity_vocab_file else np.zeros(n, np.float32))
    return ItemCatalog(item_ids, text, tags, subclass, category, counts, in_stock,
                       tag_names, category_names)
