"""Feature names shared by the Transform functions, the Trainer and serving,
and small helpers that treat sparse (variable-length) and dense inputs alike.

A feature that always has the same number of values is inferred by SchemaGen as
fixed-length (dense); otherwise Transform hands it over as a SparseTensor.  The
helpers below accept either, so the preprocessing code does not depend on what
one particular dataset happened to look like.
"""
import tensorflow as tf

# Transform output vocabularies (tft_output.vocabulary_file_by_name).
POPULARITY_VOCAB = "item_popularity"   # interactions: "count item" lines, train split
EVENT_TYPE_VOCAB = "event_type"
REGION_VOCAB = "region"
ITEM_VOCAB = "item_id"                 # catalogue: the item index of the whole catalogue
SUBCLASS_VOCAB = "subclass"
CATEGORY_VOCAB = "category"
BRAND_VOCAB = "brand"
TAG_VOCAB = "attribute_tags"

USER_NUMERIC_PREFIX = "user_num_"
USER_CATEGORICAL_PREFIX = "user_cat_"
NUMERIC_BUCKETS = 10
CATEGORICAL_TOP_K = 10_000
BRAND_TOP_K = 20_000

PASSTHROUGH_SEQUENCE_FEATURES = (
    "user_id", "item_id", "timestamp", "session_id", "page_id", "page_item_id",
    "page_item_count", "history_length", "target_item_id", "target_timestamp",
    "target_page_item_id")
EVENT_CALENDAR_FEATURES = ("hour", "day_of_week", "week_of_year", "holiday")
# Time from an event to the request, in hours:
# <1h, <6h, <1d, <3d, <1w, <2w, <1m, <3m, <6m, <1y, older.
RECENCY_BOUNDARIES_HOURS = (1.0, 6.0, 24.0, 72.0, 168.0, 336.0, 720.0, 2160.0, 4320.0, 8760.0)
RECENCY_BUCKETS = len(RECENCY_BOUNDARIES_HOURS) + 1


def values(x):
    """The flat values of a sparse, ragged or dense feature."""
    if isinstance(x, tf.SparseTensor):
        return x.values
    if isinstance(x, tf.RaggedTensor):
        return x.flat_values
    return tf.reshape(x, [-1])


def row_ids(x):
    """The batch row of each of ``values(x)``."""
    if isinstance(x, tf.SparseTensor):
        return x.indices[:, 0]
    if isinstance(x, tf.RaggedTensor):
        return x.value_rowids()
    shape = tf.shape(x, out_type=tf.int64)
    return tf.repeat(tf.range(shape[0]), tf.reduce_prod(shape[1:]))


def map_values(x, fn):
    """Applies an element-wise ``fn`` keeping the feature's sparsity structure."""
    if isinstance(x, tf.SparseTensor):
        return tf.SparseTensor(x.indices, fn(x.values), x.dense_shape)
    if isinstance(x, tf.RaggedTensor):
        return x.with_flat_values(fn(x.flat_values))
    return fn(x)


def first(x, default=0):
    """[batch] tensor of each row's first value (``default`` for empty rows)."""
    if isinstance(x, tf.RaggedTensor):
        x = x.to_sparse()
    if isinstance(x, tf.SparseTensor):
        dense = tf.sparse.to_dense(x, default_value=tf.cast(default, x.dtype))
        dense = tf.pad(dense, [[0, 0], [0, 1]], constant_values=tf.cast(default, x.dtype))
        return dense[:, 0]
    return x[:, 0] if x.shape.rank == 2 else x


def dense_with_missing(x):
    """A 0-or-1-valued float feature -> ([batch] value with 0 for missing, missing flag)."""
    value = tf.cast(first(x, default=float("nan")), tf.float32)
    missing = tf.math.is_nan(value)
    return tf.where(missing, tf.zeros_like(value), value), missing


def recency_buckets(timestamps, target_time):
    """Bucketed hours from each event to its row's request time."""
    def bucketize(event_time, request_time):
        hours = tf.cast(tf.maximum(request_time - event_time, 0), tf.float32) / 3600.0
        return tf.cast(tf.raw_ops.Bucketize(input=hours, boundaries=list(RECENCY_BOUNDARIES_HOURS)),
                       tf.int64)
    target_time = tf.cast(target_time, tf.int64)
    if isinstance(timestamps, tf.RaggedTensor):
        timestamps = timestamps.to_sparse()
    if isinstance(timestamps, tf.SparseTensor):
        rows = timestamps.indices[:, 0]
        return tf.SparseTensor(timestamps.indices,
                               bucketize(timestamps.values, tf.gather(target_time, rows)),
                               timestamps.dense_shape)
    return bucketize(timestamps, target_time[:, None])
