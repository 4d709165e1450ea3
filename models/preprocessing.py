"""Transform ``preprocessing_fn`` for the interaction sequences (TFX template split:
the pipeline names this function; the logic lives here).

Analyzes the TRAIN split only, so the popularity prior and every statistic come
from training data.  Produces:

* ``item_popularity`` vocabulary with frequencies: c_j for the popularity prior
  p_j = (c_j + β) / (Σc + β|I|) of STARS §4.3 (items never seen get c_j = 0);
* ``item_trend_counts``: distinct training events per item and week, the item trend's
  counts; ``successor_counts``: the successor source's pair counts (Beam jobs:
  ``models.item_trend_counts``, ``models.successor_counts``);
* event-type and region vocabularies; calendar ids for every event and for the
  target (request) time; recency buckets (time from each event to the target);
* user features: numeric ones z-scored (mean-imputed, with a missing flag) and
  quantile-bucketed, categorical ones through top-k vocabularies with an OOV id.

Item ids stay strings: they are mapped to the catalogue's item vocabulary (built
by the catalogue Transform over the WHOLE catalogue) so cold-start items that
nobody interacted with still have an index.
"""
import tensorflow as tf
import tensorflow_transform as tft

from models import calendar, item_trend_counts, successor_counts
from models import features as F


def preprocessing_fn(inputs):
    outputs = {}
    for name in F.PASSTHROUGH_SEQUENCE_FEATURES:
        outputs[name] = inputs[name]

    train_items = tf.concat([F.values(inputs["item_id"]), F.values(inputs["target_item_id"])], 0)
    tft.vocabulary(train_items, vocab_filename=F.POPULARITY_VOCAB, store_frequency=True)
    item_trend_counts.analyze(inputs)
    successor_counts.analyze(inputs)

    event_vocab = tft.vocabulary(
        tf.concat([F.values(inputs["event_type"]), F.values(inputs["target_event_type"])], 0),
        vocab_filename=F.EVENT_TYPE_VOCAB)
    outputs["event_type_id"] = F.map_values(
        inputs["event_type"], lambda v: tft.apply_vocabulary(v, event_vocab, num_oov_buckets=1))
    outputs["target_event_type_id"] = tft.apply_vocabulary(
        F.first(inputs["target_event_type"]), event_vocab, num_oov_buckets=1)

    region_vocab = tft.vocabulary(
        tf.concat([F.values(inputs["region"]), F.values(inputs["target_region"])], 0),
        vocab_filename=F.REGION_VOCAB)
    outputs["target_region_id"] = tft.apply_vocabulary(
        F.first(inputs["target_region"]), region_vocab, num_oov_buckets=1)

    target_time = F.first(inputs["target_timestamp"])
    for name, ids in calendar.calendar_features(target_time).items():
        outputs[f"target_{name}"] = ids
    event_calendar = {}  # computed once for all the event features (one op set per call)

    def event_feature(values, name):
        if not event_calendar:
            event_calendar.update(calendar.calendar_features(values))
        return event_calendar[name]
    for name in F.EVENT_CALENDAR_FEATURES:
        outputs[name] = F.map_values(inputs["timestamp"],
                                     lambda v, name=name: event_feature(v, name))
    outputs["recency_bucket"] = F.recency_buckets(inputs["timestamp"], target_time)

    for name in sorted(inputs):
        if name.startswith(F.USER_NUMERIC_PREFIX):
            value, missing = F.dense_with_missing(inputs[name])
            present_mean = tft.mean(tf.boolean_mask(value, tf.logical_not(missing)))
            imputed = tf.where(missing, tf.fill(tf.shape(value), present_mean), value)
            outputs[f"{name}_z"] = tft.scale_to_z_score(imputed)
            outputs[f"{name}_bucket"] = tft.bucketize(imputed, F.NUMERIC_BUCKETS)
            outputs[f"{name}_missing"] = tf.cast(missing, tf.int64)
        elif name.startswith(F.USER_CATEGORICAL_PREFIX):
            outputs[f"{name}_id"] = tft.compute_and_apply_vocabulary(
                F.first(inputs[name], default=b""), top_k=F.CATEGORICAL_TOP_K,
                num_oov_buckets=1, vocab_filename=name)
    return outputs
