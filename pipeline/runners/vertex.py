"""Compiles the pipeline for Kubeflow Pipelines v2 and Vertex AI Pipelines.

TFX's ``KubeflowV2DagRunner`` does not run anything: it writes the pipeline as
Kubeflow Pipelines v2 IR (``PipelineSpec``), which both orchestrators execute.
Every step runs in ``image``, which must hold this repository's code (see the
top-level ``Dockerfile``); data, pipeline root and Beam arguments come from the
:class:`PipelineConfig` as for the local runner. Needs the ``kfp`` package
(``pip install -c constraints.txt kfp``) at compile time and in the image.

No caching: the compiled pipeline is built without data fingerprints, so
``create_pipeline`` leaves caching off.  A fingerprint taken at compile time would
describe the data of that moment, and a scheduled run over new files under the same
path would wrongly reuse the old outputs (the local runner fingerprints at run time).

Output format follows the file name, as in TFX:

* ``*.json``: a Vertex ``PipelineJob`` (``pipelineSpec`` + ``runtimeConfig``
  whose ``gcsOutputDirectory`` is the pipeline root);
* ``*.yaml``: the bare ``PipelineSpec``, which Kubeflow Pipelines requires
  (its client and UI accept only .yaml/.zip/.tar.gz) and Vertex also accepts.

Build and push the image, compile, submit::

    docker build -t REGION-docker.pkg.dev/PROJECT/REPO/stars:TAG . && docker push ...
    stars pipeline compile --target vertex --image REGION-docker.pkg.dev/PROJECT/REPO/stars:TAG \\
        --data-dir gs://BUCKET/data --root gs://BUCKET/root --output stars.json \\
        --beam-arg=--runner=DataflowRunner --beam-arg=--project=PROJECT \\
        --beam-arg=--region=REGION --beam-arg=--temp_location=gs://BUCKET/tmp
    # (Dataflow workers need this code too, e.g. --beam-arg=--sdk_container_image=IMG with IMG
    # built FROM apache/beam_python3.11_sdk:2.61.0; the default is Beam's DirectRunner in the step.)

    # Vertex AI (google-cloud-aiplatform: installed with tfx, not a direct dependency here)
    from google.cloud import aiplatform
    aiplatform.init(project="PROJECT", location="REGION")
    aiplatform.PipelineJob(display_name="stars", template_path="stars.json",
                           enable_caching=False).submit(service_account="SA@...")

    # The Trainer on Vertex AI Training with GPUs (one job per run; the pipeline step waits
    # for it): add --vertex-training-project=PROJECT --vertex-training-region=REGION
    # --vertex-training-machine-type=n1-standard-16 --vertex-training-accelerator-type=
    # NVIDIA_TESLA_T4 --vertex-training-accelerator-count=2 [--vertex-training-replicas=2]
    # (the image then needs TensorFlow's CUDA libraries: pip install tensorflow[and-cuda]).

    # Kubeflow Pipelines v2 (compile with --target kubeflow --output stars.yaml)
    import kfp
    kfp.Client(host="https://KFP_HOST").create_run_from_pipeline_package(
        "stars.yaml", arguments={}, enable_caching=False)
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import yaml
from tfx import v1 as tfx
from tfx.dsl.io import fileio

from pipeline.configs import PipelineConfig
from pipeline.pipeline import create_pipeline, create_refresh_pipeline

TARGETS = ("vertex", "kubeflow")
DEFAULT_IMAGE = "stars:latest"  # what `docker build -t stars:latest .` makes; push it for a cluster


def _runner_classes():
    experimental = tfx.orchestration.experimental
    if not hasattr(experimental, "KubeflowV2DagRunner"):  # TFX hides it without kfp
        raise ImportError("compiling for Kubeflow/Vertex needs the 'kfp' package: "
                          "pip install --ignore-requires-python -c constraints.txt kfp")
    return experimental.KubeflowV2DagRunner, experimental.KubeflowV2DagRunnerConfig


def compile(config: PipelineConfig, output_path: str, image: str = DEFAULT_IMAGE,
            target: str = "vertex",
            catalog_refresh: bool = False) -> str:  # pylint: disable=redefined-builtin
    """Writes the pipeline spec for ``target`` to ``output_path``; returns that path.
    ``catalog_refresh``: the catalogue refresh pipeline (``create_refresh_pipeline``)
    instead of the training pipeline."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    is_yaml = output_path.endswith((".yaml", ".yml"))
    if not is_yaml and not output_path.endswith(".json"):
        raise ValueError(f"output {output_path!r} must end with .json or .yaml")
    if target == "kubeflow" and not is_yaml:
        raise ValueError("Kubeflow Pipelines takes the pipeline spec as .yaml: "
                         f"use --output {os.path.splitext(output_path)[0]}.yaml")
    if target == "vertex" and not config.pipeline_root.startswith("gs://"):
        raise ValueError(f"Vertex AI needs a gs:// pipeline root, not {config.pipeline_root!r}")
    runner_cls, runner_config_cls = _runner_classes()
    make = create_refresh_pipeline if catalog_refresh else create_pipeline
    if config.vertex_training is not None and not config.vertex_training.image:
        # The training job runs the pipeline's own image.
        config = dataclasses.replace(config, vertex_training=dataclasses.replace(
            config.vertex_training, image=image))
    # The MLMD SQLite config is for the local runner only (Kubeflow and Vertex bring their
    # own MLMD) and making it creates its directory -- on GCS for a gs:// root. Point it
    # at a throwaway local directory: the compiled spec never mentions it.
    with tempfile.TemporaryDirectory() as scratch:
        local_metadata = dataclasses.replace(
            config, metadata_path=os.path.join(scratch, "metadata.sqlite"))
        pipeline = make(local_metadata)
        # Schema 2.1.0: the only one the Kubeflow Pipelines v2 backend accepts (Vertex too).
        runner = runner_cls(config=runner_config_cls(
            display_name=pipeline.pipeline_info.pipeline_name, default_image=image,
            use_pipeline_spec_2_1=True))
        job = runner.run(pipeline, write_out=False)
    # TFX puts the root only in the PipelineJob's runtimeConfig; a bare spec needs it inline.
    job["pipelineSpec"]["defaultPipelineRoot"] = config.pipeline_root
    out_dir = os.path.dirname(output_path)
    if out_dir and not fileio.exists(out_dir):
        fileio.makedirs(out_dir)
    with fileio.open(output_path, "w") as f:
        if is_yaml:
            yaml.safe_dump(job["pipelineSpec"], f, sort_keys=True)
        else:
            json.dump(job, f, indent=2, sort_keys=True)
    return output_path
