"""The Markdown report of the offline evaluation: the result tables, the mean over seeds,
the published Beauty figures, the slices, PNG plots and the choices made in training.
It reports figures; judging them against targets is the benchmark's
(``benchmarks/quality_targets.py``, a ``sections`` entry)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from evaluation import seed_means
from evaluation.protocol import SECOND_SOURCE_MODEL, SLICE_K

# Published full-ranking, history-masked results on Amazon Beauty (shared/data/README.md).
PUBLISHED_BEAUTY = (
    ("SASRec (as reported by S3-Rec)", "0.0605", "0.0318"),
    ("BERT4Rec", "0.0347", "0.0170"),
    ("S3-Rec", "0.0647", "0.0327"),
    ("TIGER (Table 1)", "0.0648", "0.0384"),
    ("SASRec, full cross-entropy (reimplementations)", "~0.081-0.086", "~0.046-0.050"),
)


def _chosen(selection: Optional[dict]) -> str:
    """A choice made after training (``config.training``): what was kept, "–" where the
    model has no such part, "off" where it was tried and 0 / None won."""
    if not selection:
        return "–"
    return "off" if selection.get("chosen") in (None, 0, 0.0) else str(selection["chosen"])


def fmt(value, digits: int = 4) -> str:
    """A figure as the report prints it: "–" for none, floats to ``digits`` places."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def entry_label(entry: dict, seeds: bool = True) -> str:
    """"stars NI"; ", N seeds" added for an entry averaged over N seeds."""
    label = entry["model"] + (f" {entry['variant'].upper()}" if entry.get("variant") else "")
    n = len(entry.get("seeds") or [])
    return label + (f", {n} seeds" if seeds and n > 1 else "")


def _plots(document: dict, stem: Path) -> Tuple[List[Tuple[str, str]], str]:
    """PNG bar charts next to the report: [(title, file name)], and the renderer used."""
    from evaluation import plots
    entries = document["results"]
    charts = []
    for key, title in (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10")):
        bars = [(entry_label(e), e["masked"].get(key) or 0.0, e["unmasked"].get(key) or 0.0)
                for e in seed_means.mean_entries(entries)]  # one bar per model, not per seed
        name = f"{stem.name}_{key.replace('@', '')}.png"
        if plots.grouped_bars(stem.parent / name, f"{title} (full catalogue)", bars,
                              ("masked", "unmasked")):
            charts.append((f"{title}, masked vs unmasked", name))
    best = _headline(entries)
    if best is not None:
        for slice_name, title in (("category", f"Hit@{SLICE_K} per target category"),
                                  ("candidate_set_size",
                                   f"Hit@{SLICE_K} by candidate-set size")):
            rows = best.get("slices", {}).get(slice_name)
            if not rows:
                continue
            bars = [(name, v[f"hit@{SLICE_K}"], None) for name, v in rows.items()]
            name = f"{stem.name}_{slice_name}.png"
            if plots.grouped_bars(stem.parent / name, f"{title} ({entry_label(best)})", bars,
                                  ("masked",)):
                charts.append((title, name))
    return charts, plots.renderer()


def _headline(entries: List[dict]) -> Optional[dict]:
    """STARS' best variant of its first seed (the slices are one run's breakdown; picking
    the best seed would flatter them)."""
    stars_entries = [e for e in entries if e["model"] == "stars"]
    if not stars_entries:
        return None
    first = min(e.get("seed") or 0 for e in stars_entries)
    return max((e for e in stars_entries if (e.get("seed") or 0) == first),
               key=lambda e: e["masked"].get("hr@10") or 0.0)


def write_report(document: dict, path, wall_s: Optional[float] = None,
                 notes: Sequence[str] = (),
                 sections: Sequence[Callable[[dict], List[str]]] = ()) -> str:
    """Markdown report (tables + PNG plots when a renderer is available).  ``sections``:
    more Markdown lines from the document, placed after the result tables (the
    benchmark's target checks, ``benchmarks/quality_targets.py``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries, protocol = document["results"], document["protocol"]
    lines = [f"# Offline quality: {document['dataset']}", ""]
    lines += [f"- split: {protocol['split']}", f"- ranking: {protocol['ranking']}",
              f"- masked: {protocol['masked']}; unmasked beside it",
              f"- catalogue: {protocol['num_items']} items; test examples: "
              f"{fmt(protocol['test_examples'])}; quick mode: {protocol['quick']}",
              f"- cold start: {protocol['cold_start']}", f"- RR: {protocol['rr']}"]
    if protocol.get("calendar_context"):
        lines.append(f"- {protocol['calendar_context']}")
    if wall_s is not None:
        lines.append(f"- wall time of this run: {wall_s:.0f} s ({os.cpu_count()} CPU cores)")
    lines.append("")
    header = ["model", "seed", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "Cov@10",
              "cold R@10 (n)", "HR@10 unmasked", "NDCG@10 unmasked", "val HR@10", "wall s"]
    lines += ["## Test split (masked unless stated)", "", "| " + " | ".join(header) + " |",
              "|" + "---|" * len(header)]
    for e in entries:
        m, u = e["masked"], e["unmasked"]
        val = (e.get("validation") or {}).get("masked", {}).get("hr@10")
        lines.append("| " + " | ".join([
            entry_label(e), fmt(e.get("seed")), fmt(m["hr@5"]), fmt(m["ndcg@5"]),
            fmt(m["hr@10"]), fmt(m["ndcg@10"]), fmt(m["hr@20"]), fmt(m["ndcg@20"]),
            fmt(m.get("coverage@10")),
            f"{fmt(m.get('cold_start_recall@10'))} ({m.get('cold_start_examples', 0)})",
            fmt(u["hr@10"]), fmt(u["ndcg@10"]), fmt(val), fmt(e.get("wall_s"), 0)]) + " |")
    lines.append("")
    walls = [e.get("wall_s") or 0.0 for e in entries if e.get("variant") in (None, "ni")]
    lines += [f"Sum of the models' wall times: {sum(walls):.0f} s (data half not included).",
              ""]
    if seed_means.several_seeds(entries):
        lines += ["## Mean over seeds (what the targets compare)", "",
                  "| model | seeds | HR@5 | HR@10 | NDCG@10 | NDCG@10 min–max | val NDCG@10 |",
                  "|---|---|---|---|---|---|---|"]
        for e in seed_means.mean_entries(entries):
            m, spread = e["masked"], e.get("spread", {}).get("ndcg@10")
            val = (e.get("validation") or {}).get("masked", {}).get("ndcg@10")
            lines.append(f"| {entry_label(e, seeds=False)} | "
                         f"{', '.join(str(s) for s in e['seeds'])}"
                         f" | {fmt(m['hr@5'])} | "
                         f"{fmt(m['hr@10'])} | {fmt(m['ndcg@10'])} | "
                         f"{'–' if not spread else fmt(spread[0]) + '–' + fmt(spread[1])} | "
                         f"{fmt(val)} |")
        lines.append("")
    for section in sections:
        lines += section(document)
    if "beauty" in document["dataset"].lower():
        lines += ["## Published full-ranking results on Beauty (masked)", "",
                  "| model | HR@10 | NDCG@10 |", "|---|---|---|"]
        lines += [f"| {n} | {h} | {g} |" for n, h, g in PUBLISHED_BEAUTY]
        lines += ["", "Numbers from 99-sampled-negative protocols are not comparable.", ""]
    best = _headline(entries)
    if best is not None and best.get("slices"):
        lines += [f"## Slices ({entry_label(best)}, test split)", ""]
        for slice_name, rows in best["slices"].items():
            lines += [f"### Hit@{SLICE_K} by {slice_name.replace('_', ' ')}", "",
                      f"| {slice_name} | Hit@{SLICE_K} | n |", "|---|---|---|"]
            lines += [f"| {k} | {fmt(v[f'hit@{SLICE_K}'])} | {v['n']} |"
                      for k, v in rows.items()]
            lines.append("")
        note = "Category slices rank the full catalogue (masked)."
        if "candidate_set_size" in best["slices"]:
            note += (" Candidate-set slices rank the items shown on the target's page (Hit@5 "
                     "is 1 by construction for sets of at most 5 items).")
        lines += [note, ""]
    charts, renderer = _plots(document, path.with_suffix(""))
    if charts:
        lines += ["## Plots", ""] + [f"![{t}]({n})" for t, n in charts] + [""]
        lines.append(f"(plots drawn with {renderer})")
    else:
        lines.append("(no plots: neither matplotlib nor Pillow is installed)")
    lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Training details", "",
              "| model | seed | epochs run / max | best epoch | semantic match η (validation) "
              "| cold-item quantile | train s |", "|---|---|---|---|---|---|---|"]
    sources = []
    for e in entries:
        t = e.get("config", {}).get("training")
        if t and t.get("second_source"):  # stars' own training, listed under stars
            sources.append(e)
        elif t and e.get("variant") in ("ni",):
            lines.append(f"| {e['model']} | {fmt(e.get('seed'))} | "
                         f"{t['epochs_run']} / {t['epochs_max']} | "
                         f"{t['best_epoch']} | {_chosen(t.get('semantic_match'))} | "
                         f"{_chosen(t.get('cold_item_norm'))} | {t['train_s']} |")
    if sources:
        lines += ["", f"## Second source ({SECOND_SOURCE_MODEL}: the same seed's stars model)",
                  "", sources[0]["config"]["training"]["second_source"]["scores"] + ".", "",
                  "| seed | weight kept | validation NDCG@10 by weight |", "|---|---|---|"]
        for e in sources:
            source = e["config"]["training"]["second_source"]
            tried = ", ".join(f"{w}: {fmt(v)}" for w, v in source["val_ndcg@10"].items())
            lines.append(f"| {fmt(e.get('seed'))} | {source['weight']} | {tried} |")
    path.write_text("\n".join(lines) + "\n")
    return str(path)
