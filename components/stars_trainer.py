"""StarsTrainer: the TFX Trainer with the catalogue as component inputs.

The standard Trainer only takes examples, transform graph, schema, base model
and hyperparameters.  STARS also needs the WHOLE catalogue (item tokens are
built from every item's text embedding and tags, cold-start items included),
so this component adds two input channels, ``catalog_examples`` (the catalogue
Transform's transformed items) and ``catalog_transform_graph``; its executor
hands their URIs to ``run_fn`` in ``fn_args.custom_config``.  Lineage in MLMD
records which catalogue a model was trained on.
"""
from __future__ import annotations

import json
from typing import Optional

from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
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
