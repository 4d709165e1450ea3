"""Semantic match to the latest items: the text-similarity part of the NI score.

A shopper's next purchase often resembles what they just bought (a refill, the same
line's matching product).  The encoder carries the latest items' tokens into h_next,
but its 128 learned coordinates must also hold everything else the sequence says; a
direct text match is a second, full-width view of "items like the latest ones".  So
the NI score is

    s_j = h_next · w_j + η · Σ_k r_k key(latest_k) · key(j) / Σ_k r_k,

key(i) = item i's frozen text embedding, centred on the catalogue mean and unit-
normalised (a cosine without the direction every title shares), r = (1, ½, ¼) over the
latest three known events (``models.latest_items``, shared with the successor source).  η is not
trained: like the cold-item norm it is chosen on the validation target after training
(``choose_weight``; 0 = off, and ties go to the smaller weight), so training is
unchanged and a model that gains nothing from it keeps η = 0.  Trained in, with learned
r_k, the same term gave ~1% (BUILD_NOTES, "Offline evaluation"); chosen after training it
ranks with the fully trained h_next, where it gave +4% on Beauty's validation target.

In the serving space the keys are appended to the item vectors and η Σ_k r_k key(latest_k)
/ Σ_k r_k to h_next (zeros to h_gen and the context offset), so retrieval stays one inner
product: the ScaNN index, ``search`` and the stored user embeddings carry it unchanged.
A cold item has a key (its text), so it is matched from its first day.

The keys are as wide as the text embedding (384 for MiniLM, 768+ for larger encoders),
which widens the serving space and the index by that much.  ``dim`` > 0 keeps only the
catalogue text's ``dim`` principal directions (the centred text projected on them, then
unit-normalised): on Beauty 128 of MiniLM's 384 kept all of the validation gain and 32
kept ~80% of it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from models.latest_items import RECENCY, recency_weights

WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0)  # η tried on the validation target, ascending


def principal_directions(centred: np.ndarray, dim: int) -> np.ndarray:
    """[d_e, dim] the top-``dim`` eigenvectors of the centred rows' scatter matrix (a
    d_e × d_e eigenproblem: cheap for any catalogue size), largest first."""
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
    return vectors[:, np.argsort(eigenvalues)[::-1][:dim]]


def semantic_keys(text: np.ndarray, dim: int = 0) -> np.ndarray:
    """[I, d] unit keys: text rows centred on the catalogue mean, projected on its ``dim``
    principal directions when 0 < ``dim`` < d_e (else d = d_e, no projection), and
    unit-normalised.  Rows that are all zero (no text) or equal to the mean keep
    all-zero keys."""
    if dim < 0:
        raise ValueError(f"semantic_match_dim must be >= 0 (0 = the full text width), got {dim}")
    text = np.asarray(text, np.float64)
    if not len(text):
        return text.astype(np.float32)
    centred = text - text.mean(axis=0)
    if 0 < dim < text.shape[1]:
        centred = centred @ principal_directions(centred, dim)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    blank = (np.linalg.norm(text, axis=1) == 0) | (norms[:, 0] < 1e-9)
    keys = np.where(norms > 1e-9, centred / np.maximum(norms, 1e-9), 0.0)
    keys[blank] = 0.0
    return keys.astype(np.float32)


class SemanticMatch(tf.keras.layers.Layer):
    """The item keys and the match weight η (a model-selection choice, not trained)."""

    def __init__(self, text: np.ndarray, dim: int = 0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # a cosine term: full precision under mixed
        super().__init__(**kwargs)
        self.keys = tf.Variable(semantic_keys(text, dim), trainable=False, name="semantic_keys")
        self.dim = int(self.keys.shape[1])
        self.weight = tf.Variable(0.0, trainable=False, name="semantic_match_weight")

    def item_keys(self, indices=None):
        """[..., d_e] the keys of ``indices`` (every item when None)."""
        return self.keys if indices is None else tf.gather(self.keys, tf.cast(indices, tf.int32))

    def query(self, items, valid):
        """``items`` [B, L] catalogue indices (−1 unknown, left padded: the latest event is
        rightmost), ``valid`` [B, L] -> [B, d_e]: η Σ_k r_k key(latest_k) / Σ_k r_k over the
        latest ``len(RECENCY)`` known events (zeros for an empty history)."""
        recency = recency_weights(items, valid) / sum(RECENCY)
        keys = tf.gather(self.keys, tf.maximum(tf.cast(items, tf.int32), 0))
        return self.weight * tf.einsum("bl,bld->bd", recency, keys)


def choose_weight(model, ranking) -> Optional[dict]:
    """Model selection of η on the validation target: each of ``WEIGHTS`` is scored by
    ``ranking`` (a ``ValidationRanking``; NI masked NDCG@10, the score η changes) and the
    best is kept, ties to the smaller.  Leaves ``model.semantic_match.weight`` set;
    returns what was tried and chosen, or None for a model without the match (no text)
    or a ranking without NI."""
    match = getattr(model, "semantic_match", None)
    if match is None or "ni" not in ranking.variants:
        return None
    match.weight.assign(1.0)
    queries = ranking.user_queries()["ni"]   # encoded once: the match part is linear in η
    learned, matched = queries[:, :-match.dim], queries[:, -match.dim:]
    tried = []
    for weight in WEIGHTS:
        ni = np.concatenate([learned, np.float32(weight) * matched], axis=1)
        hr, ndcg = ranking.scores({"ni": ni})["ni"]
        tried.append({"weight": weight, "val_hr@10": round(hr, 5), "val_ndcg@10": round(ndcg, 5)})
    best = max(tried, key=lambda t: (t["val_ndcg@10"], -t["weight"]))
    match.weight.assign(best["weight"])
    return {"chosen": best["weight"], "recency": list(RECENCY), "tried": tried}
