"""The ``stars`` command line.

    stars data synth --size demo --out DIR         generate synthetic e-commerce data
    stars data import-amazon --source DIR --out DIR  public Amazon reviews -> contract
    stars data validate --data-dir DIR             check a data directory, write rejects
    stars pipeline run --data-dir DIR --root DIR   run the TFX pipeline (LocalDagRunner)
    stars pipeline compile --target vertex|kubeflow --data-dir URI --root URI --output F
                                                   compile for Vertex AI / Kubeflow Pipelines v2
    stars demo --out DIR                           synth data + pipeline, end to end
    stars eval --data-dir DIR --out DIR [--quick]  offline evaluation (leave-one-out, full ranking)
    stars serve model --model-base-path DIR        TF Serving REST/gRPC APIs over pushed models
    stars serve sidecar --data-dir DIR --model-url grpc://HOST:PORT
                                                   recommendations API with the post-filter
    stars batch user-embeddings ...                h_gen/h_next of every user into a store
    stars index items --data-dir DIR --es-hosts URL  catalogue into Elasticsearch
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from stars import console
from stars.data.contract import ContractError
from stars.environment import configure


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _synth(args) -> int:
    from stars.data import synth
    _print(synth.generate(args.out, args.size, seed=args.seed))
    return 0


def _import_amazon(args) -> int:
    from stars.data import amazon
    _print(amazon.import_amazon(args.source, args.out))
    return 0


def _validate(args) -> int:
    import tempfile

    from stars.data import catalog, staging
    ids = {f["item_id"][0] for f in catalog.read_catalog(args.data_dir)}
    rejects = args.rejects or os.path.join(args.data_dir, "rejects")
    with tempfile.TemporaryDirectory() as work:
        report = staging.stage(args.data_dir, ids, work, rejects)
    _print({"items": len(ids), "interactions_read": report.interactions_read,
            "interactions_accepted": report.interactions_accepted,
            "impressions_read": report.impressions_read, "users": report.users_read,
            "user_feature_kinds": report.user_feature_kinds, "rejects": report.rejects,
            "rejects_dir": rejects if report.rejected else None})
    return 0


def _model_overrides(args) -> str:
    """``--model-overrides`` with the ``--context`` decision folded in
    (``models.calendar_context``); ``auto`` on a remote data URI keeps the model's
    default, as the data is not read at compile time."""
    if args.context == "auto" and "://" in args.data_dir:
        return args.model_overrides
    try:
        overrides = json.loads(args.model_overrides) if args.model_overrides else {}
    except ValueError as e:
        raise ValueError(f"--model-overrides is not valid JSON: {e}") from None
    from models import calendar_context as CC
    use_context, why = CC.calendar_context(args.data_dir, args.context)
    print(f"stars: {why}", file=sys.stderr)
    return json.dumps(CC.context_overrides(args.variant, use_context, overrides),
                      sort_keys=True)


def _pipeline_config(args):
    from pipeline.configs import PipelineConfig
    beam_args = list(PipelineConfig.beam_pipeline_args)
    if args.beam_arg:
        beam_args = list(args.beam_arg)
    return PipelineConfig(
        data_dir=_location(args.data_dir), pipeline_root=_location(args.root),
        encoder=args.encoder, tagger=args.tagger, tag_vocabulary=args.tag_vocabulary,
        split_mode=args.split_mode, eval_fraction=args.eval_fraction,
        max_history=args.max_history, beam_pipeline_args=tuple(beam_args),
        train_model=not args.data_only, model_preset=args.preset, model_variant=args.variant,
        model_overrides=_model_overrides(args), top_k=args.top_k,
        serving_index=args.serving_index,
        serving_model_dir=_location(args.serving_dir) if args.serving_dir else None,
        min_recall_vs_popularity=args.min_recall_vs_popularity,
        **_state_config(args))


def _location(path: str) -> str:
    """A URL (``gs://...``) as given; a local path made absolute."""
    return path if "://" in path else os.path.abspath(path)


def _state_config(args) -> dict:
    """The PipelineConfig fields of the run's local state and its release (MLMD,
    ``--release-dir``, ``--user-store``, ...)."""
    return {"metadata_path": os.path.abspath(args.metadata_path) if args.metadata_path else None,
            "release_dir": os.path.abspath(args.release_dir) if args.release_dir else None,
            "user_store": args.user_store or None, "es_hosts": args.es_hosts,
            "es_alias": args.es_alias, "min_index_recall": args.min_index_recall}


def _catalog_refresh(args) -> int:
    from pipeline.configs import PipelineConfig
    from pipeline.runners import local
    from stars import release as releases
    config = PipelineConfig(
        data_dir=_location(args.data_dir), pipeline_root=_location(args.root),
        encoder=args.encoder, tagger=args.tagger, tag_vocabulary=args.tag_vocabulary,
        max_history=args.max_history, top_k=args.top_k, serving_index=args.serving_index,
        serving_model_dir=_location(args.serving_dir) if args.serving_dir else None,
        beam_pipeline_args=tuple(args.beam_arg or PipelineConfig.beam_pipeline_args),
        **_state_config(args))
    before = releases.current_id(config.releases)
    if before is None:
        print(f"stars: error: no release in {config.releases} to refresh: run `stars pipeline "
              "run` first (a refresh re-uses the live release's trained weights)",
              file=sys.stderr)
        return 2
    start = time.time()
    local.run_refresh(config)
    after = releases.current(config.releases)
    _print({"previous_release": before, "release": after.release_id if after else None,
            "published": after is not None and after.release_id != before,
            "model_version": after.model_version if after else None,
            "index_quality": after.manifest["index_quality"] if after else None,
            "wall_s": round(time.time() - start, 1)})
    return 0 if after is not None and after.release_id != before else 1


def _release_show(args) -> int:
    from stars import release as releases
    current = releases.current(args.release_dir)
    if current is None:
        print(f"stars: error: no release in {args.release_dir}", file=sys.stderr)
        return 1
    _print(current.manifest)
    return 0


def _add_state_options(parser) -> None:
    """Local state: a URL root (gs://...) holds artefacts only, these need local paths."""
    parser.add_argument("--metadata-path", default="",
                        help="MLMD SQLite file (default <root>/metadata.sqlite)")
    parser.add_argument("--release-dir", default="",
                        help="where releases are published (default <root>/releases)")
    parser.add_argument("--user-store", default="",
                        help="user-embedding store of the release: embedded:PATH or "
                             "redis://host:port/db (default embedded:<root>/user_store)")
    parser.add_argument("--es-hosts", default="",
                        help="Elasticsearch URL(s): the release stages an index and swaps "
                             "--es-alias to it (default: embedded filter catalogue only)")
    parser.add_argument("--es-alias", default="stars-items")
    parser.add_argument("--min-index-recall", type=float, default=0.95,
                        help="release gate: ScaNN recall@K against brute force on real user "
                             "embeddings")


def _pipeline_run(args) -> int:
    return _run_pipeline(_pipeline_config(args))


def _run_pipeline(config) -> int:
    from pipeline.runners import local
    start = time.time()
    local.run(config)
    _print({"pipeline_root": config.pipeline_root, "metadata": config.metadata,
            "wall_s": round(time.time() - start, 1)})
    return 0


def _pipeline_compile(args) -> int:
    import dataclasses

    from pipeline.runners import vertex

    config = dataclasses.replace(_pipeline_config(args), vertex_training=_vertex_training(args))
    image = args.image or vertex.DEFAULT_IMAGE
    if args.catalog_refresh and config.vertex_training is not None:
        raise ValueError("the catalogue refresh trains nothing: --vertex-training-* apply to "
                         "the training pipeline")
    try:
        path = vertex.compile(config, args.output, image=image, target=args.target,
                              catalog_refresh=args.catalog_refresh)
    except ImportError as e:
        print(f"stars: error: {e}", file=sys.stderr)
        return 2
    _print({"target": args.target, "pipeline_spec": path, "image": image,
            "pipeline_root": config.pipeline_root})
    return 0


def _vertex_training(args):
    """``--vertex-training-*`` as a ``VertexTraining`` (None without a region)."""
    from pipeline.configs import VertexTraining
    given = [f"--vertex-training-{name.replace('_', '-')}" for name in VERTEX_TRAINING_OPTIONS
             if getattr(args, f"vertex_training_{name}") is not None]
    if args.vertex_training_region is None:
        if given:
            raise ValueError(f"{', '.join(given)} need(s) --vertex-training-region")
        return None
    accelerator = args.vertex_training_accelerator_type or ""
    count = args.vertex_training_accelerator_count
    return VertexTraining(
        project=args.vertex_training_project or "", region=args.vertex_training_region,
        machine_type=args.vertex_training_machine_type or VertexTraining.machine_type,
        accelerator_type=accelerator,
        accelerator_count=count if count is not None else (1 if accelerator else 0),
        replicas=1 if args.vertex_training_replicas is None else args.vertex_training_replicas)


VERTEX_TRAINING_OPTIONS = ("project", "region", "machine_type", "accelerator_type",
                           "accelerator_count", "replicas")


def _add_vertex_training_options(parser) -> None:
    group = parser.add_argument_group(
        "Vertex AI Training", "run the Trainer's training as a Vertex AI Training custom job "
        "(GPUs, several machines) instead of in its pipeline step; on with a region")
    group.add_argument("--vertex-training-project", help="GCP project of the training job")
    group.add_argument("--vertex-training-region", help="e.g. europe-west4")
    group.add_argument("--vertex-training-machine-type",
                       help="machine of each replica (default n1-standard-8)")
    group.add_argument("--vertex-training-accelerator-type",
                       help="GPU per machine, Vertex's name: NVIDIA_TESLA_T4, NVIDIA_L4, "
                            "NVIDIA_TESLA_A100, ... (default: none, CPUs only)")
    group.add_argument("--vertex-training-accelerator-count", type=int,
                       help="GPUs per machine (default 1 with a type): several train under "
                            "MirroredStrategy")
    group.add_argument("--vertex-training-replicas", type=int,
                       help="machines (default 1); more train under "
                            "MultiWorkerMirroredStrategy (one primary + workers)")


def _demo(args) -> int:
    from stars.data import synth
    data_dir = os.path.join(args.out, "data")
    print(f"== generating '{args.size}' synthetic data in {data_dir}")
    _print(synth.generate(data_dir, args.size, seed=args.seed))
    args.data_dir, args.root = data_dir, os.path.join(args.out, "pipeline")
    print(f"== running the TFX pipeline under {args.root}")
    config = _pipeline_config(args)  # reads the data once (the --context decision)
    code = _run_pipeline(config)
    if code or args.data_only or args.no_serving:
        return code
    from pipeline.runners import local
    from serving import demo
    demo.run(data_dir, os.path.join(config.serving_base, config.model_name), config.releases,
             os.path.join(args.out, "serving"), refresh=lambda: local.run_refresh(config))
    return 0


def _add_pipeline_options(parser) -> None:
    from models import calendar_context as CC  # the models package: after configure()
    parser.add_argument("--encoder", default="minilm",
                        help="minilm | precomputed | http:URL?model=M | hashing")
    parser.add_argument("--tagger", default="keyword", help="keyword | chat:URL?model=M")
    parser.add_argument("--tag-vocabulary", default="", help="JSON vocabulary file")
    parser.add_argument("--split-mode", default="time", choices=["time", "leave_one_out"])
    parser.add_argument("--eval-fraction", type=float, default=0.1)
    parser.add_argument("--max-history", type=int, default=200)
    parser.add_argument("--data-only", action="store_true",
                        help="run the data half only (no Trainer/IndexBuilder/Evaluator/Pusher)")
    parser.add_argument("--preset", default="cpu", help="model size preset: paper | cpu | tiny")
    parser.add_argument("--variant", default="stars",
                        help="stars | stars_no_text | stars_no_tags | stars_no_context | "
                             "stars_no_user | sasrec_id | sasrec_plain")
    parser.add_argument("--model-overrides", default="",
                        help='JSON of model config fields, e.g. \'{"epochs": 5}\'')
    parser.add_argument("--context", default="auto", choices=CC.CHOICES,
                        help="calendar context: auto = on only when the timestamps tell the "
                             "time of day (off for day-granular dates such as review dates)")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--serving-index", default="scann", choices=["scann", "brute_force"])
    parser.add_argument("--serving-dir", default="",
                        help="TF Serving model base path (default <root>/serving)")
    parser.add_argument("--min-recall-vs-popularity", type=float, default=1.0,
                        help="blessing threshold: Recall@10 >= this x popularity")
    parser.add_argument("--beam-arg", action="append",
                        help="Beam pipeline argument, repeatable "
                             "(e.g. --beam-arg=--runner=FlinkRunner)")
    _add_state_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stars", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_console_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data generation, import and validation")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("synth", help="generate synthetic e-commerce data")
    p.add_argument("--size", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_synth)
    p = data_sub.add_parser("import-amazon", help="import the public Amazon review data")
    p.add_argument("--source", required=True, help="directory with interactions.csv, items.csv")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_import_amazon)
    p = data_sub.add_parser("validate", help="validate a data directory")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--rejects", default="", help="where to write rejected rows")
    p.set_defaults(func=_validate)

    pipe = sub.add_parser("pipeline", help="TFX pipeline")
    pipe_sub = pipe.add_subparsers(dest="pipeline_command", required=True)
    p = pipe_sub.add_parser("run", help="run locally with LocalDagRunner")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--root", required=True, help="pipeline root (artifacts + MLMD SQLite)")
    _add_pipeline_options(p)
    p.set_defaults(func=_pipeline_run)
    p = pipe_sub.add_parser("compile", help="compile for Vertex AI / Kubeflow Pipelines v2")
    p.add_argument("--target", required=True, choices=["vertex", "kubeflow"])
    p.add_argument("--data-dir", required=True, help="data URI as the steps see it (gs://...)")
    p.add_argument("--root", required=True, help="pipeline root URI (gs://... for Vertex)")
    p.add_argument("--output", required=True,
                   help=".json (Vertex PipelineJob) or .yaml (PipelineSpec; Kubeflow needs it)")
    p.add_argument("--image", default=None,
                   help="image with this repo installed (see Dockerfile); default stars:latest")
    p.add_argument("--catalog-refresh", action="store_true",
                   help="compile the catalogue refresh pipeline (what `stars catalog refresh` "
                        "runs) instead of the training pipeline")
    _add_pipeline_options(p)
    _add_vertex_training_options(p)
    p.set_defaults(func=_pipeline_compile)

    p = sub.add_parser("demo", help="synthetic data + pipeline, end to end")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--size", default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-serving", action="store_true",
                   help="stop after the pipeline (no model server / sidecar requests)")
    _add_pipeline_options(p)
    p.set_defaults(func=_demo)
    catalog = sub.add_parser("catalog", help="catalogue refresh without retraining")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    p = catalog_sub.add_parser(
        "refresh", help="re-embed new or changed items with the live release's weights, "
                        "rebuild the index, gate it and publish a new release")
    p.add_argument("--data-dir", required=True, help="data directory with the new catalogue")
    p.add_argument("--root", required=True, help="the pipeline root of the live release")
    p.add_argument("--encoder", default="minilm",
                   help="the text encoder the model was trained with")
    p.add_argument("--tagger", default="keyword")
    p.add_argument("--tag-vocabulary", default="")
    p.add_argument("--max-history", type=int, default=200)
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--serving-index", default="scann", choices=["scann", "brute_force"])
    p.add_argument("--serving-dir", default="",
                   help="TF Serving model base path (default <root>/serving)")
    p.add_argument("--beam-arg", action="append", help="Beam pipeline argument, repeatable")
    _add_state_options(p)
    p.set_defaults(func=_catalog_refresh)
    release = sub.add_parser("release", help="published releases")
    release_sub = release.add_subparsers(dest="release_command", required=True)
    p = release_sub.add_parser("show", help="print the live release's manifest")
    p.add_argument("--release-dir", required=True)
    p.set_defaults(func=_release_show)
    p = sub.add_parser("eval", help="offline evaluation: leave-one-out, full-catalogue ranking")
    from evaluation import offline
    offline.add_arguments(p)
    p.set_defaults(func=_eval)
    _add_serving_commands(sub)
    return parser


def _eval(args) -> int:
    from evaluation import offline
    result = offline.run_from_args(args)
    for line in offline.summary_lines(result):
        print(line)
    return 0


def _add_serving_commands(sub) -> None:
    """``serve model|sidecar``, ``batch user-embeddings``, ``index items``: each lives with
    its code under ``serving/`` and registers its own arguments."""
    from serving.batch.cli import add_batch_parser
    from serving.model_server.cli import add_serve_model_parser
    from serving.sidecar.cli import add_index_items_parser, add_serve_sidecar_parser
    serve = sub.add_parser("serve", help="model server and recommendation sidecar")
    serve_sub = serve.add_subparsers(dest="serve_command", required=True)
    add_serve_model_parser(serve_sub)
    add_serve_sidecar_parser(serve_sub)
    add_batch_parser(sub)
    index = sub.add_parser("index", help="filter-backend indexing")
    add_index_items_parser(index.add_subparsers(dest="index_command", required=True))


# Commands whose console is for a person (progress, results); library logs go to a file.
# The servers and batch jobs keep logging to stderr, where their supervisor collects it.
PERSON_FACING = ("data", "pipeline", "demo", "eval", "catalog")
# the ones that load TensorFlow, TFX and Beam
WITH_LOG_FILE = ("pipeline", "demo", "eval", "catalog")


def _add_console_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow / absl / Beam / TFX logs on the console too")
    parser.add_argument("--log-file", default="",
                        help="where library logs go (default: stars.log in the command's "
                             "--out or --root directory)")


def _default_log_file(args) -> str:
    if args.command not in WITH_LOG_FILE or getattr(args, "pipeline_command", "run") != "run":
        return ""  # compile only writes a spec: nothing to log, no file beside it
    where = getattr(args, "out", None) or getattr(args, "root", None)
    return os.path.join(where, "stars.log") if where and "://" not in where else ""


def _set_up_console(args) -> None:
    if args.command not in PERSON_FACING:
        console.setup(args.log_file or None, verbose=args.verbose, filtered=False)
        return
    log_file = console.setup(args.log_file or _default_log_file(args), verbose=args.verbose)
    if log_file and not args.verbose:
        print(f"stars: library logs in {log_file} (stars --verbose shows them here)",
              file=sys.stderr)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    early = argparse.ArgumentParser(add_help=False)
    _add_console_options(early)
    # before any subcommand's imports build a model or load TensorFlow (stars.environment)
    configure(verbose=early.parse_known_args(argv)[0].verbose)
    console.hold_until_setup()  # warnings of the imports below go where setup says
    args = build_parser().parse_args(argv)
    _set_up_console(args)
    try:
        return args.func(args)
    except ContractError as e:
        print(f"stars: bad input: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"stars: error: {e}", file=sys.stderr)
        return 2
    except (ConnectionError, OSError, RuntimeError) as e:  # a store or server unreachable
        print(f"stars: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
