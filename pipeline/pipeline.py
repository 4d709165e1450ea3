"""The STARS TFX pipeline DSL: components and their wiring, nothing else.

Data half:

    CatalogExampleGen ──▶ ItemEnricher ──▶ StatisticsGen ─▶ SchemaGen ─▶ ExampleValidator
          │                     └──────────────────────────────────────▶ Transform (catalogue)
          ▼
    InteractionExampleGen ──▶ StatisticsGen ─▶ SchemaGen ─▶ ExampleValidator
                        └──────────────────────────────────▶ Transform (interactions)

Model half (compiled with ``config.vertex_training``, the Trainer's step runs the training as a
Vertex AI Training job on GPU / multi-machine worker pools):

    Transform + CatalogTransform ──▶ StarsTrainer ──▶ IndexBuilder (ScaNN + brute force)
    latest blessed model (Resolver) ─┐                     │
    IndexBuilder.serving_model ──────┴──▶ StarsEvaluator (TFMA) ──▶ Pusher (if blessed)

Release (``stars.release``; nothing happens for a model that was not pushed):

    Pusher ──▶ UserEmbeddingGen ──▶ CatalogIndexer ──▶ ReleasePublisher
    (temp + rename)  (uncommitted)    (snapshot, staged ES)  (commit, alias, manifest)

The catalogue reaches the interaction ExampleGen, the Trainer and the
IndexBuilder as input artifacts (unknown item ids are set aside at the
ExampleGen), never through ``custom_config``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import List

from tfx import v1 as tfx
from tfx.proto import transform_pb2

from components.catalog_example_gen import CATALOG_SPLIT, CatalogExampleGen
from components.catalog_indexer import CatalogIndexer
from components.catalog_refresher import CatalogRefresher
from components.index_builder import IndexBuilder
from components.interaction_example_gen import InteractionExampleGen
from components.item_enricher import ItemEnricher
from components.model_pusher import ModelPusher
from components.release_publisher import ReleasePublisher
from components.stars_evaluator import StarsEvaluator
from components.stars_trainer import StarsTrainer, StarsVertexTrainer, vertex_custom_config
from components.user_embedding_gen import UserEmbeddingGen
from pipeline.configs import PipelineConfig

INTERACTION_PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
CATALOG_PREPROCESSING_FN = "models.catalog_preprocessing.preprocessing_fn"


def source_components(config: PipelineConfig) -> tuple:
    """The catalogue, enriched, and the interactions as Examples: what both the training
    pipeline and the catalogue refresh start from."""
    catalog_gen = CatalogExampleGen(data_dir=config.data_dir,
                                    data_fingerprint=config.catalog_fingerprint)
    enricher = ItemEnricher(items=catalog_gen.outputs["examples"], encoder=config.encoder,
                            tagger=config.tagger, tag_vocabulary=config.tag_vocabulary,
                            cache_dir=config.cache_dir)
    interaction_gen = InteractionExampleGen(
        catalog=catalog_gen.outputs["examples"], data_dir=config.data_dir,
        split_mode=config.split_mode, eval_fraction=config.eval_fraction,
        max_history=config.max_history, data_fingerprint=config.interactions_fingerprint)
    return catalog_gen, enricher, interaction_gen


# TFX's Transform also computes statistics of its input and output (TFDV, a second and third
# pass over the data) unless told not to.  StatisticsGen and ExampleValidator already cover
# the raw examples, and nothing reads the transformed features' statistics: off (BUILD_NOTES,
# "Transform without its own statistics").
TRANSFORM_STATISTICS = False


def data_components(config: PipelineConfig) -> List[tfx.dsl.components.base.base_node.BaseNode]:
    catalog_gen, enricher, interaction_gen = source_components(config)
    catalog_stats = tfx.components.StatisticsGen(
        examples=enricher.outputs["enriched_items"]).with_id("CatalogStatisticsGen")
    catalog_schema = tfx.components.SchemaGen(
        statistics=catalog_stats.outputs["statistics"]).with_id("CatalogSchemaGen")
    catalog_validator = tfx.components.ExampleValidator(
        statistics=catalog_stats.outputs["statistics"],
        schema=catalog_schema.outputs["schema"]).with_id("CatalogExampleValidator")
    catalog_transform = tfx.components.Transform(
        examples=enricher.outputs["enriched_items"], schema=catalog_schema.outputs["schema"],
        preprocessing_fn=CATALOG_PREPROCESSING_FN, disable_statistics=not TRANSFORM_STATISTICS,
        splits_config=transform_pb2.SplitsConfig(analyze=[CATALOG_SPLIT],
                                                 transform=[CATALOG_SPLIT])
    ).with_id("CatalogTransform")

    splits = ["train", "eval"] + (["test"] if config.split_mode == "leave_one_out" else [])
    stats = tfx.components.StatisticsGen(examples=interaction_gen.outputs["examples"])
    schema = tfx.components.SchemaGen(statistics=stats.outputs["statistics"])
    validator = tfx.components.ExampleValidator(statistics=stats.outputs["statistics"],
                                                schema=schema.outputs["schema"])
    transform = tfx.components.Transform(
        examples=interaction_gen.outputs["examples"], schema=schema.outputs["schema"],
        preprocessing_fn=INTERACTION_PREPROCESSING_FN, disable_statistics=not TRANSFORM_STATISTICS,
        splits_config=transform_pb2.SplitsConfig(analyze=["train"], transform=splits))
    return [catalog_gen, enricher, catalog_stats, catalog_schema, catalog_validator,
            catalog_transform, interaction_gen, stats, schema, validator, transform]


def model_components(config: PipelineConfig, data: list) -> list:
    by_id = {c.id: c for c in data}
    catalog_gen, interaction_gen = by_id["CatalogExampleGen"], by_id["InteractionExampleGen"]
    transform, catalog_transform = by_id["Transform"], by_id["CatalogTransform"]
    custom_config = {"preset": config.model_preset, "variant": config.model_variant,
                     "overrides": json.loads(config.model_overrides or "{}")}
    trainer_class = StarsTrainer
    if config.vertex_training is not None:  # the step starts a Vertex AI Training job
        trainer_class = StarsVertexTrainer
        custom_config.update(vertex_custom_config(**dataclasses.asdict(config.vertex_training)))
    trainer = trainer_class(
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=by_id["SchemaGen"].outputs["schema"],
        catalog_examples=catalog_transform.outputs["transformed_examples"],
        catalog_transform_graph=catalog_transform.outputs["transform_graph"],
        custom_config=custom_config).with_id("StarsTrainer")
    index_builder = IndexBuilder(
        model=trainer.outputs["model"], transform_graph=transform.outputs["transform_graph"],
        catalog_examples=catalog_transform.outputs["transformed_examples"],
        catalog_transform_graph=catalog_transform.outputs["transform_graph"],
        interaction_examples=interaction_gen.outputs["examples"],
        top_k=config.top_k)
    served = index_builder.outputs["serving_model" if config.serving_index == "scann"
                                   else "brute_force_model"]
    last_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("LatestBlessedModelResolver")
    evaluator = StarsEvaluator(
        model=served, examples=interaction_gen.outputs["examples"],
        catalog=catalog_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        baseline_model=last_blessed.outputs["model"], max_history=config.max_history,
        min_recall_vs_popularity=config.min_recall_vs_popularity,
        max_regression=config.max_regression, min_index_recall=config.min_index_recall)
    return [trainer, index_builder, last_blessed, evaluator,
            *release_components(config, served, evaluator.outputs["blessing"],
                                catalog_gen.outputs["examples"], source="pipeline")]


def release_components(config: PipelineConfig, served, blessing, catalog,
                       source: str) -> list:
    """Pusher -> UserEmbeddingGen -> CatalogIndexer -> ReleasePublisher: the blessed
    model, its users' embeddings and its catalogue, published as one release."""
    pusher = ModelPusher(
        model=served, model_blessing=blessing,
        base_directory=os.path.join(config.serving_base, config.model_name),
        release_dir=config.releases).with_id("Pusher")
    user_embeddings = UserEmbeddingGen(
        pushed_model=pusher.outputs["pushed_model"], data_dir=config.data_dir,
        store=config.store, max_history=config.max_history)
    catalog_index = CatalogIndexer(
        catalog=catalog, pushed_model=pusher.outputs["pushed_model"],
        data_dir=config.data_dir, es_hosts=config.es_hosts, es_alias=config.es_alias)
    publisher = ReleasePublisher(
        served_model=served, pushed_model=pusher.outputs["pushed_model"],
        user_embeddings=user_embeddings.outputs["user_embeddings"],
        catalog_index=catalog_index.outputs["catalog_index"], release_dir=config.releases,
        model_name=config.model_name, source=source,
        min_index_recall=config.min_index_recall, es_hosts=config.es_hosts)
    return [pusher, user_embeddings, catalog_index, publisher]


def refresh_components(config: PipelineConfig) -> list:
    """The catalogue refresh (``stars catalog refresh``): today's catalogue, enriched
    (the enrichment cache re-embeds only new or changed items), over the live release's
    trained weights, gated on index recall, published as a new release."""
    catalog_gen, enricher, interaction_gen = source_components(config)
    refresher = CatalogRefresher(
        enriched_items=enricher.outputs["enriched_items"],
        interaction_examples=interaction_gen.outputs["examples"], release_dir=config.releases,
        top_k=config.top_k, serving_index=config.serving_index,
        min_index_recall=config.min_index_recall)
    served = refresher.outputs["serving_model" if config.serving_index == "scann"
                               else "brute_force_model"]
    return [catalog_gen, enricher, interaction_gen, refresher,
            *release_components(config, served, refresher.outputs["blessing"],
                                catalog_gen.outputs["examples"], source="catalog-refresh")]


def create_refresh_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    """The refresh as its own pipeline (own name, same root and MLMD), for the local
    runner and for Vertex / Kubeflow schedules; never cached: it exists to see changes."""
    return tfx.dsl.Pipeline(
        pipeline_name=f"{config.pipeline_name}-catalog-refresh",
        pipeline_root=config.pipeline_root,
        components=refresh_components(config),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata),
        beam_pipeline_args=list(config.beam_pipeline_args),
        enable_cache=False,
    )


def components(config: PipelineConfig) -> list:
    data = data_components(config)
    return data + (model_components(config, data) if config.train_model else [])


def create_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    """The pipeline; cached only when ``config`` carries both data fingerprints.

    TFX reuses an execution when component, exec properties and input artifacts match.
    The ExampleGens' exec properties name a directory, so without the fingerprints
    (``stars.data.fingerprint``, by content) an edited file would be a cache hit: then
    caching stays off whatever ``config.enable_cache`` says.  With them, the key of each
    ExampleGen changes exactly when its tables do, and TFX invalidates everything
    downstream because its input artifacts are new.  A catalogue edit therefore reruns
    the whole data half (the InteractionExampleGen takes the catalogue as an input);
    an edit to the event logs or users leaves the catalogue half cached.

    The model half (Trainer, IndexBuilder, Evaluator, Pusher) should run every time,
    and ``pipeline.runners.local`` turns its caching off in the compiled pipeline
    (TFX 1.16's DSL has only this pipeline-wide switch):

    * the cache key holds no code: a cached Trainer would keep serving a model from
      before an edit to ``models/`` -- the code a model developer changes most;
    * a rerun on unchanged data is how one retrains and re-evaluates; with a cached
      Trainer the Evaluator would compare the model with itself (the last blessed
      model is that same model) and the Pusher push it again as a new version.
      ``tests/test_pipeline_e2e.py`` relies on the second run's model being new.

    The data half's code is not in the key either: after an edit to the data code
    (``stars/data``, ``stars/enrichment``, the ExampleGens, the preprocessing_fns) run
    with ``enable_cache=False``.  Vertex/Kubeflow: ``pipeline.runners.vertex`` compiles
    without fingerprints -- one computed at compile time would be stale for a scheduled
    run over new data -- so caching is off there.
    """
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components(config),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata),
        beam_pipeline_args=list(config.beam_pipeline_args),
        enable_cache=(config.enable_cache and bool(config.catalog_fingerprint)
                      and bool(config.interactions_fingerprint)),
    )
