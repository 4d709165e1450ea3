"""The STARS TFX pipeline DSL: components and their wiring, nothing else.

Data half:

    CatalogExampleGen ──▶ ItemEnricher ──▶ StatisticsGen ─▶ SchemaGen ─▶ ExampleValidator
          │                     └──────────────────────────────────────▶ Transform (catalogue)
          ▼
    InteractionExampleGen ──▶ StatisticsGen ─▶ SchemaGen ─▶ ExampleValidator
                        └──────────────────────────────────▶ Transform (interactions)

The catalogue reaches the interaction ExampleGen as an input artifact (unknown
item ids are set aside there), never through ``custom_config``.
"""
from __future__ import annotations

from typing import List

import stars  # noqa: F401
from tfx import v1 as tfx
from tfx.proto import transform_pb2

from components.catalog_example_gen import CATALOG_SPLIT, CatalogExampleGen
from components.interaction_example_gen import InteractionExampleGen
from components.item_enricher import ItemEnricher
from pipeline.configs import PipelineConfig

INTERACTION_PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
CATALOG_PREPROCESSING_FN = "models.catalog_preprocessing.preprocessing_fn"


def data_components(config: PipelineConfig) -> List[tfx.dsl.components.base.base_node.BaseNode]:
    catalog_gen = CatalogExampleGen(data_dir=config.data_dir)
    enricher = ItemEnricher(items=catalog_gen.outputs["examples"], encoder=config.encoder,
                            tagger=config.tagger, tag_vocabulary=config.tag_vocabulary,
                            cache_dir=config.cache_dir)
    catalog_stats = tfx.components.StatisticsGen(
        examples=enricher.outputs["enriched_items"]).with_id("CatalogStatisticsGen")
    catalog_schema = tfx.components.SchemaGen(
        statistics=catalog_stats.outputs["statistics"]).with_id("CatalogSchemaGen")
    catalog_validator = tfx.components.ExampleValidator(
        statistics=catalog_stats.outputs["statistics"],
        schema=catalog_schema.outputs["schema"]).with_id("CatalogExampleValidator")
    catalog_transform = tfx.components.Transform(
        examples=enricher.outputs["enriched_items"], schema=catalog_schema.outputs["schema"],
        preprocessing_fn=CATALOG_PREPROCESSING_FN,
        splits_config=transform_pb2.SplitsConfig(analyze=[CATALOG_SPLIT],
                                                 transform=[CATALOG_SPLIT])
    ).with_id("CatalogTransform")

    interaction_gen = InteractionExampleGen(
        catalog=catalog_gen.outputs["examples"], data_dir=config.data_dir,
        split_mode=config.split_mode, eval_fraction=config.eval_fraction,
        max_history=config.max_history)
    splits = ["train", "eval"] + (["test"] if config.split_mode == "leave_one_out" else [])
    stats = tfx.components.StatisticsGen(examples=interaction_gen.outputs["examples"])
    schema = tfx.components.SchemaGen(statistics=stats.outputs["statistics"])
    validator = tfx.components.ExampleValidator(statistics=stats.outputs["statistics"],
                                                schema=schema.outputs["schema"])
    transform = tfx.components.Transform(
        examples=interaction_gen.outputs["examples"], schema=schema.outputs["schema"],
        preprocessing_fn=INTERACTION_PREPROCESSING_FN,
        splits_config=transform_pb2.SplitsConfig(analyze=["train"], transform=splits))
    return [catalog_gen, enricher, catalog_stats, catalog_schema, catalog_validator,
            catalog_transform, interaction_gen, stats, schema, validator, transform]


def create_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=data_components(config),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata),
        beam_pipeline_args=list(config.beam_pipeline_args),
        enable_cache=False,
    )
