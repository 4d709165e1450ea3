"""Beam job: staged events -> per-user sequence examples, one output per split.

Joins each event with the items its page showed (same-page negatives), groups
events by user, joins the user's static features and applies the split
(:mod:`stars.data.sequences`).  Runs on any Beam runner; the staging pass
(:mod:`stars.data.staging`) has already validated every row.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional

import apache_beam as beam

from stars import storage
from stars.data import sequences, tf_example


def _event(row: Mapping, page_items: tuple = ()) -> tuple:
    return row["user_id"], sequences.Event(
        timestamp=int(row["timestamp"]), sequence_number=int(row["sequence_number"]),
        item_id=row["item_id"], event_type=row["event_type"],
        session_id=row["session_id"] or "", page_id=row["page_id"] or "",
        region=row["region"] or "", page_items=page_items)


def _join_page(element) -> Iterable[tuple]:
    _, grouped = element
    pages = grouped["pages"]
    page_items = tuple(pages[0]["item_ids"]) if pages else ()
    for row in grouped["events"]:
        yield _event(row, page_items)


class _UserExamples(beam.DoFn):
    def __init__(self, config: sequences.SplitConfig, cut: Optional[int],
                 feature_kinds: Mapping):
        self._config, self._cut, self._kinds = config, cut, dict(feature_kinds)

    def process(self, element):
        user_id, grouped = element
        events = grouped["events"]  # empty for a user with features but no events
        profile = grouped["user"][0] if grouped["user"] else None
        if profile is not None:
            profile = {k: v for k, v in profile.items()
                       if not (isinstance(v, float) and math.isnan(v))}
        for split, features in sequences.user_examples(
                user_id, events, self._config, self._cut, profile, self._kinds):
            yield beam.pvalue.TaggedOutput(
                split, tf_example.to_example(features).SerializeToString())


def build_sequences(pipeline: beam.Pipeline, staging_dir: str, examples_uri: str,
                    config: sequences.SplitConfig, cut: Optional[int],
                    feature_kinds: Mapping) -> None:
    def staged(table):
        return storage.join(staging_dir, table, "*.parquet")

    def has(table):
        return storage.isdir(storage.join(staging_dir, table))

    events = pipeline | "ReadEvents" >> beam.io.ReadFromParquet(staged("interactions"))
    if has("impressions"):
        keyed = events | "KeyByPage" >> beam.Map(lambda r: (r["page_id"] or "", r))
        with_page = keyed | "HasPage" >> beam.Filter(lambda kv: kv[0] != "")
        without = (keyed | "NoPage" >> beam.Filter(lambda kv: kv[0] == "")
                   | "EventOnly" >> beam.Map(lambda kv: _event(kv[1])))
        pages = (pipeline | "ReadPages" >> beam.io.ReadFromParquet(staged("impressions"))
                 | "PageKey" >> beam.Map(lambda r: (r["page_id"], r)))
        joined = ({"events": with_page, "pages": pages} | "JoinPages" >> beam.CoGroupByKey()
                  | "AttachPage" >> beam.FlatMap(_join_page))
        by_user = (joined, without) | "AllEvents" >> beam.Flatten()
    else:
        by_user = events | "EventByUser" >> beam.Map(_event)
    if has("users"):
        users = (pipeline | "ReadUsers" >> beam.io.ReadFromParquet(staged("users"))
                 | "UserKey" >> beam.Map(lambda r: (r["user_id"], r)))
    else:
        users = pipeline | "NoUsers" >> beam.Create([])
    outputs = ({"events": by_user, "user": users} | "JoinUsers" >> beam.CoGroupByKey()
               | "Examples" >> beam.ParDo(_UserExamples(config, cut, feature_kinds))
               .with_outputs(*config.split_names))
    for split in config.split_names:
        _ = (outputs[split] | f"Write{split}" >> beam.io.WriteToTFRecord(
            storage.join(tf_example.split_dir(examples_uri, split), "data_tfrecord"),
            file_name_suffix=".gz"))
