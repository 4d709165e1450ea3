"""Feature dicts <-> ``tf.train.Example``, and reading/writing TFX Examples splits.

Feature kinds are fixed by name so that an empty list still gets the right
type (a user with no age, a page with no impressions).
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, Mapping

import tensorflow as tf

_INT_FEATURES = {"timestamp", "page_item_count", "history_length", "target_timestamp",
                 "stock"}
_FLOAT_FEATURES = {"price", "embedding", "text_embedding"}


def feature_kind(name: str) -> str:
    if name in _INT_FEATURES:
        return "int"
    if name in _FLOAT_FEATURES or name.startswith("user_num_"):
        return "float"
    return "bytes"


def to_example(features: Mapping[str, list]) -> tf.train.Example:
    example = tf.train.Example()
    fmap = example.features.feature
    for name, values in features.items():
        kind = feature_kind(name)
        if kind == "int":
            fmap[name].int64_list.value.extend(int(v) for v in values)
        elif kind == "float":
            fmap[name].float_list.value.extend(float(v) for v in values)
        else:
            fmap[name].bytes_list.value.extend(
                v if isinstance(v, bytes) else str(v).encode() for v in values)
    return example


def from_example(example: tf.train.Example) -> dict:
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = list(getattr(feature, kind).value) if kind else []
    return out


def split_dir(examples_uri: str, split: str) -> str:
    """TFX's layout for one split of an Examples artifact."""
    return os.path.join(examples_uri, f"Split-{split}")


def write_split(examples_uri: str, split: str, examples: Iterable[tf.train.Example],
                shard: str = "data_tfrecord-00000-of-00001.gz") -> int:
    directory = split_dir(examples_uri, split)
    tf.io.gfile.makedirs(directory)
    count = 0
    with tf.io.TFRecordWriter(os.path.join(directory, shard), options="GZIP") as writer:
        for example in examples:
            writer.write(example.SerializeToString())
            count += 1
    return count


def read_split(examples_uri: str, split: str) -> Iterator[tf.train.Example]:
    pattern = os.path.join(split_dir(examples_uri, split), "*.gz")
    files = sorted(tf.io.gfile.glob(pattern))
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        yield tf.train.Example.FromString(record)


def count_split(examples_uri: str, split: str) -> int:
    return sum(1 for _ in read_split(examples_uri, split))
