"""Optimiser of STARS (§4.3): AdamW under a one-cycle learning-rate schedule.

A short linear warm-up keeps the early, badly scaled Adam steps small while
the transformer's attention is still near uniform; the cosine decay then
anneals to a small final rate.  Decoupled weight decay regularises the weight
matrices but not biases or normalisation scales, which it would only distort.
"""
from __future__ import annotations

import math

import tensorflow as tf

# Variables that are not decayed: biases and LayerNormalization's gamma / beta.
NO_DECAY = ["bias", "layer_normalization", "gamma", "beta"]


def _check_fraction(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


class OneCycle(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from peak·initial_fraction to peak over warmup_fraction·total_steps,
    then cosine decay to peak·final_fraction at total_steps, constant afterwards."""

    def __init__(self, peak_learning_rate: float, total_steps: int, warmup_fraction: float = 0.1,
                 initial_fraction: float = 0.1, final_fraction: float = 0.01, name=None):
        super().__init__()
        if not peak_learning_rate > 0:
            raise ValueError(f"peak_learning_rate must be > 0, got {peak_learning_rate}")
        if int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1, got {total_steps}")
        _check_fraction("warmup_fraction", warmup_fraction)
        _check_fraction("initial_fraction", initial_fraction)
        _check_fraction("final_fraction", final_fraction)
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_fraction = float(warmup_fraction)
        self.initial_fraction = float(initial_fraction)
        self.final_fraction = float(final_fraction)
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name or "OneCycle"):
            step = tf.cast(step, tf.float32)
            peak = self.peak_learning_rate
            total = float(self.total_steps)
            warmup = self.warmup_fraction * total
            start, end = peak * self.initial_fraction, peak * self.final_fraction
            # `or 1.0` only guards a division whose branch is unused when the phase is empty.
            rising = start + (peak - start) * step / (warmup or 1.0)
            progress = tf.clip_by_value((step - warmup) / ((total - warmup) or 1.0), 0.0, 1.0)
            progress = tf.where(step >= total, 1.0, progress)
            falling = end + (peak - end) * 0.5 * (1.0 + tf.cos(math.pi * progress))
            return tf.where(step < warmup, rising, falling)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "total_steps": self.total_steps,
                "warmup_fraction": self.warmup_fraction,
                "initial_fraction": self.initial_fraction,
                "final_fraction": self.final_fraction, "name": self.name}


def make_optimizer(config, total_steps: int):
    """AdamW(weight_decay, clipnorm) on a OneCycle peaking at ``config.learning_rate``.

    Biases and LayerNorm parameters are excluded from decay (names in
    ``NO_DECAY``).  With ``config.mixed_precision`` the optimiser is wrapped in a
    LossScaleOptimizer so float16 gradients do not underflow; the model's train
    step then scales the loss and unscales the gradients.
    """
    if config.weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {config.weight_decay}")
    if not config.clipnorm > 0:
        raise ValueError(f"clipnorm must be > 0, got {config.clipnorm}")
    schedule = OneCycle(config.learning_rate, total_steps,
                        warmup_fraction=config.warmup_fraction)
    optimizer = tf.keras.optimizers.AdamW(learning_rate=schedule,
                                          weight_decay=config.weight_decay,
                                          clipnorm=config.clipnorm)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    if config.mixed_precision:
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer
