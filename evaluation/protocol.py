"""What the offline evaluation runs and measures: the models, the cut-offs, what
``--quick`` shrinks, and the protocol as the results file records it (two runs' results
are merged only when their protocols agree, ``results.merge_results``)."""
from __future__ import annotations

import dataclasses
from typing import Tuple

KS: Tuple[int, ...] = (5, 10, 20)
K_MAX = max(KS)
COVERAGE_K = 10
COLD_K = 10
SLICE_K = 5
MAX_CATEGORY_SLICES = 50   # more categories than that (e.g. Beauty's attribute ids): no slice
CANDIDATE_SET_BUCKETS = ((1, 5), (6, 10), (11, 20), (21, 50), (51, None))
ALL_MODELS = ("popularity", "cooccurrence", "stars", "sasrec_id", "sasrec_plain", "lambdamart",
              "stars_no_text", "stars_no_tags", "stars_no_context", "stars_no_user")
# STARS with its second retrieval source (``models.successor_source``, what the ``cpu``
# and ``paper`` presets serve): the NI scores plus γ · log(1 + the co-occurrence count
# after the user's last three items), γ chosen on the validation target as the Trainer
# chooses it (0 = STARS alone).  Scored with every ``stars`` run, from the same trained
# model; a different product from the paper's single dot product (the count is a
# high-rank item-to-item signal), so it is its own row.
SECOND_SOURCE_MODEL = "stars_cooc"


@dataclasses.dataclass(frozen=True)
class QuickSettings:
    """What ``quick=True`` shrinks: small enough for CI on the tiny synthetic data."""
    preset: str = "tiny"
    epochs: int = 2
    max_users: int = 300            # users kept (seeded sample) before the data half
    lambdamart_trees: int = 40
    lambdamart_candidates: int = 50


QUICK = QuickSettings()


def protocol_record(num_items: int, test_examples: int, quick: bool, data_info: dict,
                    calendar_context_reason: str = "") -> dict:
    """The protocol of a run, as its results file records it."""
    return {
        "split": "leave_one_out by time: last event = test target, second-to-last = "
                 "validation target (early stopping / model selection), rest = training",
        "ranking": "full catalogue, brute-force dot products (no sampled negatives)",
        "masked": "items in the user's history excluded from the ranking (S3-Rec)",
        "unmasked": "nothing excluded",
        "ks": list(KS), "coverage_k": COVERAGE_K,
        "cold_start": f"Recall@{COLD_K} over test targets with zero training count",
        "rr": "round-robin interleaving of GI and NI, GI first",
        "calendar_context": calendar_context_reason,
        "num_items": num_items, "test_examples": test_examples,
        "quick": bool(quick), "data": {k: data_info.get(k) for k in ("sample", "fingerprint")},
    }
