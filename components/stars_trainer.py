"""StarsTrainer: the TFX Trainer with the catalogue as component inputs.

The standard Trainer only takes examples, transform graph, schema, base model
and hyperparameters.  STARS also needs the WHOLE catalogue (item tokens are
built from every item's text embedding and tags, cold-start items included),
so this component adds two input channels, ``catalog_examples`` (the catalogue
Transform's transformed items) and ``catalog_transform_graph``; its executor
hands their URIs to ``run_fn`` in ``fn_args.custom_config``.  Lineage in MLMD
records which catalogue a model was trained on.

``StarsVertexTrainer`` is the same component whose step sends the training to Vertex AI
Training instead of running it (TFX's ``google_cloud_ai_platform`` Trainer executor, given
``vertex_custom_config``): the custom job runs ``StarsTrainerExecutor`` in the pipeline
image on the worker pools asked for, and ``run_fn`` trains under the strategy the job's
machines call for (``models.distribution``).
"""
from __future__ import annotations

import json
from typing import Optional

from tfx import v1 as tfx
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_executor
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils, channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ComponentSpec

CATALOG_EXAMPLES = "catalog_examples"
CATALOG_TRANSFORM_GRAPH = "catalog_transform_graph"
S = standard_component_specs


class StarsTrainerSpec(ComponentSpec):
    PARAMETERS = dict(S.TrainerSpec.PARAMETERS)
    INPUTS = {**S.TrainerSpec.INPUTS,
              CATALOG_EXAMPLES: ChannelParameter(type=standard_artifacts.Examples),
              CATALOG_TRANSFORM_GRAPH: ChannelParameter(type=standard_artifacts.TransformGraph)}
    OUTPUTS = dict(S.TrainerSpec.OUTPUTS)


class StarsTrainerExecutor(trainer_executor.GenericExecutor):
    def _GetFnArgs(self, input_dict, output_dict, exec_properties):
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        fn_args.custom_config = dict(fn_args.custom_config or {})
        fn_args.custom_config["catalog_transformed_uri"] = artifact_utils.get_single_uri(
            input_dict[CATALOG_EXAMPLES])
        fn_args.custom_config["catalog_transform_graph_uri"] = artifact_utils.get_single_uri(
            input_dict[CATALOG_TRANSFORM_GRAPH])
        return fn_args


class StarsTrainer(base_component.BaseComponent):
    SPEC_CLASS = StarsTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(StarsTrainerExecutor)

    def __init__(self, examples, transform_graph, schema, catalog_examples,
                 catalog_transform_graph, run_fn: str = "models.trainer.run_fn",
                 train_args: Optional[trainer_pb2.TrainArgs] = None,
                 eval_args: Optional[trainer_pb2.EvalArgs] = None,
                 custom_config: Optional[dict] = None):
        spec = StarsTrainerSpec(
            examples=examples, transform_graph=transform_graph, schema=schema,
            catalog_examples=catalog_examples, catalog_transform_graph=catalog_transform_graph,
            train_args=train_args or trainer_pb2.TrainArgs(splits=["train"]),
            eval_args=eval_args or trainer_pb2.EvalArgs(splits=["eval"]),
            run_fn=run_fn, custom_config=json.dumps(custom_config or {}),
            model=channel.Channel(type=standard_artifacts.Model),
            model_run=channel.Channel(type=standard_artifacts.ModelRun))
        super().__init__(spec=spec)


class StarsVertexTrainerExecutor(vertex_executor.GenericExecutor):
    """Starts a Vertex AI Training custom job that runs ``StarsTrainerExecutor`` (TFX's
    cloud executor runs the standard Trainer's, which would not add the catalogue)."""

    def _GetExecutorClass(self):
        return StarsTrainerExecutor


class StarsVertexTrainer(StarsTrainer):
    """``StarsTrainer`` trained by Vertex AI Training; ``custom_config`` must hold
    ``vertex_custom_config``'s entries."""
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(StarsVertexTrainerExecutor)


def vertex_custom_config(project: str, region: str, image: str, machine_type: str,
                         accelerator_type: str = "", accelerator_count: int = 0,
                         replicas: int = 1) -> dict:
    """The custom_config entries TFX's Vertex training executor reads: a CustomJob of one
    primary replica (worker pool 0) and ``replicas`` - 1 workers (pool 1), all alike."""
    if not image:
        raise ValueError("Vertex AI Training needs the pipeline image (--image)")
    machine: dict = {"machine_type": machine_type}
    if accelerator_type:
        machine.update(accelerator_type=accelerator_type, accelerator_count=accelerator_count)
    pools = [{"machine_spec": machine, "replica_count": 1,
              "container_spec": {"image_uri": image}}]
    if replicas > 1:
        pools.append({"machine_spec": dict(machine), "replica_count": replicas - 1,
                      "container_spec": {"image_uri": image}})
    ai_platform = tfx.extensions.google_cloud_ai_platform
    return {ai_platform.ENABLE_VERTEX_KEY: True, ai_platform.VERTEX_REGION_KEY: region,
            ai_platform.TRAINING_ARGS_KEY: {"project": project,
                                            "job_spec": {"worker_pool_specs": pools}}}
