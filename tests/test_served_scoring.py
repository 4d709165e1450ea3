"""The StarsEvaluator's scoring as a Beam job (components.served_scoring), on the model the
pipeline pushed: two worker processes give the rows one gives."""
import csv
import glob
import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from components import served_scoring

pytestmark = pytest.mark.e2e


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
    assert one == two and len(one) > 10
    for row in one:
        assert set(row["top"]) == {"stars_ni", "stars_gi", "stars_rr", "last_blessed"}
        ni = row["top"]["stars_ni"]
        assert len(ni) == config.top_k and len(set(ni)) == len(ni) and min(ni) >= 0
        assert row["top"]["last_blessed"] == ni  # the same model as the baseline
        assert set(row["top"]["stars_rr"]) <= set(ni) | set(row["top"]["stars_gi"])
    assert [(r["user_id"], r["request_timestamp"]) for r in one] == sorted(
        (r["user_id"], r["request_timestamp"]) for r in one)
