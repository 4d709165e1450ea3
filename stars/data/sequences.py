"""Per-user chronological sequences and the train/eval(/test) split.

One example is one user's history (oldest first) and the target(s) that follow
it.  Every split has the same features, so one schema describes them all:

* history, one value per event: ``item_id``, ``timestamp``, ``event_type``,
  ``session_id``, ``page_id``, ``region``, and the page's shown items flattened
  into ``page_item_id`` with per-event counts in ``page_item_count`` (the
  same-page negative pool; the model drops the clicked items itself);
* target: ``target_item_id`` (the next item first, then later ones for
  Recall@K in the time split) and the request context of the first target:
  ``target_timestamp``, ``target_event_type``, ``target_page_id``,
  ``target_region``, ``target_page_item_id`` (the candidate set shown);
* the user: ``user_id``, ``user_num_<name>`` (0 or 1 float), ``user_cat_<name>``.
  Events without a region take the user's ``region`` feature when there is one.

Split modes:

* ``time``: a global cut time; events before it are training data, a user's
  events after it are that user's eval targets, with everything before the cut
  as history.  No information from after the cut reaches training.
* ``leave_one_out``: per user, the last event is the test target, the one
  before it the eval (validation) target, the rest training (the standard
  protocol of the sequential-recommendation literature).

Long training histories are cut into windows of ``max_history + 1`` events that
overlap by one, so every event is a training target exactly once and no event
is dropped.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence

SPLIT_MODES = ("time", "leave_one_out")
USER_REGION_FEATURE = "region"  # users-table column that gives events a default region


class Event(NamedTuple):
    timestamp: int
    sequence_number: int
    item_id: str
    event_type: str
    session_id: str
    page_id: str
    region: str
    page_items: tuple = ()


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How interactions become train/eval(/test) examples."""
    mode: str = "time"
    eval_fraction: float = 0.1      # time mode: share of events after the cut
    cut_timestamp: Optional[int] = None  # time mode: overrides eval_fraction
    max_history: int = 200
    max_targets: int = 20

    def __post_init__(self):
        if self.mode not in SPLIT_MODES:
            raise ValueError(f"split mode must be one of {SPLIT_MODES}, got {self.mode!r}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in (0, 1)")
        if self.max_history < 1 or self.max_targets < 1:
            raise ValueError("max_history and max_targets must be positive")

    @property
    def split_names(self) -> list:
        return ["train", "eval"] if self.mode == "time" else ["train", "eval", "test"]


def cut_time(timestamps: Iterable[int], config: SplitConfig) -> int:
    """The time-split cut: events at or after it are held out."""
    if config.cut_timestamp is not None:
        return int(config.cut_timestamp)
    ordered = sorted(timestamps)
    if not ordered:
        raise ValueError("no interactions: cannot place a time cut")
    index = min(len(ordered) - 1, int(math.floor(len(ordered) * (1 - config.eval_fraction))))
    return int(ordered[index])


def _user_features(user_features: Optional[Mapping], kinds: Mapping) -> dict:
    out: dict[str, list] = {}
    user_features = user_features or {}
    for name, kind in sorted(kinds.items()):
        value: Any = user_features.get(name)
        missing = value is None or (isinstance(value, float) and math.isnan(value)) or value == ""
        if kind == "numeric":
            out[f"user_num_{name}"] = [] if missing else [float(value)]
        else:
            out[f"user_cat_{name}"] = [b""] if missing else [str(value).encode()]
    return out


def _history(events: Sequence[Event]) -> dict:
    return {
        "item_id": [e.item_id.encode() for e in events],
        "timestamp": [int(e.timestamp) for e in events],
        "event_type": [e.event_type.encode() for e in events],
        "session_id": [e.session_id.encode() for e in events],
        "page_id": [e.page_id.encode() for e in events],
        "region": [e.region.encode() for e in events],
        "page_item_id": [i.encode() for e in events for i in e.page_items],
        "page_item_count": [len(e.page_items) for e in events],
    }


def _target(targets: Sequence[Event], max_targets: int) -> dict:
    first = targets[0]
    seen, ids = set(), []
    for e in targets:
        if e.item_id not in seen:
            seen.add(e.item_id)
            ids.append(e.item_id.encode())
        if len(ids) == max_targets:
            break
    return {
        "target_item_id": ids,
        "target_timestamp": [int(first.timestamp)],
        "target_event_type": [first.event_type.encode()],
        "target_page_id": [first.page_id.encode()],
        "target_region": [first.region.encode()],
        "target_page_item_id": [i.encode() for i in first.page_items],
    }


def _example(user_id: str, history: Sequence[Event], targets: Sequence[Event],
             config: SplitConfig, user: dict) -> dict:
    history = history[-config.max_history:]
    return {"user_id": [user_id.encode()], "history_length": [len(history)],
            **_history(history), **_target(targets, config.max_targets), **user}


def _training_windows(events: Sequence[Event], max_history: int) -> Iterator[tuple]:
    """(history, target) windows covering every event after the first as a target."""
    end = len(events)
    while end >= 2:
        start = max(0, end - max_history - 1)
        window = events[start:end]
        yield window[:-1], window[-1:]
        end = start + 1


def user_examples(user_id: str, events: Iterable[Event], config: SplitConfig,
                  cut: Optional[int] = None, user_features: Optional[Mapping] = None,
                  feature_kinds: Optional[Mapping] = None) -> Iterator[tuple]:
    """Yields ``(split_name, features)`` for one user's events.

    ``features`` maps feature names to lists of bytes/int/float, ready for a
    ``tf.train.Example``.  Users too short for a split simply yield nothing for
    it; callers count what each split received.
    """
    ordered = sorted(events, key=lambda e: (e.timestamp, e.sequence_number))
    home = str((user_features or {}).get(USER_REGION_FEATURE) or "")
    if home:  # events without a region happened in the user's home region
        ordered = [e if e.region else e._replace(region=home) for e in ordered]
    user = _user_features(user_features, feature_kinds or {})
    if config.mode == "time":
        if cut is None:
            raise ValueError("time split needs the cut timestamp")
        before = [e for e in ordered if e.timestamp < cut]
        after = [e for e in ordered if e.timestamp >= cut]
        for history, target in _training_windows(before, config.max_history):
            yield "train", _example(user_id, history, target, config, user)
        if before and after:
            yield "eval", _example(user_id, before, after, config, user)
        return
    if len(ordered) >= 3:
        for history, target in _training_windows(ordered[:-2], config.max_history):
            yield "train", _example(user_id, history, target, config, user)
        yield "eval", _example(user_id, ordered[:-2], ordered[-2:-1], config, user)
        yield "test", _example(user_id, ordered[:-1], ordered[-1:], config, user)
    elif len(ordered) == 2:
        yield "train", _example(user_id, ordered[:1], ordered[1:], config, user)
