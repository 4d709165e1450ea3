"""Calendar context only where the data carries it: one decision for ``stars eval`` and
``stars pipeline run``.

Calendar context (per-event hour / weekday / week / holiday encodings and the
request-time offset Δ_ctx) describes *when* a shopper acts.  Timestamps that all
fall on one second of the day are dates, such as Amazon's review dates, which
mark when a review was written: on Beauty, context from them lowered NDCG@10 on
the validation target (0.0617 without, 0.0562 with; BUILD_NOTES.md).  ``auto``
therefore keeps context only when the timestamps tell the time of day.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

CHOICES = ("auto", "on", "off")


def calendar_context(source_dir, choice: str = "auto") -> Tuple[bool, str]:
    """Whether the STARS models use calendar context on this data, and why.

    ``auto`` keeps it only when the interactions' timestamps tell the time of day
    (``models.calendar.carries_time_of_day``); ``on``/``off`` force it."""
    if choice not in CHOICES:
        raise ValueError(f"--context must be one of {CHOICES}, not {choice!r}")
    if choice != "auto":
        return choice == "on", f"calendar context {choice} (--context {choice})"
    from models import calendar
    from stars.data import contract
    table = contract.TABLES["interactions"]
    path = contract.find_table_file(source_dir, table)  # ContractError when missing
    stamps = contract.read_whole_table(path, table)["timestamp"]
    if calendar.carries_time_of_day(stamps.to_numpy()):
        return True, "calendar context on: the timestamps tell the time of day"
    return False, ("calendar context off: every timestamp falls on the same second of its "
                   "day (day-granular dates, e.g. review dates, not the time of the purchase)")


def context_overrides(variant: str, use_context: bool, overrides: Optional[Mapping]) -> dict:
    """``overrides`` with the calendar-context decision for ``variant``, unless the
    variant's ablation switches context itself or the caller set ``use_context``."""
    from models.config import ABLATIONS
    overrides = dict(overrides or {})
    mine = overrides.get(variant) if isinstance(overrides.get(variant), Mapping) else {}
    if "use_context" in ABLATIONS.get(variant, {}) or "use_context" in overrides or \
            "use_context" in (mine or {}):
        return overrides
    return {**overrides, "use_context": use_context}
