"""Marks an Examples artifact the way TFX's own ExampleGen does.

StatisticsGen, SchemaGen, Transform and the Trainer read ``split_names`` and
the payload format to find and decode the data.
"""
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils


def mark_examples(examples, splits) -> None:
    examples.split_names = artifact_utils.encode_split_names(list(splits))
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
