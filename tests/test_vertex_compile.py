"""Kubeflow Pipelines v2 / Vertex AI compile: the spec matches the DSL; nothing runs.

Expected components come from ``create_pipeline`` (not a hard-coded list), so the
checks follow the pipeline as components are added.
"""
import dataclasses
import json

import pytest
import yaml

pytest.importorskip("kfp.pipeline_spec", reason="KubeflowV2DagRunner needs kfp")

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.orchestration.kubeflow.v2 import compiler_utils
from tfx.utils import import_utils

from cli import main as cli
from pipeline.configs import PipelineConfig
from pipeline.pipeline import create_pipeline, create_refresh_pipeline
from pipeline.runners import vertex

IMAGE = "europe-west4-docker.pkg.dev/proj/repo/stars:test"
BEAM_ARGS = ("--runner=DataflowRunner", "--project=proj", "--region=europe-west4",
             "--temp_location=gs://bucket/tmp")


def _config(**overrides):
    fields = dict(data_dir="gs://bucket/data", pipeline_root="gs://bucket/root",
                  beam_pipeline_args=BEAM_ARGS)
    fields.update(overrides)
    return PipelineConfig(**fields)


def _check_spec(spec: dict, config: PipelineConfig, image: str, tmp_path,
                make=create_pipeline) -> None:
    """Checks a PipelineSpec dict against the TFX DSL ``make`` builds from ``config``."""
    # create_pipeline makes the MLMD SQLite directory: keep it off gs:// here.
    local = dataclasses.replace(config, metadata_path=str(tmp_path / "mlmd" / "m.sqlite"))
    pipeline = make(local)
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())  # valid KFP IR
    assert parsed.schema_version == "2.1.0"  # the only version the KFP v2 backend accepts
    assert parsed.pipeline_info.name == pipeline.pipeline_info.pipeline_name
    assert parsed.default_pipeline_root == config.pipeline_root
    nodes = pipeline.components
    tasks = spec["root"]["dag"]["tasks"]
    # A Resolver compiles to one importer-like task per resolved channel ("<id>-...").
    resolvers = [n for n in nodes if isinstance(n, tfx.dsl.Resolver)]
    nodes = [n for n in nodes if not isinstance(n, tfx.dsl.Resolver)]
    resolver_tasks = {t for t in tasks for r in resolvers if t.startswith(f"{r.id}-")}
    assert len(resolver_tasks) == 2 * len(resolvers)  # model + blessing
    assert sorted(set(tasks) - resolver_tasks) == sorted(node.id for node in nodes)
    executors = spec["deploymentSpec"]["executors"]
    for node in nodes:
        task = tasks[node.id]
        upstream = {up.id for up in node.upstream_nodes if not isinstance(up, tfx.dsl.Resolver)}
        assert set(task.get("dependentTasks", [])) - resolver_tasks == upstream
        container = executors[spec["components"][task["componentRef"]["name"]]
                              ["executorLabel"]]["container"]
        assert container["image"] == image
        assert container["command"][-1] == (
            "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor")
        args = container["args"]
        assert args[args.index("--executor_class_path") + 1].startswith(
            ("components.", "tfx.")), args
        assert all(arg in args for arg in config.beam_pipeline_args), (node.id, args)
        params = task.get("inputs", {}).get("parameters", {})
        if "data_dir" in node.exec_properties:  # URIs reach the steps as given
            assert params["data_dir"]["runtimeValue"]["constant"] == config.data_dir

    # Every artifact type must be importable by the executor in the image, which
    # resolves custom types by their schema title (components/artifacts.py).
    titles = set()
    for component in spec["components"].values():
        for side in ("inputDefinitions", "outputDefinitions"):
            for art in component.get(side, {}).get("artifacts", {}).values():
                titles.add(yaml.safe_load(art["artifactType"]["instanceSchema"])["title"])
    assert {"components.DataRejects", "components.UserEmbeddings", "components.CatalogIndex",
            "components.Release"} <= titles
    for title in titles:
        import_utils.import_class_by_path(compiler_utils.TITLE_TO_CLASS_PATH.get(title, title))

    assert "metadata.sqlite" not in json.dumps(spec)  # local MLMD config stays out


def test_vertex_pipeline_job_json(tmp_path):
    config = _config()
    out = tmp_path / "spec" / "stars.json"
    assert vertex.compile(config, str(out), IMAGE) == str(out)
    job = json.loads(out.read_text())
    json_format.ParseDict({k: v for k, v in job.items() if k != "pipelineSpec"},
                          pipeline_spec_pb2.PipelineJob())
    assert job["displayName"] == config.pipeline_name
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/root"
    _check_spec(job["pipelineSpec"], config, IMAGE, tmp_path)
    # Without --vertex-training-* the training runs in the Trainer's own step.
    assert _executor_args(job["pipelineSpec"], "StarsTrainer")[1] == (
        "components.stars_trainer.StarsTrainerExecutor")


def _executor_args(spec: dict, task: str) -> list:
    component = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = spec["components"][component]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]["args"]


def _custom_config(spec: dict) -> dict:
    params = spec["root"]["dag"]["tasks"]["StarsTrainer"]["inputs"]["parameters"]
    return json.loads(params["custom_config"]["runtimeValue"]["constant"])


VERTEX_TRAINING_FLAGS = ["--vertex-training-project", "proj",
                         "--vertex-training-region", "europe-west4",
                         "--vertex-training-machine-type", "n1-standard-16",
                         "--vertex-training-accelerator-type", "NVIDIA_TESLA_T4",
                         "--vertex-training-accelerator-count", "2",
                         "--vertex-training-replicas", "3"]


def _gpu_pools(image, machine=None, replicas=3):
    machine = machine or {"machine_type": "n1-standard-16", "accelerator_type": "NVIDIA_TESLA_T4",
                          "accelerator_count": 2}
    pools = [{"machine_spec": machine, "replica_count": 1, "container_spec": {"image_uri": image}}]
    if replicas > 1:
        pools.append({"machine_spec": machine, "replica_count": replicas - 1,
                      "container_spec": {"image_uri": image}})
    return pools


def test_vertex_training_flags_send_the_trainer_to_a_gpu_worker_pool(tmp_path, capsys):
    """--vertex-training-*: the StarsTrainer step starts a Vertex AI Training CustomJob (one
    primary + workers, GPUs on each, the pipeline image); the model settings are kept."""
    from pipeline.configs import VertexTraining
    out = tmp_path / "stars.json"
    assert cli.main(["pipeline", "compile", "--target", "vertex", "--data-dir", "gs://bucket/data",
                     "--root", "gs://bucket/root", "--output", str(out), "--image", IMAGE,
                     "--model-overrides", '{"epochs": 3}', *VERTEX_TRAINING_FLAGS]) == 0
    spec = json.loads(out.read_text())["pipelineSpec"]
    config = _config(beam_pipeline_args=PipelineConfig.beam_pipeline_args,
                     model_overrides='{"epochs": 3}',
                     vertex_training=VertexTraining(
                         project="proj", region="europe-west4", machine_type="n1-standard-16",
                         accelerator_type="NVIDIA_TESLA_T4", accelerator_count=2, replicas=3,
                         image=IMAGE))
    _check_spec(spec, config, IMAGE, tmp_path)  # the same DAG, every other step unchanged
    args = _executor_args(spec, "StarsTrainer")
    assert args[args.index("--executor_class_path") + 1] == (
        "components.stars_trainer.StarsVertexTrainerExecutor")
    assert _custom_config(spec) == {
        "preset": "cpu", "variant": "stars", "overrides": {"epochs": 3},
        "ai_platform_enable_vertex": True, "ai_platform_vertex_region": "europe-west4",
        "ai_platform_training_args": {"project": "proj",
                                      "job_spec": {"worker_pool_specs": _gpu_pools(IMAGE)}}}
    for task in ("Transform", "IndexBuilder", "StarsEvaluator"):  # no other step goes there
        assert not any("ai_platform" in a for a in _executor_args(spec, task))


def test_the_vertex_trainer_step_submits_a_job_that_runs_the_stars_trainer(tmp_path,
                                                                           monkeypatch):
    """The step's executor (TFX's Vertex training executor) against a recording job client:
    the CustomJob runs StarsTrainerExecutor in the image, with the catalogue inputs."""
    from tfx.extensions.google_cloud_ai_platform import training_clients
    from tfx.types import standard_artifacts

    from components import stars_trainer as ST
    from pipeline.configs import VertexTraining
    submitted = []
    client = training_clients.VertexJobClient
    monkeypatch.setattr(client, "create_client", lambda self: None)
    monkeypatch.setattr(client, "launch_job",
                        lambda self, project, job: submitted.append((project, job)))
    monkeypatch.setattr(client, "get_job", lambda self: None)
    monkeypatch.setattr(client, "get_job_state", lambda self, response: "done")
    monkeypatch.setattr(client, "JOB_STATES_COMPLETED", ("done",))
    vertex_training = VertexTraining(project="proj", region="europe-west4",
                                     accelerator_type="NVIDIA_L4", accelerator_count=1,
                                     image=IMAGE)
    local = _config(vertex_training=vertex_training,
                    metadata_path=str(tmp_path / "mlmd" / "m.sqlite"))
    trainer = next(c for c in create_pipeline(local).components if c.id == "StarsTrainer")
    assert isinstance(trainer, ST.StarsVertexTrainer)

    def artifact(kind, name):
        a = kind()
        a.uri = f"gs://bucket/root/{name}"
        return [a]
    inputs = {"examples": artifact(standard_artifacts.Examples, "Transform/examples"),
              "transform_graph": artifact(standard_artifacts.TransformGraph, "Transform/graph"),
              "schema": artifact(standard_artifacts.Schema, "SchemaGen/schema"),
              ST.CATALOG_EXAMPLES: artifact(standard_artifacts.Examples, "CatalogTransform/ex"),
              ST.CATALOG_TRANSFORM_GRAPH: artifact(standard_artifacts.TransformGraph,
                                                   "CatalogTransform/graph")}
    outputs = {"model": artifact(standard_artifacts.Model, "StarsTrainer/model"),
               "model_run": artifact(standard_artifacts.ModelRun, "StarsTrainer/model_run")}
    ST.StarsVertexTrainerExecutor().Do(inputs, outputs, dict(trainer.exec_properties))
    [(project, job)] = submitted
    assert project == "proj"
    pools = job["job_spec"]["worker_pool_specs"]
    command = pools[0]["container_spec"].pop("command")
    assert pools == [{"machine_spec": {"machine_type": "n1-standard-8",
                                       "accelerator_type": "NVIDIA_L4", "accelerator_count": 1},
                      "replica_count": 1, "container_spec": {"image_uri": IMAGE}}]
    assert command[:3] == ["python", "-m", "tfx.scripts.run_executor"]
    assert command[command.index("--executor_class_path") + 1] == (
        "components.stars_trainer.StarsTrainerExecutor")
    job_inputs = json.loads(command[command.index("--inputs") + 1])
    assert {ST.CATALOG_EXAMPLES, ST.CATALOG_TRANSFORM_GRAPH} <= set(job_inputs)
    properties = json.loads(command[command.index("--exec-properties") + 1])
    assert properties["run_fn"] == "models.trainer.run_fn"


@pytest.mark.parametrize("flags, message", [
    (["--vertex-training-accelerator-type", "NVIDIA_L4"], "--vertex-training-region"),
    (["--vertex-training-region", "europe-west4"], "project"),
    (["--vertex-training-region", "r", "--vertex-training-project", "p",
      "--vertex-training-accelerator-count", "2"], "accelerator-type"),
    (["--vertex-training-region", "r", "--vertex-training-project", "p",
      "--vertex-training-replicas", "0"], "replicas"),
    (["--catalog-refresh", "--vertex-training-region", "r", "--vertex-training-project", "p"],
     "trains nothing"),
])
def test_cli_rejects_incomplete_vertex_training_flags(tmp_path, capsys, flags, message):
    assert cli.main(["pipeline", "compile", "--target", "vertex", "--data-dir", "gs://b/data",
                     "--root", "gs://b/root", "--output", str(tmp_path / "x.json"),
                     *flags]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_kubeflow_yaml_via_cli(tmp_path, capsys):
    out = tmp_path / "stars.yaml"
    assert cli.main(["pipeline", "compile", "--target", "kubeflow",
                     "--data-dir", "gs://bucket/data", "--root", "gs://bucket/root",
                     "--output", str(out), "--image", IMAGE, "--split-mode", "leave_one_out",
                     "--beam-arg=--runner=FlinkRunner", "--beam-arg=--parallelism=4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pipeline_spec"] == str(out) and report["image"] == IMAGE
    config = _config(split_mode="leave_one_out",
                     beam_pipeline_args=("--runner=FlinkRunner", "--parallelism=4"))
    spec = yaml.safe_load(out.read_text())  # the bare PipelineSpec, as the KFP client wants
    _check_spec(spec, config, IMAGE, tmp_path)
    from kfp import components as kfp_components  # the KFP SDK loads it
    assert kfp_components.load_component_from_file(str(out)).name == config.pipeline_name


def test_catalog_refresh_pipeline_compiles(tmp_path, capsys):
    """The refresh's pipeline mode: what `stars catalog refresh` runs, for a schedule."""
    out = tmp_path / "refresh.json"
    assert cli.main(["pipeline", "compile", "--target", "vertex", "--catalog-refresh",
                     "--data-dir", "gs://bucket/data", "--root", "gs://bucket/root",
                     "--release-dir", "/gcs/bucket/releases", "--output", str(out),
                     "--image", IMAGE]) == 0
    job = json.loads(out.read_text())
    assert job["displayName"] == "stars-catalog-refresh"
    config = _config(release_dir="/gcs/bucket/releases",
                     beam_pipeline_args=PipelineConfig.beam_pipeline_args)
    _check_spec(job["pipelineSpec"], config, IMAGE, tmp_path, make=create_refresh_pipeline)
    assert {"CatalogRefresher", "Pusher", "UserEmbeddingGen", "CatalogIndexer",
            "ReleasePublisher"} <= set(job["pipelineSpec"]["root"]["dag"]["tasks"])


@pytest.mark.parametrize("argv, message", [
    (["--target", "kubeflow", "--root", "gs://bucket/root", "--output", "x.json"], ".yaml"),
    (["--target", "vertex", "--root", "local/root", "--output", "x.json"], "gs://"),
    (["--target", "vertex", "--root", "gs://bucket/root", "--output", "x.txt"], ".json"),
])
def test_cli_rejects_unusable_output(tmp_path, capsys, argv, message):
    argv = [a if a != "x.json" and a != "x.txt" else str(tmp_path / a) for a in argv]
    assert cli.main(["pipeline", "compile", "--data-dir", "gs://bucket/data", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_without_kfp_says_so(tmp_path, capsys, monkeypatch):
    from tfx import v1 as tfx
    monkeypatch.delattr(tfx.orchestration.experimental, "KubeflowV2DagRunner")
    assert cli.main(["pipeline", "compile", "--target", "vertex", "--data-dir", "gs://b/data",
                     "--root", "gs://b/root", "--output", str(tmp_path / "x.json")]) == 2
    assert "needs the 'kfp' package" in capsys.readouterr().err
