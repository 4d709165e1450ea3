"""Context (STARS §2, §4.4): per-event context/engagement/position/recency encodings,
and the request-time context offset Δ_ctx = W_c [τ(t); x(t, ℓ)].

τ(t) is a learnable time-of-year embedding (week of year); x(t, ℓ) holds the
exogenous signals of the request: holiday (one-hot), hour and day-of-week, and
optional numeric signals (weather, promotion flags) in ``num_signals`` slots.
The offset is added to the user embedding at inference from the request's
context, so new context needs no retraining of the backbone: only W_c (and τ)
need fine-tuning for a new signal.  W_c starts at zero, so an untrained offset
changes nothing.
"""
import tensorflow as tf

from models import calendar


class EventEncodings(tf.keras.layers.Layer):
    """Sum of the encodings added to each interaction token."""

    def __init__(self, d_model: int, max_positions: int, num_event_types: int,
                 num_recency_buckets: int, use_context: bool, use_engagement: bool,
                 use_recency: bool, **kwargs):
        super().__init__(**kwargs)
        self.use_context, self.use_engagement, self.use_recency = (
            use_context, use_engagement, use_recency)
        self.position = tf.keras.layers.Embedding(max_positions + 1, d_model, name="position")
        self.engagement = tf.keras.layers.Embedding(num_event_types + 1, d_model, name="engagement")
        self.recency = tf.keras.layers.Embedding(num_recency_buckets, d_model, name="recency")
        self.hour = tf.keras.layers.Embedding(calendar.HOUR_BUCKETS, d_model, name="hour")
        self.day_of_week = tf.keras.layers.Embedding(calendar.DAY_OF_WEEK_BUCKETS, d_model,
                                                     name="day_of_week")
        self.week = tf.keras.layers.Embedding(calendar.WEEK_OF_YEAR_BUCKETS, d_model, name="week")
        self.holiday = tf.keras.layers.Embedding(calendar.HOLIDAY_BUCKETS, d_model, name="holiday")

    def call(self, events):
        """``events``: dict of int [B, L] ids; ``position`` counts back from the latest event."""
        out = self.position(events["position"])
        if self.use_engagement:
            out += self.engagement(events["event_type_id"])
        if self.use_recency:
            out += self.recency(events["recency_bucket"])
        if self.use_context:
            out += (self.hour(events["hour"]) + self.day_of_week(events["day_of_week"])
                    + self.week(events["week_of_year"]) + self.holiday(events["holiday"]))
        return out


class ContextOffset(tf.keras.layers.Layer):
    """Δ_ctx = W_c [τ(t); x(t, ℓ)] in the serving space."""

    def __init__(self, serving_dim: int, num_signals: int = 4, tau_dim: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.num_signals = num_signals
        self.tau = tf.keras.layers.Embedding(calendar.WEEK_OF_YEAR_BUCKETS, tau_dim, name="tau")
        self.w_c = tf.keras.layers.Dense(serving_dim, use_bias=False, name="w_c",
                                         kernel_initializer="zeros")

    def call(self, context):
        """``context``: ``week_of_year``, ``holiday``, ``hour``, ``day_of_week`` [B] ints and
        optional ``signals`` [B, num_signals] floats (weather, promotion, ...)."""
        signals = context.get("signals")
        if signals is None:
            signals = tf.zeros([tf.shape(context["week_of_year"])[0], self.num_signals])
        tau = self.tau(context["week_of_year"])
        x = tf.concat([
            tau,
            tf.one_hot(context["holiday"], calendar.HOLIDAY_BUCKETS, dtype=tau.dtype),
            tf.one_hot(context["hour"], calendar.HOUR_BUCKETS, dtype=tau.dtype),
            tf.one_hot(context["day_of_week"], calendar.DAY_OF_WEEK_BUCKETS, dtype=tau.dtype),
            tf.cast(signals, tau.dtype)], axis=-1)
        return self.w_c(x)
