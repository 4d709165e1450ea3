"""The STARS retrieval model (spec §2–§5) as a ``tfrs.Model``.

Query tower: [USER] token + semantic item tokens with event encodings -> causal
transformer -> two user embeddings, ``h_gen`` (GI) and ``h_next`` (NI), each
with its own projection to the serving space, plus the request-context offset
Δ_ctx.  Candidate tower: the item token itself through a projection (weights
tied to the token), so an item nobody interacted with is scored from its text
and tags.

Training (``compute_loss``): every history position predicts the next event
(causal, SASRec-style) with the popularity-corrected candidate-slice softmax;
``h_gen`` predicts every future target of the example.  Serving scores are
plain dot products ``h·w_j``: the prior −α log p_j is a training-time
correction (the dot product learns to carry popularity, as in logQ correction).
With ``item_trend`` on, every logit, in training and at ranking, also gets the
item trend term β·log(1 + n_j(t)) of the request's time t (``models.item_trend``).
With ``semantic_match`` on, the serving space is [learned part; text keys]: items append
their keys, h_next the weighted keys of the latest events, h_gen and Δ_ctx zeros
(``models.semantic_match``; the weight is chosen after training, training never sees it).
Given a successor table, NI's ranking also adds γ·log(1 + the count of what followed the
latest events in training) (``models.successor_source``; γ chosen after training too).
"""
from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs

from models import cold_items, distribution, losses
from models import features as F
from models.config import ModelConfig
from models.context import ContextOffset, EventEncodings
from models.encoder import SequenceEncoder
from models.item_catalog import ItemCatalog
from models.item_tokens import ItemTokenizer
from models.item_trend import ItemTrend, TrendTable
from models.negatives import CandidateSliceSampler
from models.popularity import popularity_log_prior
from models.semantic_match import SemanticMatch
from models.successor_source import SuccessorSource, SuccessorTable
from models.user_token import UserToken


def last_valid_position(valid):
    """Index (within the history) of each row's latest known event, -1 for an empty history."""
    length = tf.shape(valid)[1]
    positions = tf.broadcast_to(tf.range(length)[None, :], tf.shape(valid))
    return tf.reduce_max(tf.where(valid, positions, -1), axis=1)


def history_so_far(items, valid):
    """[B, L, L]: at each position t, the items of positions ≤ t (the history that
    position's next-item prediction follows), −1 elsewhere and for unknown items."""
    length = tf.shape(items)[1]
    upto = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)  # [t, j]: j ≤ t
    known = tf.logical_and(upto[None], tf.cast(valid, tf.bool)[:, None, :])
    return tf.where(known, tf.cast(items, tf.int32)[:, None, :], -1)


def read_outs(hidden, valid, use_user_token: bool):
    """(h_gen state, h_next state) from encoder states [B, 1+L, d] (position 0 = [USER]).

    h_next reads the latest KNOWN event (left padding puts it last unless the
    history ends with unknown items); an empty history falls back to [USER].
    Without the [USER] token, h_gen is the mean of the item states.
    """
    last = last_valid_position(valid)
    h_next = tf.gather(hidden, last + 1, batch_dims=1)
    if use_user_token:
        h_gen = hidden[:, 0]
    else:
        weights = tf.cast(valid, hidden.dtype)[..., None]
        pooled = (tf.reduce_sum(hidden[:, 1:] * weights, 1)
                  / tf.maximum(tf.reduce_sum(weights, 1), 1.0))
        h_gen = tf.where(tf.reduce_any(valid, 1)[:, None], pooled, hidden[:, 0])
    return h_gen, h_next


def _projection(config: ModelConfig, name: str) -> tf.keras.layers.Layer:
    """A linear projection to the serving space, or none (``serving_projections`` off):
    then h·w_j is SASRec's tied-embedding score, the encoder state against the item token
    itself.  Even projections started at the identity drift into a learned bilinear form,
    which ranked Beauty's validation targets 3% lower for the ID-only model and 7% lower for
    STARS (BUILD_NOTES)."""
    if config.serving_projections:
        return tf.keras.layers.Dense(config.serving_dim, name=name)
    if config.serving_dim != config.d_model:
        raise ValueError(f"serving_projections off needs serving_dim == d_model, got "
                         f"{config.serving_dim} and {config.d_model}")
    return tf.keras.layers.Identity(name=name)


class StarsModel(tfrs.Model):
    def __init__(self, catalog: ItemCatalog, config: ModelConfig, num_event_types: int,
                 user_numeric=(), user_vocab_sizes: Mapping[str, int] = None,
                 trend: Optional[TrendTable] = None,
                 successors: Optional[SuccessorTable] = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.num_items = len(catalog)
        self.items = ItemTokenizer(catalog, config, name="item_tokens")
        self.user_token = UserToken(user_numeric if config.use_user_token else (),
                                    (user_vocab_sizes or {}) if config.use_user_token else {},
                                    F.NUMERIC_BUCKETS, config.d_model, name="user_token")
        self.events = EventEncodings(config.d_model, config.max_history, num_event_types,
                                     F.RECENCY_BUCKETS, config.use_context,
                                     config.use_engagement, config.use_recency, name="events")
        self.encoder = SequenceEncoder(config.d_model, config.num_layers, config.num_heads,
                                       config.ff_dim, config.dropout, name="encoder")
        self.gen_head = _projection(config, "h_gen_projection")
        self.next_head = _projection(config, "h_next_projection")
        self.item_head = _projection(config, "item_projection")
        self.context_offset = ContextOffset(config.serving_dim, name="context_offset")
        if config.item_trend and trend is None:
            raise ValueError("item_trend is on but no trend table was given (the Trainer "
                             "reads it from the Transform: models.trainer.training_trend)")
        self.item_trend = ItemTrend(trend, name="item_trend") if config.item_trend else None
        self.semantic_match = (SemanticMatch(catalog.text_embedding, config.semantic_match_dim,
                                             name="semantic_match")
                               if config.semantic_match and config.use_text else None)
        if config.successor_source and successors is None:
            raise ValueError("successor_source is on but no successor table was given "
                             "(models.successor_source.SuccessorTable over the training "
                             "examples)")
        # NI's second source; its weight is chosen after training, training never sees it.
        self.successor_source = (None if successors is None else
                                 SuccessorSource(successors, name="successor_source"))
        # Set after training (models.cold_items; 0 = off): never-seen items' serving norm.
        self.cold_item_norm = tf.Variable(0.0, trainable=False, name="cold_item_norm")
        self.log_p = tf.Variable(popularity_log_prior(catalog.counts, config.beta),
                                 trainable=False, name="popularity_log_prior")
        self.sampler = CandidateSliceSampler(catalog.subclass, config.num_negatives,
                                             config.max_same_page,
                                             num_subclass=max(1, catalog.num_subclasses),
                                             seed=config.seed)
        if config.lambda_aux > 0:
            self.aux_head = tf.keras.layers.Dense(self.items.text_embedding.shape[1],
                                                  name="aux_vocabulary_projection")

    # ---- towers -------------------------------------------------------------------------
    def item_vectors(self, indices=None, training=False):
        """The learned w_j (what the losses score); all items when ``indices`` is None.
        Outside training, never-seen items are put on the warm items' scale
        (``cold_item_norm``)."""
        tokens = (self.items.all_tokens(training=training) if indices is None
                  else self.items(indices, training=training))
        vectors = self.item_head(tokens)
        if training:
            return vectors
        warm = self.items.has_interactions[:, 0]
        if indices is not None:
            warm = tf.gather(warm, tf.cast(indices, tf.int32))
        return cold_items.rescale_cold(vectors, 1.0 - warm, self.cold_item_norm)

    def item_embeddings(self, indices=None, training=False):
        """w_j in the serving space: the learned vectors, and the text keys appended when
        the model has the semantic match."""
        vectors = self.item_vectors(indices, training=training)
        if self.semantic_match is None:
            return vectors
        keys = self.semantic_match.item_keys(indices)
        return tf.concat([vectors, tf.cast(keys, vectors.dtype)], axis=-1)

    def _serving_space(self, learned, matched=None):
        """User-side ``learned`` [N, s] -> the serving space: the semantic-match part
        (``matched`` [N, d_e], zeros when None) appended when the model has one."""
        if self.semantic_match is None:
            return learned
        if matched is None:
            matched = tf.zeros([tf.shape(learned)[0], self.semantic_match.dim], learned.dtype)
        return tf.concat([learned, tf.cast(matched, learned.dtype)], axis=-1)

    def encode(self, inputs, training=False):
        """Encoder states [B, 1+L, d] and the (h_gen, h_next) states [B, d]."""
        items, valid = inputs["items"], inputs["valid"]
        tokens = self.items(tf.maximum(items, 0), training=training)
        if self.config.scale_item_tokens:
            tokens = tokens * tf.cast(self.config.d_model ** 0.5, tokens.dtype)
        tokens = tokens * tf.cast(valid, tokens.dtype)[..., None] + self.events(inputs)
        user = tf.cast(self.user_token(inputs["user"]), tokens.dtype)
        user = tf.broadcast_to(user, [tf.shape(items)[0], self.config.d_model])
        sequence = tf.concat([user[:, None, :], tokens], axis=1)
        mask = tf.concat([tf.ones_like(valid[:, :1]), valid], axis=1)
        hidden = self.encoder(sequence, mask, training=training)
        return (hidden,) + read_outs(hidden, valid, self.config.use_user_token)

    def offset(self, context):
        if not self.config.use_context:
            return 0.0
        return self.context_offset(context)

    def base_user_embeddings(self, inputs, training=False):
        """(h_gen, h_next) in the serving space, without the request-context offset."""
        _, gen, nxt = self.encode(inputs, training=training)
        matched = (None if self.semantic_match is None
                   else self.semantic_match.query(inputs["items"], inputs["valid"]))
        return self._serving_space(self.gen_head(gen)), self._serving_space(self.next_head(nxt),
                                                                            matched)

    def serving_offset(self, context, batch):
        """Δ_ctx [batch, D] in the serving space (0 on the semantic-match part)."""
        delta = self.offset(context)
        zeros = tf.zeros([batch, self.config.serving_dim],
                         delta.dtype if isinstance(delta, tf.Tensor) else tf.float32)
        return self._serving_space(delta + zeros)

    def user_embeddings(self, inputs, context=None, training=False):
        """(h_gen, h_next) in the serving space, with the request-context offset added."""
        gen, nxt = self.base_user_embeddings(inputs, training=training)
        context = context if context is not None else {
            n: inputs[f"target_{n}"] for n in ("hour", "day_of_week", "week_of_year", "holiday")}
        if not self.config.use_context:
            return gen, nxt
        delta = self.serving_offset(context, tf.shape(gen)[0])
        return gen + delta, nxt + delta

    def item_prior(self, request_time):
        """[N, I] the logit terms that depend on the item and the request time alone (the
        item trend), added to ``user · item`` scores; None when there are none."""
        if self.item_trend is None:
            return None
        return self.item_trend(request_time)

    def next_prior(self, inputs):
        """[B, I] NI's logit terms that depend on the request's latest events (the successor
        source, γ·log(1 + count)); None without the source or while γ = 0."""
        if self.successor_source is None or float(self.successor_source.weight.numpy()) == 0:
            return None
        return self.successor_source(inputs["items"], inputs["valid"])

    def call(self, inputs, training=False):
        return self.user_embeddings(inputs, training=training)

    # ---- training -----------------------------------------------------------------------
    def _slice_loss(self, queries, positives, pools, times, training=False, all_items=None,
                    excluded=None):
        """Candidate-slice softmax (or full softmax against ``all_items``, every item's
        embedding, computed once per step by the caller) for queries [N, s], positives [N]
        at request times ``times`` [N]; ``excluded`` [N, H] (item ids, −1 = none): items out
        of each row's softmax."""
        c = self.config
        if c.full_softmax:
            return losses.full_softmax_loss(queries, all_items, positives,
                                            self.log_p, c.alpha, excluded=excluded,
                                            offsets=self.item_prior(times)), None
        negatives, _ = self.sampler(positives, same_page=pools)
        ids = tf.concat([positives[:, None], negatives], axis=1)
        unique, where = tf.unique(tf.reshape(ids, [-1]))
        embeddings = tf.gather(self.item_vectors(unique, training=training),
                               tf.reshape(where, tf.shape(ids)))
        scores = tf.einsum("nd,nkd->nk", queries, embeddings)
        logits = losses.corrected_logits(scores, tf.gather(self.log_p, ids), c.alpha)
        if self.item_trend is not None:
            logits += tf.cast(self.item_trend.gather(times, ids), logits.dtype)
        keep = None if excluded is None else tf.logical_not(
            losses.excluded_negatives(negatives, excluded, positives))
        return losses.next_item_loss(logits, negative_mask=keep), logits[:, 1:]

    def _request_times(self, inputs, kind: str, keep=None, rows=None):
        """The request time of each softmax row (None without the item trend, the only
        part that reads it): per position (``next``) or per example (``target``)."""
        if self.item_trend is None:
            return None
        if kind == "next":
            return tf.boolean_mask(inputs["next_timestamp"], keep)
        return tf.gather(inputs["target_timestamp"], rows)

    def compute_loss(self, inputs, training=False):
        return self.loss_parts(inputs, training=training)["loss"]

    def loss_weights(self) -> dict:
        """Each loss term's weight in the total (``loss_terms``' keys)."""
        c = self.config
        return {"loss_next": 1.0, "loss_gen": c.lambda_gen, "loss_neg": c.lambda_neg,
                "loss_aux": c.lambda_aux}

    def loss_parts(self, inputs, training=False) -> dict:
        """The total loss and its terms (L_next, L_gen, L_neg, L_aux) for one batch."""
        weights = self.loss_weights()
        metrics, loss = {}, None
        for name, (mean, _) in self.loss_terms(inputs, training=training).items():
            metrics[name] = mean
            term = weights[name] * mean  # L_next's weight is 1: exactly the mean
            loss = term if loss is None else loss + term
        metrics["loss"] = loss
        return metrics

    def loss_terms(self, inputs, training=False) -> dict:
        """{term: (its mean over the batch, the number of rows it is a mean over)}, the terms
        in ``loss_weights`` that are on: what ``models.distribution.global_loss`` needs to
        take the mean over a global batch split across replicas.  L_aux's in-batch
        negatives are the replica's rows, not the global batch's."""
        c = self.config
        hidden, gen, _ = self.encode(inputs, training=training)
        # NI: every known position predicts its next event.
        targets = inputs["next_items"]
        keep = tf.logical_and(inputs["valid"], targets >= 0)
        states = tf.boolean_mask(hidden[:, 1:], keep)
        context = {n: tf.boolean_mask(inputs[f"next_{n}"], keep)
                   for n in ("hour", "day_of_week", "week_of_year", "holiday")}
        queries = self.next_head(states) + self.offset(context)
        positives = tf.boolean_mask(targets, keep)
        rows = tf.shape(positives)[0]
        seen = history_so_far(inputs["items"], inputs["valid"]) if c.mask_history else None
        pools = tf.ragged.boolean_mask(inputs["next_pools"], tf.reshape(keep, [-1]))
        # The whole item tower once per step, shared by the NI and GI softmaxes: with a
        # 384-d text table it costs as much as the rest of a step.
        all_items = self.item_vectors(training=training) if c.full_softmax else None
        loss, negative_logits = self._slice_loss(
            queries, positives, pools, self._request_times(inputs, "next", keep=keep),
            training, all_items,
            None if seen is None else tf.boolean_mask(seen, keep))
        terms = {"loss_next": (loss, rows)}
        # GI: h_gen predicts every future target of the example.
        if c.lambda_gen > 0:
            future = inputs["targets"]
            known = future >= 0
            future = tf.ragged.boolean_mask(future, known)
            target_rows = future.value_rowids()
            gen_context = {n: tf.gather(inputs[f"target_{n}"], target_rows)
                           for n in ("hour", "day_of_week", "week_of_year", "holiday")}
            gen_queries = (tf.gather(self.gen_head(gen), target_rows)
                           + self.offset(gen_context))
            empty = tf.RaggedTensor.from_row_lengths(
                tf.zeros([0], tf.int32), tf.zeros_like(target_rows, dtype=tf.int64))
            gen_loss, _ = self._slice_loss(
                gen_queries, future.flat_values, empty,
                self._request_times(inputs, "target", rows=target_rows), training, all_items,
                None if seen is None else tf.gather(seen[:, -1], target_rows))
            terms["loss_gen"] = (gen_loss, tf.shape(target_rows)[0])
        if c.lambda_neg > 0 and negative_logits is not None:
            terms["loss_neg"] = (losses.negative_loss(negative_logits),
                                 tf.size(negative_logits))
        if c.lambda_aux > 0:
            aux = losses.aux_vocabulary_loss(self.aux_head(states),
                                             tf.gather(self.items.text_embedding, positives),
                                             c.aux_temperature, target_ids=positives)
            terms["loss_aux"] = (aux, rows)
        return terms

    def _global_parts(self, inputs, training: bool):
        """(loss_parts over the global batch, this replica's share of it to differentiate),
        inside a replica of a strategy with several (``models.distribution.global_loss``)."""
        weights = self.loss_weights()
        objective, means = distribution.global_loss(self.loss_terms(inputs, training=training),
                                                    weights)
        parts, loss = {}, None
        for name, mean in means.items():
            parts[name] = mean
            term = weights[name] * mean  # L_next's weight is 1: exactly the mean
            loss = term if loss is None else loss + term
        parts["loss"] = loss
        return parts, objective

    def train_step(self, inputs):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            if replicas == 1:
                parts = self.loss_parts(inputs, training=True)
                total = parts["loss"] + sum(self.losses)
            else:  # the global batch's loss; the optimiser sums the replicas' gradients
                parts, objective = self._global_parts(inputs, training=True)
                total = objective + sum(self.losses) / replicas
            variables = self.trainable_variables  # after the forward pass has built them
            scaled = (self.optimizer.get_scaled_loss(total) if self.config.mixed_precision
                      else total)
        gradients = tape.gradient(scaled, variables)
        if self.config.mixed_precision:
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        # Unused branches (e.g. the GI head when lambda_gen = 0) have no gradient.
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None])
        return parts

    def test_step(self, inputs):
        if tf.distribute.get_strategy().num_replicas_in_sync == 1:
            return self.loss_parts(inputs, training=False)
        return self._global_parts(inputs, training=False)[0]


class DeltaUnfreeze(tf.keras.callbacks.Callback):
    """Opens the δ gate after ``delta_frozen_epochs`` epochs (spec §2: δ frozen first)."""

    def __init__(self, frozen_epochs: int):
        super().__init__()
        self.frozen_epochs = frozen_epochs

    def on_epoch_begin(self, epoch, logs=None):
        if self.model.config.use_delta and epoch >= self.frozen_epochs:
            if not self.model.items.built:  # epoch 0, before the first batch built the tower
                self.model.items.build(None)
            self.model.items.delta_gate.assign(1.0)


