"""Pipeline scale benchmark: wall time and peak memory of every component as the data grows.

    python -m benchmarks.pipeline_scale [--sizes small,demo,medium]
        [--model-sizes small,demo,medium] [--encoder minilm] [--epochs 1]
        [--work out/bench-pipeline] [--out benchmarks/results/pipeline_scale.json]

Each size runs in a fresh child process, so every run starts from the same memory floor:
synthetic data (``stars data synth``: small 2k users / 800 items, demo 4k / 1.5k, medium
100k / 20k), then the pipeline with caching off -- the whole pipeline at ``--model-sizes``,
the data half at the others. A sampler thread reads the resident memory of the process and
its children (Beam workers, the Evaluator's scoring child) every 0.1 s. A component's
``peak_mb`` is the highest sample while it ran, ``growth_mb`` that less the memory when it
started (what the component itself held). Per component, the growth exponent ``b`` is the
least-squares slope of log(wall time) on log(events) over the sizes it ran at; ``b_memory``
the same for ``growth_mb``. Targets (issue "beyond one machine"): b <= 1.1 unless the
algorithm needs more; memory of streaming steps bounded by chunk sizes (b_memory near 0);
the data half at the largest size within 30 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from benchmarks.report import command_line, machine, write_results
from stars.environment import configure

DATA_HALF_TARGET_S = 30 * 60
MAX_EXPONENT = 1.1
# A step that streams holds chunks and batches (100k rows, 256 items, 1,024 examples): well
# under this at any size; the largest size's growth above it is data held in memory.
MEMORY_GROWTH_LIMIT_MB = 500
_SAMPLE_S = 0.1


def _tree_rss_mb(process) -> float:
    import psutil
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a child that just exited
            pass
    return total / 2 ** 20


class ComponentCosts(logging.Handler):
    """Hears LocalDagRunner's "Component X is running / finished" records (through the local
    runner's ``monitors``) and samples the process tree's memory while each component runs."""

    def __init__(self):
        import psutil

        super().__init__(logging.INFO)
        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._current: Optional[dict] = None
        self.costs: Dict[str, dict] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_S):
            rss = _tree_rss_mb(self._process)
            with self._lock:
                if self._current is not None:
                    self._current["peak_mb"] = max(self._current["peak_mb"], rss)

    def emit(self, record: logging.LogRecord) -> None:
        from pipeline.runners.local import FINISHED, RUNNING, component_event
        event = component_event(record)
        if event is None or event[0] not in (RUNNING, FINISHED):
            return
        what, name = event
        rss = _tree_rss_mb(self._process)
        with self._lock:
            if what == RUNNING:
                self._current = {"name": name, "started": time.perf_counter(),
                                 "start_mb": rss, "peak_mb": rss}
            elif self._current is not None and self._current["name"] == name:
                current, self._current = self._current, None
                peak = max(current["peak_mb"], rss)
                self.costs[name] = {
                    "wall_s": round(time.perf_counter() - current["started"], 2),
                    "peak_mb": round(peak, 1),
                    "growth_mb": round(peak - current["start_mb"], 1)}

    def close(self) -> None:
        self._stop.set()
        self._sampler.join()
        super().close()


def _count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f) - 1


def run_size(size: str, work: str, encoder: str, epochs: int, train_model: bool,
             seed: int) -> dict:
    """One size, in this process: data, then the pipeline under ``ComponentCosts``."""
    configure()
    from pipeline.configs import PipelineConfig
    from pipeline.pipeline import data_components
    from pipeline.runners import local
    from stars.data import synth
    base = Path(work) / size
    data = base / "data"
    if not (data / "interactions.csv").is_file():
        synth.generate(data, size, seed=seed)
    root = base / ("pipeline" if train_model else "pipeline-data-half")
    shutil.rmtree(root, ignore_errors=True)  # a fresh run: no earlier blessed model to score
    config = PipelineConfig(
        data_dir=str(data), pipeline_root=str(root), encoder=encoder, enable_cache=False,
        train_model=train_model, model_overrides=json.dumps({"epochs": epochs}),
        min_recall_vs_popularity=0.0, min_index_recall=0.0)
    costs = ComponentCosts()
    started = time.perf_counter()
    try:
        local.run(config, monitors=[costs])
    finally:
        costs.close()
    data_half = {node.id for node in data_components(config)}
    return {"size": size, "users": _count_rows(data / "users.csv"),
            "items": _count_rows(data / "items.csv"),
            "events": _count_rows(data / "interactions.csv"),
            "pipeline": "whole" if train_model else "data half",
            "wall_s": round(time.perf_counter() - started, 1),
            "data_half_s": round(sum(c["wall_s"] for name, c in costs.costs.items()
                                     if name in data_half), 1),
            "components": costs.costs}


def _in_child(queue, *args) -> None:
    try:
        queue.put(run_size(*args))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        queue.put({"error": repr(e)})
        raise


def _run_in_child(*args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(queue, *args))
    child.start()
    result = queue.get()
    child.join()
    if "error" in result:
        raise RuntimeError(f"size {args[0]}: {result['error']}")
    return result


def slope(xs: List[float], ys: List[float]) -> Optional[float]:
    """Least-squares slope of log y on log x; None with fewer than two usable points."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    var = sum((p[0] - mx) ** 2 for p in points)
    if var == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / var


def growth(runs: List[dict]) -> Dict[str, dict]:
    """Per component: the exponents over the sizes it ran at (the largest run per size)."""
    names: Dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run["components"]))
    out = {}
    for name in names:
        seen = [r for r in runs if name in r["components"]]
        events = [r["events"] for r in seen]
        b = slope(events, [r["components"][name]["wall_s"] for r in seen])
        b_memory = slope(events, [max(r["components"][name]["growth_mb"], 1.0) for r in seen])
        out[name] = {"sizes": [r["size"] for r in seen],
                     "b": None if b is None else round(b, 2),
                     "b_memory": None if b_memory is None else round(b_memory, 2),
                     "within_target": None if b is None else b <= MAX_EXPONENT}
    return out


def targets(runs: List[dict], fits: Dict[str, dict]) -> dict:
    """The issue's targets: time exponents, memory at the largest size, data-half time."""
    largest = max(runs, key=lambda r: r["events"])
    return {"max_exponent": MAX_EXPONENT,
            "above_linear": sorted(n for n, f in fits.items() if f["within_target"] is False),
            "largest_size": largest["size"],
            "memory_growth_limit_mb": MEMORY_GROWTH_LIMIT_MB,
            "memory_growth_above_limit": {
                name: cost["growth_mb"] for name, cost in largest["components"].items()
                if cost["growth_mb"] > MEMORY_GROWTH_LIMIT_MB},
            "largest_data_half_s": largest["data_half_s"],
            "data_half_target_s": DATA_HALF_TARGET_S}


def markdown(document: dict) -> str:
    runs = document["runs"]
    lines = [f"# Pipeline scale ({document['started_at'][:10]})", "",
             f"Command: `{document['command']}`", "",
             f"Settings: {json.dumps(document['settings'])}; machine: "
             f"{json.dumps(document['machine'])}.", "",
             "| size | pipeline | users | items | events | wall s | data half s |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['size']} | {r['pipeline']} | {r['users']} | {r['items']} | "
                     f"{r['events']} | {r['wall_s']} | {r['data_half_s']} |")
    header = " | ".join(f"{r['size']} ({r['pipeline']}) s / peak MB / growth MB" for r in runs)
    lines += ["", f"| component | {header} | b (time) | b (memory) |",
              "|---|" + "---|" * (len(runs) + 2)]
    for name, fit in document["growth"].items():
        cells = []
        for r in runs:
            c = r["components"].get(name)
            cells.append(f"{c['wall_s']} / {c['peak_mb']:.0f} / {c['growth_mb']:.0f}"
                         if c else "-")
        lines.append(f"| {name} | {' | '.join(cells)} | {fit['b']} | {fit['b_memory']} |")
    targets = document["targets"]
    lines += ["", "| target | measured | |", "|---|---|---|",
              f"| every component b <= {MAX_EXPONENT} | above: "
              f"{targets['above_linear'] or 'none'} | "
              f"{'reached' if not targets['above_linear'] else 'missed'} |",
              f"| memory held by a step at the largest size <= "
              f"{MEMORY_GROWTH_LIMIT_MB} MB (bounded by chunks, not data) | above: "
              f"{targets['memory_growth_above_limit'] or 'none'} | "
              f"{'reached' if not targets['memory_growth_above_limit'] else 'missed'} |",
              f"| data half at the largest size <= {DATA_HALF_TARGET_S // 60} min | "
              f"{targets['largest_data_half_s']} s | "
              f"{'reached' if targets['largest_data_half_s'] <= DATA_HALF_TARGET_S else 'missed'}"
              " |"]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,demo,medium",
                        help="synthetic sizes for the data half")
    parser.add_argument("--model-sizes", default="small,demo,medium",
                        help="sizes at which the whole pipeline runs (Trainer onwards too)")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="out/bench-pipeline")
    parser.add_argument("--out", default="benchmarks/results/pipeline_scale.json")
    return parser


def main(argv=None) -> int:
    configure()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    split = lambda text: [s.strip() for s in text.split(",") if s.strip()]  # noqa: E731
    model_sizes = split(args.model_sizes)
    runs: List[dict] = []
    for size in split(args.sizes):
        runs.append(_run_in_child(size, args.work, args.encoder, args.epochs,
                                  size in model_sizes, args.seed))
        print(json.dumps(runs[-1], indent=1), flush=True)
    fits = growth(runs)
    document = {
        "benchmark": "pipeline_scale",
        "command": command_line("bench-pipeline", "BENCH_PIPELINE_ARGS", argv),
        "started_at": started, "machine": machine(),
        "settings": {"encoder": args.encoder, "model_preset": "cpu", "epochs": args.epochs,
                     "cache": False, "seed": args.seed, "sample_s": _SAMPLE_S},
        "runs": runs, "growth": fits,
        "targets": targets(runs, fits)}
    print(write_results(args.out, document, markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
