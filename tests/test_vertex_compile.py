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
