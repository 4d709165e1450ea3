"""Results over several seeds: a model is judged on its mean, never on its best seed.

One training run moves by about ±1.5–3% of NDCG@10 with the seed on Beauty (BUILD_NOTES.md),
the size of several of the effects the benchmark checks.  ``stars eval --seed N`` adds a
seed's entries to the results file beside the others (``merge_results`` keys entries by
model and seed); the target checks and the report's mean table read ``mean_entries``.
"""
from __future__ import annotations

import json
from typing import Dict, List, Tuple

# Config fields that legitimately differ between two seeds of one model.
PER_RUN_FIELDS = ("seed", "training")


def settings(entry: dict) -> str:
    """The entry's configuration apart from the per-run fields (seed, training record);
    fields added to ModelConfig after the entry was recorded count at their defaults."""
    from models.config import completed
    config = completed(entry.get("config") or {})
    return json.dumps({k: v for k, v in config.items() if k not in PER_RUN_FIELDS},
                      sort_keys=True, default=str)


def _mean(values):
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != len(values):  # a missing or non-numeric value: keep the first
        return values[0]
    return sum(numbers) / len(numbers)


def _mean_block(blocks: List[dict]) -> dict:
    keys = dict.fromkeys(k for b in blocks for k in b)
    return {k: _mean([b.get(k) for b in blocks]) for k in keys}


def mean_entries(entries: List[dict]) -> List[dict]:
    """One entry per (model, variant): the masked, unmasked and validation figures
    averaged over its seeds, with ``seeds`` (sorted) and ``spread`` ({masked metric:
    [min, max]}).  A model run once passes through with ``seeds`` = [its seed]."""
    groups: Dict[Tuple[str, object], List[dict]] = {}
    for e in entries:
        groups.setdefault((e["model"], e.get("variant")), []).append(e)
    out = []
    for group in groups.values():
        group = sorted(group, key=lambda e: e.get("seed") or 0)
        first = group[0]
        merged = {**first, "seeds": [e.get("seed") for e in group]}
        if len(group) > 1:
            for block in ("masked", "unmasked"):
                merged[block] = _mean_block([e.get(block) or {} for e in group])
            validation = [(e.get("validation") or {}).get("masked") for e in group]
            if all(validation):
                merged["validation"] = {**(first.get("validation") or {}),
                                        "masked": _mean_block(validation)}
            merged["spread"] = {k: [min(e["masked"][k] for e in group),
                                    max(e["masked"][k] for e in group)]
                                for k in merged["masked"]
                                if all(isinstance(e["masked"].get(k), (int, float))
                                       for e in group)}
            merged["wall_s"] = _mean([e.get("wall_s") for e in group])
            merged.pop("slices", None)  # per-seed breakdowns are not averaged
        out.append(merged)
    return out


def several_seeds(entries: List[dict]) -> bool:
    return any(len(e["seeds"]) > 1 for e in mean_entries(entries))
