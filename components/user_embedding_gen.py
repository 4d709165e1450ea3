"""UserEmbeddingGen: every user's base embeddings from the pushed model version, the
batch job (``serving.batch.job``, Apache Beam) as a pipeline step -- TFX's
BulkInferrer role for a key-value store.

The generation is written but not committed: readers keep the live one until the
release that names this generation is published (``ReleasePublisher`` commits it).
Nothing pushed (the model was not blessed) -> nothing written, ``written`` = 0.
"""
import os

from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.artifacts import UserEmbeddings


def was_pushed(pushed_model) -> bool:
    return bool(pushed_model.get_int_custom_property("pushed"))


@tfx.dsl.components.component
def UserEmbeddingGen(
    pushed_model: tfx.dsl.components.InputArtifact[standard_artifacts.PushedModel],
    user_embeddings: tfx.dsl.components.OutputArtifact[UserEmbeddings],
    data_dir: tfx.dsl.components.Parameter[str],
    store: tfx.dsl.components.Parameter[str],
    max_history: tfx.dsl.components.Parameter[int] = 200,
):
    """Runs the batch job against the pushed version into an uncommitted generation."""
    from serving.batch import job
    if not was_pushed(pushed_model):
        user_embeddings.set_int_custom_property("written", 0)
        return
    destination = pushed_model.get_string_custom_property("pushed_destination")
    version = int(pushed_model.get_string_custom_property("pushed_version"))
    report = job.run(os.path.dirname(destination), data_dir, store, version=version,
                     max_history=max_history, commit=False)
    user_embeddings.set_int_custom_property("written", 1)
    user_embeddings.set_string_custom_property("store", store)
    user_embeddings.set_string_custom_property("generation", report["version"])
    user_embeddings.set_string_custom_property("model_version", report["model_version"])
    user_embeddings.set_int_custom_property("users", int(report.get("users_written") or 0))
