"""How far training is: a progress bar over epochs on a terminal, one log line per epoch.

Replaces Keras' own printing (``fit(verbose=2)`` writes two lines an epoch to stdout,
whatever the output is); the bar is ``stars.console.progress`` (silent off a terminal) and
the per-epoch metrics go to the log (``stars --verbose`` shows them).
"""
from __future__ import annotations

import logging
import time

import tensorflow as tf

from stars.console import progress

log = logging.getLogger(__name__)
SHOWN = ("loss", "val_loss", "val_ndcg@10")  # on the bar; the log line has every metric


class EpochProgress(tf.keras.callbacks.Callback):
    def __init__(self, desc: str = "training"):
        super().__init__()
        self.desc = desc
        self.bar = None
        self.started = 0.0

    def on_train_begin(self, logs=None):
        self.bar = progress(total=self.params.get("epochs"), desc=self.desc, unit="epoch")

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        log.info("%s epoch %d/%s (%.1f s): %s", self.desc, epoch + 1, self.params.get("epochs"),
                 time.perf_counter() - self.started,
                 ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items())))
        if self.bar is not None:
            self.bar.set_postfix({k: f"{logs[k]:.4f}" for k in SHOWN if k in logs})
            self.bar.update(1)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
