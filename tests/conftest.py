"""Test set-up: the process is configured (Keras 2 for TFRS) before any test module loads."""

import json
import os

import pytest

from stars.environment import configure


def pytest_configure(config):
    """The tests' entry point: runs before collection imports a test module."""
    configure()


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The whole pipeline, once per test session, on tiny synthetic data, with every model
    option the product can serve on (item trend, semantic match, successor source): returns
    its ``PipelineConfig``.  Tests read its root and never write into it; a test that runs
    the pipeline again works on a copy (``tests.fixtures.copy_of_run``).  One run shared by
    the e2e tests keeps CI within its time budget (a tiny run takes about two minutes)."""
    from pipeline.configs import PipelineConfig
    from pipeline.runners import local
    from stars.data import synth
    base = tmp_path_factory.mktemp("pipeline_run")
    synth.generate(base / "data", "tiny", seed=11)
    config = PipelineConfig(
        data_dir=str(base / "data"), pipeline_root=str(base / "root"), encoder="hashing:64",
        model_preset="tiny", top_k=50,
        model_overrides=json.dumps({"epochs": 2, "item_trend": True, "semantic_match": True,
                                    "semantic_match_dim": 16,  # keys: 16 of the text's 64
                                    "successor_source": True}),
        min_recall_vs_popularity=0.0, max_regression=1.0)
    local.run(config)
    return config


@pytest.fixture(scope="session")
def pushed_model(pipeline_run):
    """``(config, model_base_path)`` of the session's pipeline run, where
    ``<model_base_path>/<version>/`` is the pushed ScaNN serving model (TF Serving layout).
    For e2e tests of serving code."""
    model_base = os.path.join(pipeline_run.serving_base, pipeline_run.model_name)
    assert os.listdir(model_base), "the pipeline pushed nothing"
    return pipeline_run, model_base

