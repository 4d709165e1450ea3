"""Offline evaluation, the ``stars eval`` command: its run and its command line.

``make bench-quality`` (``benchmarks/quality.py``) runs the same and adds the quality
targets to the report (``benchmarks/quality_targets.py``).  The engine, one concept a
module: ``protocol`` (models, cut-offs, ``--quick``), ``splits`` (the data half and its
splits), ``ranking`` (full-catalogue ranking, metric blocks), ``training`` (the trained
models), ``baselines`` (popularity, co-occurrence, LambdaMART: ``cooccurrence``,
``lambdamart``), ``results`` (the merged results file, ``seed_means``) and ``report``
(Markdown and ``plots``).

Trains and evaluates every model in ONE harness on ONE split, with the standard
protocol of the sequential-recommendation literature (see
``shared/data/README.md``):

* **Split**: leave-one-out by time (``PipelineConfig(split_mode="leave_one_out")``):
  per user the last event is the test target, the one before it the validation
  target, the rest training.  The data half of the TFX pipeline
  (CatalogExampleGen, ItemEnricher, Transform) produces the splits under
  ``<out_dir>/pipeline``; it is run once and reused.
* **Training**: the same code as the TFX Trainer (``models.trainer``).  Early
  stopping and model selection use the validation target only: after every
  epoch the whole catalogue is ranked for each validation example
  (``models.validation_ranking.ValidationRanking``) and the epoch with the best masked
  NDCG@10 is kept (best weights restored).  The TEST split is opened once per
  model, after training, and only scored.
* **Ranking**: the FULL catalogue (no sampled negatives): brute-force dot
  products of the user embeddings (``StarsModel.user_embeddings``: h_gen = GI,
  h_next = NI) with every item embedding (``item_embeddings()``), in chunks;
  RR is the round-robin interleaving of GI and NI (GI first, as the pipeline's
  evaluator).  **Masked** = the items already in the user's history are
  excluded from the ranking (as the S3-Rec evaluation code does);
  **unmasked** = nothing excluded; both are reported.
* **Metrics**: HR@K, NDCG@K and Recall@K for K = 5, 10, 20 (one target per
  user: Recall@K = HR@K), MRR (within the top 20), Coverage@10 (share of the
  catalogue in at least one top-10 list), and cold-start Recall@10: the test
  examples whose target item has no training interaction (first seen after
  the user's training events -- in leave-one-out there is no global cut).
* **Baselines**: ``popularity`` (training counts, the Transform's
  ``item_popularity`` vocabulary), ``sasrec_id`` (STARS with its semantic
  parts, text and tags, off and a full-catalogue cross-entropy: an ID-only
  SASRec-style model with STARS' other parts), ``sasrec_plain`` (SASRec as
  published: item IDs and positions only),
  ``cooccurrence`` (that generator alone: items that followed the user's last
  three items in training sequences, popularity filling in -- no learning, so it
  also shows how far the validation and test targets differ by themselves),
  ``lambdamart`` (LightGBM lambdarank over the top-100 candidates of that
  popularity + co-occurrence generator, see :mod:`evaluation.lambdamart`;
  skipped with a note when ``lightgbm`` is not installed) and the paper's
  ablations (``stars_no_text``, ``stars_no_tags``, ``stars_no_context``,
  ``stars_no_user``).  Every ``stars`` run also scores ``stars_cooc``: the same trained
  model's NI scores plus a weighted log co-occurrence count, a second retrieval source
  (weight chosen on the validation target; its own row, not the paper's model).
* **Slices** (data with categories and impressions, i.e. the synthetic data):
  Hit@5 per category of the test target (full-catalogue ranking, masked), and
  Hit@5 within the candidate set the user was shown (the target event's page),
  by candidate-set size bucket.

Output: a results JSON (merged per model: a later run replaces the entries
of the models it ran and keeps the others, when dataset and protocol agree)
and a Markdown report with PNG plots (matplotlib when installed, otherwise a
small Pillow renderer; tables only when neither is available).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable, List, Mapping, Optional, Sequence

from evaluation.baselines import (
    evaluate_cooccurrence,
    evaluate_lambdamart,
    evaluate_popularity,
)
from evaluation.protocol import ALL_MODELS, QUICK, protocol_record
from evaluation.report import entry_label, fmt, write_report
from evaluation.results import merge_results
from evaluation.splits import EvalContext, pipeline_root, prepare_data
from evaluation.training import model_config, train_and_evaluate
from models import calendar_context as CC
from stars.console import progress

log = logging.getLogger(__name__)

NO_USER_FEATURES = ("the data has no user features, so stars runs without the [USER] token "
                    "(models.trainer.fit_user_token)")
# Ablations of a part the data can switch off in stars itself: (the config fields that
# make up the part, why n/a when stars runs with all of them off).
SWITCHED_OFF_BY_DATA = {
    "stars_no_context": (("use_context", "item_trend"),
                         "stars itself runs without calendar context or item trend on this data"),
    "stars_no_user": (("use_user_token",), "stars itself runs without a [USER] token on this "
                                           "data: it has no user features"),
}


def _has_dynamic_context(preset: str, quick: bool, overrides: Optional[Mapping]) -> bool:
    """Whether stars runs with a part of the "− dynamic context" ablation: calendar
    context (data-decided) or the item trend."""
    config = model_config("stars", preset, 0, quick, overrides)
    return any(getattr(config, f) for f in SWITCHED_OFF_BY_DATA["stars_no_context"][0])


def _has_user_features(ctx: EvalContext) -> bool:
    from models.trainer import has_user_features
    return has_user_features(ctx.meta)


def run_offline_eval(data_dir, out_dir, models: Iterable[str] = ALL_MODELS, quick: bool = False,
                     preset: str = "benchmark", seed: int = 0, encoder: str = "minilm",
                     overrides: Optional[Mapping] = None, results_path=None, report_path=None,
                     dataset: Optional[str] = None, tagger: str = "keyword",
                     context: str = "auto",
                     seeds: Optional[Sequence[int]] = None,
                     report_sections: Sequence[Callable[[dict], List[str]]] = ()) -> dict:
    """Data half (leave-one-out) -> each model trained and scored -> results JSON + report.

    ``seeds`` (default: ``seed`` alone) scores every model once per seed; the targets then
    compare each model's mean (``seed_means``).  ``seed`` also draws the quick-mode users.

    Returns the results document (``{"dataset", "protocol", "results"}``) with
    ``"paths"`` (results, report), ``"skipped"`` ({model: reason}) and ``"wall_s"``.
    ``context`` (auto | on | off) decides the STARS models' calendar context
    (``models.calendar_context``); with it and the item trend off, ``stars_no_context``
    would repeat ``stars`` and is not run (its earlier entries are dropped).  Likewise
    ``stars_no_user`` on data without user features, where STARS has no [USER] token
    (``models.trainer.fit_user_token``).
    ``report_sections`` go into the report after its result tables (``report.write_report``).
    """
    started = time.time()
    models = list(dict.fromkeys(models))
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(ALL_MODELS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = Path(results_path or out_dir / "quality.json")
    report_path = Path(report_path or results_path.with_suffix(".md"))
    dataset = dataset or Path(os.path.abspath(data_dir)).name
    if quick:
        preset = QUICK.preset
    data_info = prepare_data(data_dir, out_dir, quick=quick, encoder=encoder, tagger=tagger,
                             seed=seed)
    use_context, context_reason = CC.calendar_context(data_info.get("source_dir") or data_dir,
                                                   context)
    ctx = EvalContext(str(pipeline_root(out_dir, quick)))
    entries, skipped, notes = [], {}, [context_reason]

    def skip(name: str, reason: str, note: str) -> None:
        """Once per model, whatever the number of seeds."""
        if name not in skipped:
            skipped[name] = reason
            notes.append(f"{name} {note}: {reason}")

    runs = [(name, s) for s in dict.fromkeys(seeds if seeds else [seed]) for name in models]
    bar = progress(runs, desc="models", unit="model")
    for name, seed in bar:
        bar.set_description(f"{name} (seed {seed})")
        log.info("offline eval: %s (seed %d)", name, seed)
        if name == "popularity":
            entries += evaluate_popularity(ctx, seed)
        elif name == "cooccurrence":
            entries += evaluate_cooccurrence(ctx, seed)
        elif name == "lambdamart":
            from evaluation import lambdamart
            if lambdamart.available():
                entries += evaluate_lambdamart(ctx, seed, quick)
            else:
                skip(name, "lightgbm is not installed (pip install lightgbm)", "skipped")
        elif name == "stars_no_context" and not _has_dynamic_context(
                preset, quick, CC.context_overrides("stars", use_context, overrides)):
            skip(name, f"the same model as stars here ({context_reason}; no item trend)",
                 "not run")
        elif name == "stars_no_user" and not _has_user_features(ctx):
            skip(name, f"the same model as stars here ({NO_USER_FEATURES})", "not run")
        else:
            entries += train_and_evaluate(ctx, name, preset, seed, quick,
                                          CC.context_overrides(name, use_context, overrides))
    test_examples = next((e["masked"]["num_examples"] for e in entries), None)
    protocol = protocol_record(ctx.num_items, test_examples, quick, data_info, context_reason)
    document = merge_results(results_path, dataset, protocol, entries, dropped=skipped)
    wall = round(time.time() - started, 1)
    if data_info.get("wall_s") and not data_info.get("reused"):
        notes.append(f"data half (leave-one-out, encoder {encoder}): {data_info['wall_s']} s")
    write_report(document, report_path, wall_s=wall, notes=notes, sections=report_sections)
    return {**document, "paths": {"results": str(results_path), "report": str(report_path)},
            "skipped": skipped, "wall_s": wall, "data": data_info}


# ----------------------------------------------------------------------------------------
# command line (``stars eval``; ``python -m benchmarks.quality`` adds the quality targets)
# ----------------------------------------------------------------------------------------

def default_dataset_name(data_dir) -> str:
    """``out/beauty/data`` -> ``beauty``; ``/x/amazon-beauty`` -> ``amazon-beauty``."""
    path = Path(os.path.abspath(data_dir))
    return path.parent.name if path.name in ("data", "data-quick") else path.name


def add_arguments(parser) -> None:
    """The options of ``stars eval`` / ``benchmarks.quality`` on an argparse parser."""
    parser.add_argument("--data-dir", required=True, help="data directory in the contract "
                        "(e.g. from `stars data import-amazon`)")
    parser.add_argument("--out", default="out/quality",
                        help="work directory: <out>/pipeline holds the leave-one-out data half "
                             "(reused when present)")
    parser.add_argument("--results", default="",
                        help="results JSON (default benchmarks/results/quality_<dataset>.json); "
                             "entries of the models run replace earlier ones")
    parser.add_argument("--report", default="", help="Markdown report (default: the results "
                        "path with .md; PNG plots beside it)")
    parser.add_argument("--dataset", default="", help="dataset name in the results "
                        "(default from --data-dir)")
    parser.add_argument("--models", default=",".join(ALL_MODELS),
                        help=f"comma-separated subset of {','.join(ALL_MODELS)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"CI size: preset {QUICK.preset}, {QUICK.epochs} epochs, "
                             f"at most {QUICK.max_users} users")
    parser.add_argument("--preset", default="benchmark",
                        help="model preset (models.config.PRESETS): benchmark | cpu | paper | tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default="",
                        help="comma-separated seeds (e.g. 0,1,2): every model is trained and "
                             "scored once per seed and the targets compare its mean")
    parser.add_argument("--encoder", default="minilm", help="item text encoder of the data half")
    parser.add_argument("--tagger", default="keyword")
    parser.add_argument("--context", default="auto", choices=CC.CHOICES,
                        help="calendar context of the STARS models: auto = on only when the "
                             "timestamps tell the time of day (off for day-granular review "
                             "dates)")
    parser.add_argument("--overrides", default="",
                        help='JSON of ModelConfig fields for every model, with optional '
                             'per-model dicts: \'{"epochs": 30, "sasrec_id": {"dropout": 0.5}}\'')


def parse_seeds(text: str) -> Optional[List[int]]:
    """``"0,1,2"`` -> [0, 1, 2]; "" -> None (the single ``--seed``)."""
    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    try:
        seeds = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers, got {text!r}") from None
    return seeds or None


def run_from_args(args, report_sections: Sequence[Callable[[dict], List[str]]] = ()) -> dict:
    dataset = args.dataset or default_dataset_name(args.data_dir)
    results = args.results or os.path.join("benchmarks", "results", f"quality_{dataset}.json")
    return run_offline_eval(
        args.data_dir, args.out, models=[m.strip() for m in args.models.split(",") if m.strip()],
        quick=args.quick, preset=args.preset, seed=args.seed, seeds=parse_seeds(args.seeds),
        encoder=args.encoder, tagger=args.tagger, context=args.context,
        overrides=json.loads(args.overrides) if args.overrides else None,
        results_path=results, report_path=args.report or None, dataset=dataset,
        report_sections=report_sections)


def summary_lines(document: dict) -> List[str]:
    """One line per result entry, for the console."""
    lines = []
    for e in document["results"]:
        m, u = e["masked"], e["unmasked"]
        lines.append(f"{entry_label(e):24s} masked HR@10 {fmt(m['hr@10'])} NDCG@10 "
                     f"{fmt(m['ndcg@10'])} | unmasked HR@10 {fmt(u['hr@10'])} NDCG@10 "
                     f"{fmt(u['ndcg@10'])} | cov@10 {fmt(m.get('coverage@10'))} | "
                     f"{fmt(e.get('wall_s'), 0)} s")
    return lines
