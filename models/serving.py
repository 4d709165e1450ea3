"""The serving SavedModel: raw request -> Transform graph -> STARS -> top-K from an index.

Signatures (all batched):

* ``serving_default`` / ``recommend``: ``history_item_ids`` string [B, L] ("" pads,
  oldest first), ``history_event_types`` string [B, L], ``history_timestamps``
  int64 [B, L], ``request_timestamp`` int64 [B] -> ``ni_ids``/``ni_scores`` (h_next)
  and ``gi_ids``/``gi_scores`` (h_gen), [B, K] each;
* ``recommend_with_context``: the same plus ``region`` string [B],
  ``context_signals`` float [B, S] (weather, promotion, ... for Δ_ctx) and every
  static user feature (``user_num_<n>`` float, NaN = missing; ``user_cat_<c>`` string);
* ``user_embeddings``: the with-context inputs -> ``h_gen``, ``h_next`` [B, D]
  (context offset included), for the batch user-embedding job;
* ``item_embeddings``: ``item_ids`` string [N] -> ``embeddings`` [N, D], ``found`` bool [N];
* ``context_offset``: ``request_timestamp`` [B], ``context_signals`` [B, S] -> ``offset`` [B, D]
  (Δ_ctx alone: add it to stored embeddings at request time);
* ``search``: ``query_embeddings`` float [B, D] -> ``ids``/``scores`` [B, K] (the index alone,
  for user embeddings stored by the batch job);
* ``search_after_items``: the same plus ``history_item_ids`` string [B, L] (each row's
  latest items, oldest first, "" pads) -> ``ids``/``scores`` [B, K]: the index merged with
  what followed those items (the successor source; a row without items, such as a GI
  query's, is the index alone, as is every row of a model without the source).

Scores are ``h·w_j``, plus ``β·log(1 + n_j)`` when the model has the item trend
(``models.item_trend``; n_j counted at export): the index holds it as one more coordinate.
With the semantic match (``models.semantic_match``) the item vectors and h_next already
carry its part: the index, ``search`` and ``item_embeddings`` are that much wider.
With the successor source (``models.successor_source``, γ > 0 after selection) the NI
answers of ``recommend`` and ``recommend_with_context`` add γ·log(1 + count_j) of what
followed the request's latest events: the index's top K merged with those successors,
which is the exact top K of the full score.  ``search`` has no events, so it answers
from the index alone; ``search_after_items`` is ``search`` with the merge, for stored
embeddings whose latest items were stored beside them.

``user_embeddings`` also returns ``h_gen_base``/``h_next_base`` (without Δ_ctx), which is what
the batch job stores: the context is the request's, added online.

The raw request goes through the SAME Transform graph as training (no skew):
calendar, recency, vocabularies and user-feature scaling are not re-implemented.
Unknown history items are dropped; an empty history is answered from [USER]
and the context alone.
"""
from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from stars.saved_model import WARMUP_FILE

SCANN_NAMESPACE = "Scann"
CONTEXT_NAMES = ("hour", "day_of_week", "week_of_year", "holiday")


def _left_aligned_sparse(values, present):
    """[B, L] values where ``present`` -> SparseTensor whose rows are left-aligned."""
    column = tf.cumsum(tf.cast(present, tf.int64), axis=1, exclusive=True)
    where = tf.where(present)
    indices = tf.stack([where[:, 0], tf.gather_nd(column, where)], axis=1)
    width = tf.reduce_max(tf.concat([tf.reduce_sum(tf.cast(present, tf.int64), 1), [0]], 0))
    shape = tf.stack([tf.shape(values, out_type=tf.int64)[0], width])
    return tf.SparseTensor(indices, tf.gather_nd(values, where), shape)


def raw_request_features(raw_spec: dict, batch, sequence: dict, scalars: dict) -> dict:
    """The raw (pre-Transform) feature dict for a request, following ``raw_spec``.

    ``sequence``: name -> (values [B, L], present [B, L]); ``scalars``: name -> [B]
    (float NaN / empty string = missing).  Anything else gets an empty/default value.
    """
    out = {}
    for name, spec in raw_spec.items():
        var_len = isinstance(spec, tf.io.VarLenFeature)
        if name in sequence:
            values, present = sequence[name]
            out[name] = _left_aligned_sparse(tf.cast(values, spec.dtype), present)
        elif name in scalars:
            value = tf.cast(scalars[name], spec.dtype)
            if var_len:
                missing = (tf.math.is_nan(value) if spec.dtype.is_floating
                           else tf.equal(value, "") if spec.dtype == tf.string
                           else tf.zeros_like(value, tf.bool))
                out[name] = _left_aligned_sparse(value[:, None], tf.logical_not(missing)[:, None])
            else:
                out[name] = value[:, None]
        elif var_len:
            out[name] = tf.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0], spec.dtype),
                                        tf.stack([tf.cast(batch, tf.int64), 0]))
        else:
            default = "" if spec.dtype == tf.string else 0
            out[name] = tf.fill(tf.stack([batch, 1]), tf.constant(default, spec.dtype))
    return out


def make_index(kind: str, embeddings, identifiers, k: int):
    """A TFRS top-K layer over the item embeddings: exact ``brute_force`` or ``scann``."""
    if kind == "brute_force":
        index = tfrs.layers.factorized_top_k.BruteForce(k=k)
    elif kind == "scann":
        n = int(embeddings.shape[0])
        leaves = max(2, min(1000, int(math.sqrt(n))))
        # Search enough leaves to hold ~12k items (ScaNN pads a short answer with repeats):
        # user embeddings, unlike item vectors, fall between partitions.  On the demo data
        # (1.5k items, K = 100, 38 leaves) recall@K on real users' h_gen/h_next was 0.83
        # searching 12 leaves (~4k items), 0.96 at 20 and 0.98 at 30 (models.index_quality,
        # which gates the release); from 36·K items up a third of the leaves is the larger.
        # The quantised scores are then re-scored exactly for 10·K candidates: at 100k
        # MiniLM-keyed items (448-d, K = 100) recall@K on real users was 0.90 with 4·K, 0.97
        # with 10·K, 0.98 with 20·K, for 0.21 / 0.32 / 0.45 ms a query.
        search = min(leaves, max(2, leaves // 3, math.ceil(12 * k * leaves / n)))
        index = tfrs.layers.factorized_top_k.ScaNN(
            k=k, distance_measure="dot_product", num_leaves=leaves,
            num_leaves_to_search=search, training_iterations=12,
            num_reordering_candidates=min(n, max(10 * k, 200)))
    else:
        raise ValueError(f"unknown index kind {kind!r}: 'scann' or 'brute_force'")
    return index.index(embeddings, identifiers)


class ServingModule(tf.Module):
    def __init__(self, model, adapter, tft_output, item_ids, index_kind: str, k: int,
                 user_numeric=(), user_categorical=(), num_signals: int = 4):
        super().__init__()
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        self.raw_spec = tft_output.raw_feature_spec()
        self.adapter = adapter
        self.k = min(k, len(item_ids))
        self.index_kind = index_kind
        self.user_numeric, self.user_categorical = tuple(user_numeric), tuple(user_categorical)
        self.num_signals = num_signals
        embeddings = model.item_embeddings()
        self.item_embedding_table = tf.Variable(embeddings, trainable=False,
                                                name="item_embedding_table")
        self.item_lookup = adapter.item_table
        # The item trend (models.item_trend) as one more coordinate: the trend at export
        # on the item side, β on the query side, so h·w_j + β·trend_j stays one inner
        # product (the index is as fresh as the export).
        self.trend_weight = None
        indexed = embeddings
        if getattr(model, "item_trend", None) is not None:
            self.trend_weight = tf.constant(float(model.item_trend.beta.numpy()))
            indexed = tf.concat([embeddings, model.item_trend.current()[:, None]], axis=1)
        self.index = make_index(index_kind, indexed, tf.constant(list(item_ids)), self.k)
        # The popularity ranking the sidecar falls back to, shipped with the model: the
        # training prior p_j (models.popularity), most popular first (catalogue order breaks
        # ties), so a fallback answer belongs to the same release as the model's.
        prior = np.exp(np.asarray(model.log_p.numpy(), np.float64))
        order = np.argsort(-prior, kind="stable")
        self.popular_item_ids = tf.Variable(tf.constant([item_ids[i] for i in order]),
                                            trainable=False, name="popular_item_ids")
        self.popular_prior = tf.Variable(prior[order].astype(np.float32), trainable=False,
                                         name="popular_prior")
        # NI's second source, merged after the search (only when selection kept it).
        source = getattr(model, "successor_source", None)
        self.successor_source = (source if source is not None and
                                 float(source.weight.numpy()) != 0.0 else None)
        if self.successor_source is not None:
            # What the merge scores a successor with: the item table above, and the
            # index's trend coordinate × β as a per-item bias.
            self.item_bias = (None if self.trend_weight is None else tf.Variable(
                self.trend_weight * indexed[:, -1], trainable=False, name="item_bias"))
            self.item_id_list = tf.Variable(tf.constant(list(item_ids)), trainable=False,
                                            name="item_id_list")

    def _encode(self, item_ids, event_types, timestamps, request_timestamp, region,
                signals, users, with_offset: bool = True):
        batch = tf.shape(item_ids)[0]
        present = tf.not_equal(item_ids, "")
        event_types = tf.where(tf.equal(event_types, ""), "view", event_types)
        sequence = {"item_id": (item_ids, present), "event_type": (event_types, present),
                    "timestamp": (timestamps, present),
                    "page_item_count": (tf.zeros_like(timestamps), present)}
        scalars = {"target_timestamp": request_timestamp, "target_region": region,
                   "target_event_type": tf.fill([batch], "view"),
                   "history_length": tf.reduce_sum(tf.cast(present, tf.int64), 1)}
        scalars.update(users)
        raw = raw_request_features(self.raw_spec, batch, sequence, scalars)
        transformed = self.tft_layer(raw)
        inputs = self.adapter(transformed)
        context = {n: inputs[f"target_{n}"] for n in CONTEXT_NAMES}
        context["signals"] = signals
        if with_offset:
            gen, nxt = self.model.user_embeddings(inputs, context=context)
            return gen, nxt, inputs["items"], inputs["valid"]
        gen, nxt = self.model.base_user_embeddings(inputs)
        return gen, nxt, self.model.serving_offset(context, batch)

    def user_queries(self, inputs: dict):
        """(h_gen, h_next) [B, D] for ``recommend_with_context``'s keyword inputs, the
        request context's offset included: the queries ``recommend`` searches the index
        with (``models.index_quality`` measures the index on them)."""
        users = {k: v for k, v in inputs.items() if k.startswith(("user_num_", "user_cat_"))}
        gen, nxt, _, _ = self._encode(inputs["history_item_ids"], inputs["history_event_types"],
                                      inputs["history_timestamps"], inputs["request_timestamp"],
                                      inputs["region"], inputs["context_signals"], users)
        return gen, nxt

    def _defaults(self, item_ids):
        batch = tf.shape(item_ids)[0]
        users = {f"user_num_{n}": tf.fill([batch], float("nan")) for n in self.user_numeric}
        users.update({f"user_cat_{c}": tf.fill([batch], "") for c in self.user_categorical})
        return (tf.fill([batch], ""), tf.zeros([batch, self.num_signals]), users)

    def _index_queries(self, queries):
        """User embeddings [B, D] as the index reads them (β appended for the trend)."""
        if self.trend_weight is None:
            return queries
        return tf.concat([queries, tf.fill([tf.shape(queries)[0], 1], self.trend_weight)],
                         axis=1)

    def search_index(self, queries):
        """(scores, ids) [B, K] of user embeddings [B, D] against the index."""
        return self.index(self._index_queries(queries), k=self.k)

    def _next_items(self, h_next, items, valid):
        """NI's (scores, ids) [B, K]: the index's answer, merged with the successors of
        the request's latest events when the model serves its successor source."""
        scores, ids = self.search_index(h_next)
        if self.successor_source is None:
            return scores, ids
        scores, found = self.successor_source.merge_top_k(
            scores, self.item_lookup.lookup(ids), h_next, self.item_embedding_table, items,
            valid, self.k, item_bias=self.item_bias)
        return scores, tf.gather(self.item_id_list, tf.maximum(found, 0))

    def _top_k(self, h_gen, h_next, items, valid):
        ni_scores, ni_ids = self._next_items(h_next, items, valid)
        gi_scores, gi_ids = self.search_index(h_gen)
        return {"ni_ids": ni_ids, "ni_scores": ni_scores, "gi_ids": gi_ids,
                "gi_scores": gi_scores}

    def signatures(self) -> dict:
        history = [tf.TensorSpec([None, None], tf.string, "history_item_ids"),
                   tf.TensorSpec([None, None], tf.string, "history_event_types"),
                   tf.TensorSpec([None, None], tf.int64, "history_timestamps"),
                   tf.TensorSpec([None], tf.int64, "request_timestamp")]
        context = [tf.TensorSpec([None], tf.string, "region"),
                   tf.TensorSpec([None, self.num_signals], tf.float32, "context_signals")]
        user_specs = ({f"user_num_{n}": tf.TensorSpec([None], tf.float32, f"user_num_{n}")
                       for n in self.user_numeric} |
                      {f"user_cat_{c}": tf.TensorSpec([None], tf.string, f"user_cat_{c}")
                       for c in self.user_categorical})

        @tf.function(input_signature=history)
        def recommend(history_item_ids, history_event_types, history_timestamps,
                      request_timestamp):
            region, signals, users = self._defaults(history_item_ids)
            return self._top_k(*self._encode(history_item_ids, history_event_types,
                                             history_timestamps, request_timestamp, region,
                                             signals, users))

        @tf.function(input_signature=history + context + [user_specs])
        def _with_context(history_item_ids, history_event_types, history_timestamps,
                          request_timestamp, region, context_signals, users):
            return self._encode(history_item_ids, history_event_types, history_timestamps,
                                request_timestamp, region, context_signals, users)

        def flat(fn):
            """Signatures take flat keyword inputs; user features are regrouped here."""
            specs = history + context + list(user_specs.values())

            @tf.function(input_signature=specs)
            def call(*args):
                n = len(history) + len(context)
                return fn(*args[:n], dict(zip(user_specs, args[n:])))
            return call

        def recommend_with_context_fn(*args):
            return self._top_k(*_with_context(*args))

        @tf.function(input_signature=history + context + [user_specs])
        def _base(history_item_ids, history_event_types, history_timestamps,
                  request_timestamp, region, context_signals, users):
            return self._encode(history_item_ids, history_event_types, history_timestamps,
                                request_timestamp, region, context_signals, users,
                                with_offset=False)

        def user_embeddings_fn(*args):
            h_gen, h_next, delta = _base(*args)
            return {"h_gen": h_gen + delta, "h_next": h_next + delta,
                    "h_gen_base": h_gen, "h_next_base": h_next}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, "request_timestamp"),
                                      tf.TensorSpec([None, self.num_signals], tf.float32,
                                                    "context_signals")])
        def context_offset(request_timestamp, context_signals):
            batch = tf.shape(request_timestamp)[0]
            empty = tf.fill(tf.stack([batch, 1]), "")
            _, _, delta = _base(empty, empty, tf.zeros(tf.stack([batch, 1]), tf.int64),
                                request_timestamp, tf.fill([batch], ""), context_signals,
                                self._defaults(empty)[2])
            return {"offset": delta}

        @tf.function(input_signature=[tf.TensorSpec([None, self.item_embedding_table.shape[1]],
                                                    tf.float32, "query_embeddings")])
        def search(query_embeddings):
            scores, ids = self.search_index(query_embeddings)
            return {"ids": ids, "scores": scores}

        @tf.function(input_signature=[
            tf.TensorSpec([None, self.item_embedding_table.shape[1]], tf.float32,
                          "query_embeddings"),
            tf.TensorSpec([None, None], tf.string, "history_item_ids")])
        def search_after_items(query_embeddings, history_item_ids):
            scores, ids = self._next_items(query_embeddings,
                                           self.item_lookup.lookup(history_item_ids),
                                           tf.not_equal(history_item_ids, ""))
            return {"ids": ids, "scores": scores}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "item_ids")])
        def item_embeddings(item_ids):
            index = self.item_lookup.lookup(item_ids)
            found = index >= 0
            vectors = tf.gather(self.item_embedding_table, tf.maximum(index, 0))
            return {"embeddings": vectors * tf.cast(found, vectors.dtype)[:, None],
                    "found": found}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, "limit")])
        def popular_items(limit):
            """The ``limit`` most popular items (the largest limit of the batch), per row."""
            n = tf.minimum(tf.cast(tf.reduce_max(limit), tf.int32),
                           tf.size(self.popular_prior))
            rows = tf.shape(limit)[0]
            return {"ids": tf.tile(self.popular_item_ids[None, :n], [rows, 1]),
                    "prior": tf.tile(self.popular_prior[None, :n], [rows, 1])}

        recommend_concrete = recommend.get_concrete_function()
        return {"serving_default": recommend_concrete, "recommend": recommend_concrete,
                "recommend_with_context": flat(recommend_with_context_fn).get_concrete_function(),
                "user_embeddings": flat(user_embeddings_fn).get_concrete_function(),
                "item_embeddings": item_embeddings.get_concrete_function(),
                "context_offset": context_offset.get_concrete_function(),
                "search": search.get_concrete_function(),
                "search_after_items": search_after_items.get_concrete_function(),
                "popular_items": popular_items.get_concrete_function()}


def save_serving_model(module: ServingModule, export_dir: str, item_ids=None) -> str:
    options = tf.saved_model.SaveOptions(
        namespace_whitelist=[SCANN_NAMESPACE] if module.index_kind == "scann" else None)
    tf.saved_model.save(module, export_dir, signatures=module.signatures(), options=options)
    if item_ids is not None and len(item_ids):
        write_warmup(export_dir, warmup_requests(module, list(item_ids)))
    return export_dir


def export_serving_models(model, adapter, tft_output, item_ids, top_k: int, directories: dict,
                          user_numeric=(), user_categorical=()) -> dict:
    """Saves one serving SavedModel per index kind (``directories``: kind -> export dir,
    kinds as ``make_index``'s) over the same model, with the same signatures and warm-up
    requests; returns {kind: ServingModule}.  ``user_numeric``/``user_categorical``: the
    static user features' raw names (without their ``user_num_``/``user_cat_`` prefix)."""
    modules = {}
    for kind, directory in directories.items():
        module = ServingModule(model, adapter, tft_output, item_ids, kind, top_k,
                               user_numeric, user_categorical)
        save_serving_model(module, directory, item_ids=item_ids)
        modules[kind] = module
    return modules


def recall_against_brute_force(scann_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Share of the exact top-K that the approximate top-K found (ScaNN's recall@K)."""
    hits = [len(set(a) & set(b)) for a, b in zip(scann_ids.tolist(), exact_ids.tolist())]
    return float(np.sum(hits) / max(1, exact_ids.size))


__all__ = ["ServingModule", "save_serving_model", "export_serving_models", "make_index",
           "raw_request_features", "recall_against_brute_force"]




def warmup_requests(module: "ServingModule", item_ids) -> list:
    """One small request per signature: (signature name, {input: numpy array})."""
    items = np.array([[item_ids[0], item_ids[min(1, len(item_ids) - 1)]]], dtype=object)
    history = {"history_item_ids": items,
               "history_event_types": np.array([["view", "purchase"]], dtype=object),
               "history_timestamps": np.array([[1700000000, 1700000300]], np.int64),
               "request_timestamp": np.array([1700000600], np.int64)}
    context = {"region": np.array([""], dtype=object),
               "context_signals": np.zeros([1, module.num_signals], np.float32)}
    users = {f"user_num_{n}": np.array([np.nan], np.float32) for n in module.user_numeric}
    users.update({f"user_cat_{c}": np.array([""], dtype=object) for c in module.user_categorical})
    full = {**history, **context, **users}
    dim = int(module.item_embedding_table.shape[1])
    return [("serving_default", history), ("recommend_with_context", full),
            ("user_embeddings", full),
            ("context_offset", {"request_timestamp": history["request_timestamp"],
                                "context_signals": context["context_signals"]}),
            ("search", {"query_embeddings": np.zeros([1, dim], np.float32)}),
            ("search_after_items", {"query_embeddings": np.zeros([1, dim], np.float32),
                                    "history_item_ids": items}),
            ("item_embeddings", {"item_ids": items[0]}),
            ("popular_items", {"limit": np.array([10], np.int64)})]


def write_warmup(export_dir: str, requests) -> str:
    """TF Serving's warm-up file: PredictionLogs replayed when a version loads, so the
    first real request does not pay for graph optimisation and table initialisation."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signature
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path
