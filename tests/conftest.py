"""Test set-up: the process is configured (Keras 2 for TFRS) before any test module loads."""

import json
import os

import pytest

from stars.environment import configure


def pytest_configure(config):
    """The tests' entry point: runs before collection imports a test module."""
    configure()


@pytest.fixture(scope="session")
def pushed_model(tmp_path_factory):
    """The whole pipeline, once per test session, on tiny synthetic data: returns
    ``(config, model_base_path)`` where ``<model_base_path>/<version>/`` is the pushed
    ScaNN serving model (TF Serving layout).  For e2e tests of serving code."""
    from pipeline.configs import PipelineConfig
    from pipeline.runners import local
    from stars.data import synth
    base = tmp_path_factory.mktemp("pushed_model")
    synth.generate(base / "data", "tiny", seed=11)
    config = PipelineConfig(
        data_dir=str(base / "data"), pipeline_root=str(base / "root"), encoder="hashing:64",
        model_preset="tiny", model_overrides=json.dumps({"epochs": 2}), top_k=50,
        min_recall_vs_popularity=0.0)
    local.run(config)
    model_base = os.path.join(config.serving_base, config.model_name)
    assert os.listdir(model_base), "the pipeline pushed nothing"
    return config, model_base
