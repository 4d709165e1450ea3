"""Cold items on the warm items' scale (STARS §4.1: new items scored from their text and tags).

A never-seen item has no learned residual δ, so its serving vector comes from the
frozen text embedding and the tags alone, and it is much shorter than a warm
item's: under a softmax the vector norms carry what each item learned from its
interactions, so a cold item scores below nearly every warm item whatever its text
says.  Calibration rescales each cold item's vector to a quantile of the warm
items' norms: its direction (what its text and tags say it is) decides which users
it reaches, its length is that of a typical warm item.  The quantile is a model-
selection choice made after training by ``choose_norm`` (the TFX Trainer's
``run_fn`` and ``stars eval`` alike): the largest quantile that costs at most
``NDCG_TOLERANCE`` of the validation NDCG@10; norm 0 = off.
"""
from typing import Optional

import numpy as np
import tensorflow as tf

# Quantiles of the warm items' norms tried on the validation target (None = off), ascending.
# The top ones matter where the item vectors are the tokens themselves (no serving
# projection): the warm norms then spread wide and a cold item needs a long vector to rank.
QUANTILES = (None, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
# The share of validation NDCG@10 new items may cost: a cold item shown displaces a warm one,
# so exposure for launches is a trade the catalogue owner makes; 1% is ours.
NDCG_TOLERANCE = 0.01


def rescale_cold(vectors, cold, target_norm):
    """``vectors`` [..., D]; ``cold`` [...] (1 = no interaction, 0 = warm); returns the
    vectors with every cold one rescaled to ``target_norm`` (nothing changes when it is 0)."""
    dtype = vectors.dtype
    norms = tf.norm(tf.cast(vectors, tf.float32), axis=-1, keepdims=True)
    target = tf.cast(target_norm, tf.float32)
    scaled = tf.cast(tf.cast(vectors, tf.float32) * (target / tf.maximum(norms, 1e-12)), dtype)
    apply = tf.logical_and(tf.cast(cold, tf.bool)[..., None], target > 0)
    return tf.where(apply, scaled, vectors)


def warm_norm(vectors: np.ndarray, cold: np.ndarray, quantile: Optional[float]) -> float:
    """The ``quantile`` of the warm items' vector norms (0.0 for ``None``: off)."""
    if quantile is None:
        return 0.0
    warm = np.asarray(vectors, np.float64)[~np.asarray(cold, bool)]
    if not len(warm):
        raise ValueError("no warm item to calibrate the cold items against")
    return float(np.quantile(np.linalg.norm(warm, axis=1), quantile))


def choose_norm(model, ranking, counts: np.ndarray, config) -> Optional[dict]:
    """Model selection of the cold items' serving norm on the validation target: off and
    each quantile of the warm items' norms are scored by ``ranking`` (a
    ``ValidationRanking``), and the largest quantile whose masked NDCG@10 stays within
    ``NDCG_TOLERANCE`` of off is kept: new items get exposure for at most that share of
    the warm ranking quality.  Leaves ``model.cold_item_norm`` set; returns what was tried
    and chosen, or None when the model cannot score a cold item (ID-only) or every item
    has interactions."""
    cold = np.asarray(counts) <= 0
    if not cold.any() or not (config.use_text or config.use_tags):
        return None
    model.cold_item_norm.assign(0.0)
    vectors = model.item_vectors().numpy()  # the learned part: what the norm calibrates
    queries = ranking.user_queries()  # the user side does not change: encoded once
    tried = []
    for quantile in QUANTILES:
        norm = warm_norm(vectors, cold, quantile)
        model.cold_item_norm.assign(norm)
        score = max(ndcg for _, ndcg in ranking.scores(queries).values())
        tried.append({"quantile": quantile, "norm": round(norm, 4),
                      "val_ndcg@10": round(score, 5)})
    floor = (1.0 - NDCG_TOLERANCE) * tried[0]["val_ndcg@10"]  # off comes first
    best = [t for t in tried if t["val_ndcg@10"] >= floor][-1]  # quantiles ascend
    model.cold_item_norm.assign(best["norm"])
    return {"chosen": best["quantile"], "norm": best["norm"], "cold_items": int(cold.sum()),
            "ndcg_tolerance": NDCG_TOLERANCE, "tried": tried}
