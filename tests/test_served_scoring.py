"""The StarsEvaluator's scoring as a Beam job (components.served_scoring), on the model the
pipeline pushed: two worker processes give the rows one gives; the rows read back in
columns."""
import csv
import glob
import gzip
import json
import os

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from components import served_scoring


def test_rows_are_read_into_sorted_columns(tmp_path):
    """Rows from several workers' files, in any order, come back as sorted columns."""
    rows = [{"user_id": u, "request_timestamp": t, "targets": [f"p{t}"],
             "candidate_set_size": t % 7,
             "top": {"stars_ni": [t, t + 1], "stars_gi": [int(u == "b"), 5]}}
            for u, t in (("b", 30), ("a", 20), ("b", 10), ("a", 40))]
    for n, part in enumerate((rows[:1], rows[1:])):
        with gzip.open(tmp_path / f"rows-0000{n}-of-00002.json.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)
    got = served_scoring.read_rows(str(tmp_path))
    assert len(got) == 4 and got.user_id == ["a", "a", "b", "b"]
    assert got.request_timestamp.tolist() == [20, 40, 10, 30]
    assert got.targets == [["p20"], ["p40"], ["p10"], ["p30"]]
    assert got.candidate_set_size.tolist() == [6, 5, 3, 2]
    assert got.top["stars_ni"].dtype == np.int32
    assert got.top["stars_ni"].tolist() == [[20, 21], [40, 41], [10, 11], [30, 31]]
    assert got.top["stars_gi"].tolist() == [[0, 5], [0, 5], [1, 5], [1, 5]]
    assert len(served_scoring.read_rows(str(tmp_path / "none"))) == 0


@pytest.mark.e2e
def _eval_examples(config) -> str:
    runs = glob.glob(os.path.join(config.pipeline_root, "InteractionExampleGen", "examples", "*"))
    return max(runs, key=lambda path: int(os.path.basename(path)))


def test_two_beam_workers_score_as_one(pushed_model, tmp_path, monkeypatch):
    config, model_base = pushed_model
    # A worker that crashes in native code prints its Python stacks (inherited by the
    # spawned child and its Beam worker processes).
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")
    serving_dir = os.path.join(model_base, max(os.listdir(model_base), key=int))
    with open(os.path.join(config.data_dir, "items.csv"), newline="") as f:
        item_ids = sorted(row["item_id"] for row in csv.DictReader(f))
    args = (serving_dir, serving_dir, _eval_examples(config), "eval", item_ids, 200)
    one = served_scoring.score(*args, str(tmp_path / "one"))
    # The options as the StarsEvaluator hands them on: its Beam pipeline's non-defaults.
    options = PipelineOptions(["--direct_running_mode=multi_processing",
                               "--direct_num_workers=2"]).get_all_options(drop_default=True)
    two = served_scoring.score(*args, str(tmp_path / "two"), options)
    assert len(one) == len(two) > 10
    assert (one.user_id, one.targets) == (two.user_id, two.targets)
    np.testing.assert_array_equal(one.request_timestamp, two.request_timestamp)
    np.testing.assert_array_equal(one.candidate_set_size, two.candidate_set_size)
    assert set(one.top) == set(two.top) == {"stars_ni", "stars_gi", "stars_rr", "last_blessed"}
    for name, top in one.top.items():
        np.testing.assert_array_equal(top, two.top[name])
    ni = one.top["stars_ni"]
    assert ni.shape == (len(one), config.top_k) and ni.min() >= 0
    assert all(len(set(row)) == config.top_k for row in ni)
    np.testing.assert_array_equal(one.top["last_blessed"], ni)  # the same model as baseline
    for row, gi, rr in zip(ni, one.top["stars_gi"], one.top["stars_rr"]):
        assert set(rr) <= set(row) | set(gi)
    keys = list(zip(one.user_id, one.request_timestamp.tolist()))
    assert keys == sorted(keys)
