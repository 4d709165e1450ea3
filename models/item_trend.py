"""Item trend prior: how much each item was bought in the weeks just before the request.

Real-time context on the item side (STARS §4.4: the context offset is added "to the
user and/or item embeddings at inference, from the request's current context").
Catalogues turn over: products launch, peak and are discontinued, so the items a
shopper buys at time t are the ones being bought around t.  A static item tower
cannot know that; the logit gets a learned term instead,

    s_j(t) = h · w_j + β · log(1 + n_j(t)),

where n_j(t) counts item j's training interactions in the ``window`` periods
(weeks) strictly before the period of t.  The request's own period is left out,
so a training target never counts itself.  β is learned and starts at 0, so an
untrained trend changes nothing.  At serving, the index holds the trend at
export (after the last training period) as one extra coordinate and the query
gets β as its own, so retrieval stays one inner product.

On Amazon Beauty's validation targets (no test split), adding log(1 + 2-week count)
to a trained STARS' NI scores raised NDCG@10 from 0.0677 to 0.0703
(BUILD_NOTES.md).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

PERIOD_S = 7 * 86400   # one week
WINDOW = 2             # periods counted before the request's


@dataclasses.dataclass(frozen=True)
class TrendTable:
    """``rows[p, j]`` = log(1 + interactions of item j in periods [p − window, p)); the
    period of time t is (t − origin) // period_s, clipped to the rows (the last row is the
    trend after the data: what serving uses)."""
    origin: int
    period_s: int
    window: int
    rows: np.ndarray       # float32 [num_periods + 1, num_items]

    def row_of(self, timestamps) -> np.ndarray:
        return period_rows(np.asarray(timestamps, np.int64), self.origin, self.period_s,
                           len(self.rows))


def period_rows(timestamps, origin: int, period_s: int, num_rows: int):
    """The table row of each request time (numpy or TF int64)."""
    if isinstance(timestamps, np.ndarray):
        return np.clip((timestamps - origin) // period_s, 0, num_rows - 1)
    rows = tf.math.floordiv(tf.cast(timestamps, tf.int64) - origin, period_s)
    return tf.clip_by_value(rows, 0, num_rows - 1)


def trend_table(items, timestamps, num_items: int, period_s: int = PERIOD_S,
                window: int = WINDOW) -> TrendTable:
    """The table from interaction events (catalogue indices and unix seconds; unknown
    items, index < 0, are skipped).  No event: one all-zero row."""
    items = np.asarray(items, np.int64)
    timestamps = np.asarray(timestamps, np.int64)
    known = items >= 0
    items, timestamps = items[known], timestamps[known]
    origin = int(timestamps.min()) if len(timestamps) else 0
    return table_from_counts(origin, period_s, window, (timestamps - origin) // max(period_s, 1),
                             items, np.ones(len(items), np.float32), num_items)


def table_from_counts(origin: int, period_s: int, window: int, periods, items, counts,
                      num_items: int) -> TrendTable:
    """The table from (period since ``origin``, catalogue index, count) triples: the
    Trainer's, from the Transform's counts (``models.item_trend_counts``)."""
    if period_s <= 0 or window <= 0:
        raise ValueError(f"period_s and window must be positive, got {period_s}, {window}")
    periods = np.asarray(periods, np.int64)
    if not len(periods):
        return TrendTable(origin, period_s, window, np.zeros((1, num_items), np.float32))
    num_periods = int(periods.max()) + 1
    table = np.zeros((num_periods + window, num_items), np.float32)  # padded for the window
    np.add.at(table, (periods + window, np.asarray(items, np.int64)),
              np.asarray(counts, np.float32))
    cumulative = np.cumsum(table, axis=0)
    # rows[p] = events in periods p − window .. p − 1 = cum[p + window − 1] − cum[p − 1].
    upper = cumulative[window - 1:window - 1 + num_periods + 1]
    lower = np.vstack([np.zeros((1, num_items), np.float32),
                       cumulative[:num_periods]])
    return TrendTable(origin, period_s, window, np.log1p(upper - lower).astype(np.float32))


class ItemTrend(tf.keras.layers.Layer):
    """β · rows[period(t)]: the trend term of every (request, item) logit."""

    def __init__(self, table: TrendTable, **kwargs):
        kwargs.setdefault("dtype", "float32")  # a count term: full precision under mixed
        super().__init__(**kwargs)
        self.origin, self.period_s = int(table.origin), int(table.period_s)
        self.num_rows = len(table.rows)
        self.rows = tf.Variable(table.rows, trainable=False, name="trend_rows")
        self.beta = self.add_weight(name="beta", shape=[], initializer="zeros")

    def _rows(self, request_time):
        return period_rows(request_time, self.origin, self.period_s, self.num_rows)

    def call(self, request_time):
        """[N] unix seconds -> [N, I] logit offsets over the whole catalogue."""
        return self.beta * tf.gather(self.rows, self._rows(request_time))

    def gather(self, request_time, items):
        """[N] unix seconds, [N, K] item indices -> [N, K] logit offsets."""
        index = tf.stack([tf.broadcast_to(self._rows(request_time)[:, None], tf.shape(items)),
                          tf.cast(items, tf.int64)], axis=-1)
        return self.beta * tf.gather_nd(self.rows, index)

    def current(self):
        """[I] the trend after the last training period (serving's, fixed at export)."""
        return self.rows[-1]
