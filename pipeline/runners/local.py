"""Runs the pipeline with TFX's LocalDagRunner (the embedded default)."""
from tfx import v1 as tfx

from pipeline.configs import PipelineConfig
from pipeline.pipeline import create_pipeline


def run(config: PipelineConfig) -> None:
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
