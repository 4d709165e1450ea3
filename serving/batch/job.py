"""Batch job: every user's ``h_gen``/``h_next`` from recent history into a key-value store.

``stars batch user-embeddings`` runs this Apache Beam pipeline::

    interactions (+ users) of a data directory (the data contract)
      -> drop events after ``as_of``; group by user (CoGroupByKey with the users table)
      -> keep the latest ``max_history`` events (ordered by timestamp, sequence_number)
      -> batched requests (stars.serving_requests.request_batch)
      -> a DoFn that loads the pushed serving SavedModel once per worker (setup) and calls
         its ``user_embeddings`` signature
      -> a sink that writes ``h_gen_base``/``h_next_base`` and the last ``LATEST_ITEMS``
         history item ids into a new store generation

The generation is begun on the driver before the pipeline runs and committed once on the
driver after it finished (with the number of users the pipeline embedded as the expected
count); if anything fails it is aborted and readers keep the previous generation.

What is stored is the *base* embedding (without the context offset Δ_ctx), tagged with
the model version (the numeric directory under the model base path): the serving sidecar
adds the request's context with that same version online.  The request time of the stored
embedding is ``as_of`` (default: the latest interaction timestamp in the data), which is
what history recency is measured against.  Unknown history items are passed through (the
model drops them); a user in the users table without events up to ``as_of`` is embedded
from the [USER] features alone.  A user known only from events after ``as_of`` did not
exist yet at that time and is not stored.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np

from stars import serving_requests as requests
from stars import storage
from stars.data import contract
from stars.data.sequences import USER_REGION_FEATURE

if TYPE_CHECKING:
    from serving.batch.store import ShardWriter

LOG = logging.getLogger(__name__)
NAMESPACE = "stars.batch.user_embeddings"
SIGNATURE = "user_embeddings"
DEFAULT_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
# The history's last item ids, stored beside the embeddings: the successor source merges
# what followed the latest three known ones after the search (``search_after_items``);
# a few more cover items the model does not know.
LATEST_ITEMS = 8
COUNTERS = ("events_read", "events_after_as_of", "events_used", "users", "users_with_history",
            "users_without_history", "users_not_finite", "users_written", "batches")


@dataclasses.dataclass(frozen=True)
class UserRequest:
    """One user's request as the job builds it (history oldest first, already cut)."""
    user_id: str
    history: tuple
    event_types: tuple
    timestamps: tuple
    region: str
    profile: dict  # users-table columns -> values (missing columns absent)


def resolve_model_dir(model_base_path: str, version: Optional[int] = None) -> str:
    """``<base>/<version>`` (TF Serving layout); the highest numeric version by default.
    A directory that is itself a SavedModel is returned as is."""
    base = os.fspath(model_base_path)
    if version is not None:
        path = storage.join(base, str(int(version)))
        if not storage.exists(storage.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"no SavedModel version {version} under {base}")
        return path
    if storage.exists(storage.join(base, "saved_model.pb")):
        return base
    if not storage.isdir(base):
        raise FileNotFoundError(f"model base path {base} does not exist")
    versions = [int(v) for v in storage.listdir(base)
                if v.isdigit() and storage.exists(storage.join(base, v, "saved_model.pb"))]
    if not versions:
        raise FileNotFoundError(f"no numeric SavedModel version under {base}")
    return storage.join(base, str(max(versions)))


def parse_as_of(text) -> Optional[int]:
    """Unix seconds or ISO-8601 (UTC when no offset) -> unix seconds; None passes."""
    if text is None or text == "":
        return None
    try:
        return int(text)
    except (TypeError, ValueError):
        pass
    import datetime
    try:
        moment = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        raise ValueError(f"--as-of: expected unix seconds or ISO-8601, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


# -- reading ------------------------------------------------------------------------------
def _counter(name: str):
    return beam.metrics.Metrics.counter(NAMESPACE, name)


def _read_interactions(path: str) -> Iterable[tuple]:
    """(user_id, (timestamp, sequence_number, item_id, event_type, region)) per row."""
    read = _counter("events_read")
    for chunk in contract.read_table(path, contract.INTERACTIONS):
        order = chunk["sequence_number"].to_numpy(dtype=float)
        order = np.where(np.isnan(order), chunk["_row"].to_numpy(), order).astype(np.int64)
        rows = zip(chunk["user_id"], chunk["timestamp"].to_numpy(), order, chunk["item_id"],
                   chunk["event_type"], chunk["region"])
        n = 0
        for user, ts, seq, item, event, region in rows:
            n += 1
            yield str(user), (int(ts), int(seq), str(item), str(event), str(region or ""))
        read.inc(n)


def _missing(value) -> bool:
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or (isinstance(value, str) and value.strip() == ""))


def _read_users(path: str) -> Iterable[tuple]:
    for chunk in contract.read_table(path, contract.USERS):
        features = [c for c in chunk.columns if c not in ("user_id", "_row")]
        for record in chunk[["user_id", *features]].itertuples(index=False, name=None):
            profile = {name: value for name, value in zip(features, record[1:])
                       if not _missing(value)}
            yield str(record[0]), profile


class _KeepUntil(beam.DoFn):
    def __init__(self, as_of: Optional[int]):
        self._as_of = as_of

    def process(self, element):
        if self._as_of is not None and element[1][0] > self._as_of:
            _counter("events_after_as_of").inc()
            return
        yield element


class _BuildRequest(beam.DoFn):
    """(user, {events, user}) -> UserRequest with the latest ``max_history`` events."""

    def __init__(self, max_history: int):
        self._max_history = max_history

    def process(self, element):
        user_id, grouped = element
        profiles = list(grouped["user"])
        profile = dict(profiles[0]) if profiles else {}
        events = sorted(grouped["events"], key=lambda e: (e[0], e[1]))[-self._max_history:]
        home = str(profile.get(USER_REGION_FEATURE) or "")
        regions = [e[4] or home for e in events]
        _counter("users").inc()
        _counter("users_with_history" if events else "users_without_history").inc()
        _counter("events_used").inc(len(events))
        yield UserRequest(
            user_id=user_id, history=tuple(e[2] for e in events),
            event_types=tuple(e[3] for e in events), timestamps=tuple(e[0] for e in events),
            region=regions[-1] if regions else home, profile=profile)


# -- the model ----------------------------------------------------------------------------
def _feature_column(key: str, prefix: str, columns) -> str:
    """users-table column of signature input ``key`` (``user_num_age`` -> ``age``).

    Tolerates a doubled prefix (``user_num_user_num_age``) in the signature."""
    name = key[len(prefix):]
    while name not in columns and name.startswith(prefix):
        name = name[len(prefix):]
    return name


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number


class _Embed(beam.DoFn):
    """A batch of UserRequests -> [(user_id, h_gen_base, h_next_base, latest items)] via
    the SavedModel."""

    def __init__(self, model_dir: str, max_history: int, as_of_fallback: int = 0):
        self._model_dir = model_dir
        self._max_history = max_history
        self._fallback = as_of_fallback
        self._signature: Any = None  # the SavedModel's signature function, from setup()

    def setup(self):
        from stars.saved_model import load_serving_model
        self._model = load_serving_model(self._model_dir)
        self._signature = self._model.signatures[SIGNATURE]
        numeric, categorical, self._num_signals = requests.signature_inputs(self._signature)
        self._numeric = [f"{requests.USER_NUM}{n}" for n in numeric]
        self._categorical = [f"{requests.USER_CAT}{c}" for c in categorical]
        self._numeric_names, self._categorical_names = numeric, categorical

    def _example(self, request: UserRequest, as_of: int) -> requests.EvalExample:
        columns = request.profile
        features: dict[str, float | str] = {}
        for key in self._numeric:
            value = columns.get(_feature_column(key, requests.USER_NUM, columns))
            features[key] = float("nan") if value is None else _number(value)
        for key in self._categorical:
            value = columns.get(_feature_column(key, requests.USER_CAT, columns))
            features[key] = "" if value is None else str(value)
        return requests.EvalExample(
            user_id=request.user_id, history=list(request.history),
            event_types=list(request.event_types), timestamps=list(request.timestamps),
            request_timestamp=int(as_of), region=request.region, targets=[],
            candidate_set_size=0, user_features=features)

    def process(self, batch: Sequence[UserRequest], as_of=None):
        as_of = self._fallback if as_of is None else int(as_of)
        beam.metrics.Metrics.distribution(NAMESPACE, "request_timestamp").update(as_of)
        examples = [self._example(r, as_of) for r in batch]
        inputs = requests.request_batch(examples, self._max_history, self._numeric_names,
                                        self._categorical_names, self._num_signals)
        out = self._signature(**inputs)
        if "h_gen_base" not in out or "h_next_base" not in out:
            raise ValueError(f"the model's '{SIGNATURE}' signature has no h_gen_base/"
                             "h_next_base outputs (embeddings without the context offset); "
                             "re-export it with the current models/serving.py")
        h_gen, h_next = out["h_gen_base"].numpy(), out["h_next_base"].numpy()
        finite = np.isfinite(h_gen).all(axis=1) & np.isfinite(h_next).all(axis=1)
        _counter("batches").inc()
        if not finite.all():
            _counter("users_not_finite").inc(int((~finite).sum()))
            LOG.warning("%d users got non-finite embeddings and are not stored",
                        int((~finite).sum()))
        yield [(r.user_id, h_gen[i], h_next[i], tuple(r.history[-LATEST_ITEMS:]))
               for i, r in enumerate(batch) if finite[i]]


# -- the sink -----------------------------------------------------------------------------
class _WriteToStore(beam.DoFn):
    """Writes batches into the begun generation; one shard writer per bundle.  Each worker
    shows its users written as a progress bar when it has a terminal (the local runner)."""

    def __init__(self, store_spec: str, generation: str):
        self._spec, self._generation = store_spec, generation
        self._writer: Optional[ShardWriter] = None

    def setup(self):
        from serving.batch.stores import open_store
        from stars.console import progress
        self._store = open_store(self._spec)
        self._bar = progress(desc="user embeddings", unit="user")

    def start_bundle(self):
        self._writer = None

    def process(self, rows):
        if self._writer is None:
            self._writer = self._store.shard_writer(self._generation)
        written = self._writer.put_many(rows)
        _counter("users_written").inc(written)
        self._bar.update(written)
        return ()

    def finish_bundle(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def teardown(self):
        if getattr(self, "_bar", None) is not None:
            self._bar.close()
        close = getattr(getattr(self, "_store", None), "close", None)
        if close is not None:
            close()


def build_pipeline(pipeline: beam.Pipeline, data_dir: str, model_dir: str, store_spec: str,
                   generation: str, as_of: Optional[int] = None, max_history: int = 200,
                   batch_size: int = 256) -> None:
    interactions = contract.find_table_file(data_dir, contract.INTERACTIONS)
    users_file = contract.find_table_file(data_dir, contract.USERS)
    events = (pipeline
              | "InteractionsFile" >> beam.Create([str(interactions)])
              | "ReadInteractions" >> beam.FlatMap(_read_interactions)
              | "KeepUntilAsOf" >> beam.ParDo(_KeepUntil(as_of)))
    if users_file is not None:
        profiles = (pipeline
                    | "UsersFile" >> beam.Create([str(users_file)])
                    | "ReadUsers" >> beam.FlatMap(_read_users))
    else:
        profiles = pipeline | "NoUsers" >> beam.Create([])
    request_time: beam.pvalue.AsSingleton | int
    if as_of is None:  # the latest event in the data
        request_time = beam.pvalue.AsSingleton(
            events | "EventTimes" >> beam.Map(lambda kv: kv[1][0])
            | "LatestEvent" >> beam.CombineGlobally(lambda ts: max(ts, default=0)))
    else:
        request_time = as_of
    embeddings = ({"events": events, "user": profiles}
                  | "GroupByUser" >> beam.CoGroupByKey()
                  | "BuildRequests" >> beam.ParDo(_BuildRequest(max_history))
                  | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)
                  | "Embed" >> beam.ParDo(_Embed(model_dir, max_history), as_of=request_time))
    _ = embeddings | "WriteToStore" >> beam.ParDo(_WriteToStore(store_spec, generation))


def _counters(result) -> dict:
    counts = {name: 0 for name in COUNTERS}
    try:
        for item in result.metrics().query(
                beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]:
            value = item.committed if item.committed is not None else item.attempted
            counts[item.key.metric.name] = int(value or 0)
        for item in result.metrics().query(
                beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["distributions"]:
            value = item.committed if item.committed is not None else item.attempted
            if value is not None and value.count:
                counts[item.key.metric.name] = int(value.max)
    except Exception as e:  # a runner without metrics: the store count still checks
        LOG.warning("Beam metrics unavailable: %s", e)
        return {}
    return counts


def run(model_base_path: str, data_dir: str, store: str, version: Optional[int] = None,
        as_of=None, max_history: int = 200, batch_size: int = 256,
        beam_args: Optional[Sequence[str]] = None,
        grace_seconds: Optional[float] = None, commit: bool = True) -> dict:
    """Runs the job and commits one new store generation; returns a report (counts).

    ``store``: ``embedded:PATH`` or ``redis://host:port/db``.  On any failure the new
    generation is aborted and readers keep the previous one.  ``commit=False`` leaves
    the written generation uncommitted (``version`` in the report; readers keep the
    live one) for a release to commit when it is published (``store.resume_refresh``)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from serving.batch.stores import open_store

    if max_history < 1 or batch_size < 1:
        raise ValueError("max_history and batch_size must be positive")
    start = time.time()
    model_dir = resolve_model_dir(model_base_path, version)
    as_of = parse_as_of(as_of)
    contract.find_table_file(data_dir, contract.INTERACTIONS)  # fail before touching the store
    name = os.path.basename(os.path.normpath(model_dir))
    model_version = name if name.isdigit() else ""
    target = open_store(store, grace_seconds=grace_seconds)
    refresh = target.begin_refresh(model_version=model_version)
    try:
        options = PipelineOptions(list(DEFAULT_BEAM_ARGS if beam_args is None else beam_args))
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, data_dir, model_dir, store, refresh.generation, as_of=as_of,
                       max_history=max_history, batch_size=batch_size)
        result = pipeline.run()
        result.wait_until_finish()
        counts = _counters(result)
        expected = counts.get("users_written") if counts else None
        if commit:
            version_committed = refresh.commit(expected_count=expected)
        else:
            refresh.close()
            version_committed = refresh.generation
    except BaseException:
        refresh.abort()
        target.close()
        raise
    stats = target.stats() if commit and hasattr(target, "stats") else {}
    target.close()
    return {"store": store, "version": version_committed, "committed": commit,
            "model_dir": model_dir,
            "model_version": model_version,
            "max_history": max_history, "dim": stats.get("dim"), "stored": stats.get("count"),
            **counts, "as_of": counts.get("request_timestamp", as_of),
            "wall_s": round(time.time() - start, 1)}


__all__ = ["run", "build_pipeline", "resolve_model_dir", "parse_as_of", "UserRequest"]
