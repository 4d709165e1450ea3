"""Training reports one log line per epoch (and a bar on a terminal), not Keras' printing."""
import logging

import numpy as np
import tensorflow as tf

from models.epoch_progress import EpochProgress


def test_one_log_line_per_epoch_with_the_metrics_and_nothing_printed(caplog, capsys):
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)
    with caplog.at_level(logging.INFO, logger="models.epoch_progress"):
        model.fit(x, y, epochs=3, validation_data=(x, y), verbose=0,
                  callbacks=[EpochProgress("trainer")])
    lines = [r.getMessage() for r in caplog.records if r.name == "models.epoch_progress"]
    assert [line.split(" (")[0] for line in lines] == [
        "trainer epoch 1/3", "trainer epoch 2/3", "trainer epoch 3/3"]
    assert all("loss " in line and "val_loss " in line for line in lines)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # the bar is off without a terminal
