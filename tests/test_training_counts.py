"""The Transform's Beam counts of the training split (models.item_trend_counts,
models.successor_counts): the tables the Trainer reads equal the numpy references (the
trend over each user's distinct events, the successors over each example's sequence), and
the Beam jobs give the same files under the DirectRunner with two worker processes as with
one."""
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions

from models import item_trend_counts as C
from models import successor_counts as S
from models.item_trend import trend_table
from models.successor_source import SuccessorTable
from stars.data.sequences import Event, SplitConfig, user_examples

DAY = 86400
ITEMS = [f"item {i}" for i in range(12)]  # ids with a space: the file keeps the whole id
SPEC = {name: tf.io.VarLenFeature(dtype) for name, dtype in (
    ("user_id", tf.string), ("item_id", tf.string), ("timestamp", tf.int64),
    ("target_item_id", tf.string), ("target_timestamp", tf.int64))}


def preprocessing_fn(inputs):
    C.analyze(inputs)
    S.analyze(inputs)
    return {"target_timestamp": inputs["target_timestamp"]}


def _users(seed: int = 0, num_users: int = 40):
    """Each user's events: some repeat an (item, time) pair, some users are long enough
    to be cut into overlapping training windows."""
    rng = np.random.default_rng(seed)
    users = {}
    for u in range(num_users):
        n = int(rng.integers(2, 30))
        times = np.sort(1_700_000_000 + rng.integers(0, 120 * DAY, n))
        items = rng.integers(0, len(ITEMS) - 2, n)  # the last two items: never bought
        if n > 4:
            times[3], items[3] = times[2], items[2]   # a repeated event
        users[f"u{u}"] = [Event(int(t), i, ITEMS[j], "view", "", "", "")
                          for i, (t, j) in enumerate(zip(times, items))]
    return users


def _training_examples(users, max_history: int = 8):
    """The InteractionExampleGen's training examples (windows that share their boundary
    event), as the Transform reads them."""
    config = SplitConfig(mode="leave_one_out", max_history=max_history)
    rows = []
    for user, events in users.items():
        for split, f in user_examples(user, events, config):
            if split == "train":
                rows.append({k: f[k] for k in SPEC})
    return rows


def _analyze(rows, work, beam_args=()):
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as pipeline:
        with tft_beam.Context(temp_dir=os.path.join(work, "tmp")):
            transform_fn = ((pipeline | beam.Create(rows),
                             tft.DatasetMetadata.from_feature_spec(SPEC))
                            | tft_beam.AnalyzeDataset(preprocessing_fn))
            _ = transform_fn | tft_beam.WriteTransformFn(os.path.join(work, "out"))
    output = tft.TFTransformOutput(os.path.join(work, "out"))
    return output.vocabulary_file_by_name(C.ASSET), output.vocabulary_file_by_name(S.ASSET)


def test_the_table_counts_each_distinct_training_event_once(tmp_path):
    users = _users()
    rows = _training_examples(users)
    assert len(rows) > len(users)  # windows overlap: events repeat across examples
    path, _ = _analyze(rows, str(tmp_path))
    index = {item: i for i, item in enumerate(ITEMS)}
    got = C.read_trend(path, index)
    # The reference: every user's training events (all but the last two), each distinct
    # (user, item, time) once.
    distinct = {(user, e.item_id, e.timestamp) for user, events in users.items()
                for e in (events[:-2] if len(events) >= 3 else events)}
    items = np.array([index[item] for _, item, _ in sorted(distinct)])
    times = np.array([t for _, _, t in sorted(distinct)])
    want = trend_table(items, times, len(ITEMS))
    assert (got.origin, got.period_s, got.window) == (want.origin, want.period_s, want.window)
    np.testing.assert_allclose(got.rows, want.rows, rtol=1e-6)
    assert got.rows[-1].any() and not got.rows[:, -2:].any()


def test_items_the_catalogue_lost_are_skipped_and_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "counts"
    path.write_text("origin 100 period 10\n0 2 a b\n1 3 gone\n3 1 a b\n")
    table = C.read_trend(str(path), {"a b": 0, "c": 1}, window=2)
    assert table.origin == 100 and table.rows.shape == (5, 2)
    np.testing.assert_allclose(table.rows[:, 0], np.log1p([0, 2, 2, 0, 1]))
    assert not table.rows[:, 1].any()
    path.write_text("count item\n3 a\n")
    with pytest.raises(ValueError, match="not an item trend counts file"):
        C.read_trend(str(path), {"a": 0})
    with pytest.raises(ValueError, match="not a successor counts file"):
        S.read_successors(str(path), {"a": 0})


def test_the_successor_table_counts_each_example_sequence(tmp_path):
    rows = _training_examples(_users(seed=2))
    _, path = _analyze(rows, str(tmp_path))
    index = {item: i for i, item in enumerate(ITEMS)}
    got = S.read_successors(path, index)
    sequences = [[index[i.decode()] for i in row["item_id"] + row["target_item_id"][:1]]
                 for row in rows]
    want = SuccessorTable.from_sequences(sequences, len(ITEMS))
    np.testing.assert_array_equal(got.row_splits, want.row_splits)
    np.testing.assert_array_equal(got.successors, want.successors)
    np.testing.assert_allclose(got.counts, want.counts, rtol=1e-6)
    assert len(got.successors) > 20
    # A catalogue without an item drops its pairs, both ways.
    smaller = S.read_successors(path, {item: i for i, item in enumerate(ITEMS[1:])})
    assert smaller.num_items == len(ITEMS) - 1
    assert len(smaller.successors) < len(got.successors)


def test_no_training_event_gives_empty_tables(tmp_path):
    trend, successors = _analyze([{"user_id": [b"u"], "item_id": [], "timestamp": [],
                                   "target_item_id": [], "target_timestamp": []}],
                                 str(tmp_path))
    table = C.read_trend(trend, {"a": 0, "b": 1})
    assert table.rows.shape == (1, 2) and not table.rows.any()
    assert not len(S.read_successors(successors, {"a": 0, "b": 1}).successors)


@pytest.mark.e2e
def test_two_beam_workers_count_as_one(tmp_path):
    rows = _training_examples(_users(seed=1, num_users=120))
    one = _analyze(rows, str(tmp_path / "one"))
    two = _analyze(rows, str(tmp_path / "two"), ["--direct_running_mode=multi_processing",
                                                 "--direct_num_workers=2"])
    for first, second in zip(one, two):
        with open(first) as a, open(second) as b:
            text = a.read()
            assert text == b.read() and len(text.splitlines()) > 20
