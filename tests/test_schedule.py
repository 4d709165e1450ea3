"""OneCycle against a numpy reference, and the optimiser make_optimizer builds."""
import math

import numpy as np
import pytest
import tensorflow as tf

from models.config import ModelConfig
from models.schedule import OneCycle, make_optimizer


def _reference(step, peak, total, warmup_fraction, initial, final):
    warmup = warmup_fraction * total
    if step < warmup:
        return peak * initial + (peak - peak * initial) * step / warmup
    progress = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
    return peak * final + (peak - peak * final) * 0.5 * (1 + math.cos(math.pi * progress))


def test_one_cycle_values():
    s = OneCycle(1e-3, 100, warmup_fraction=0.1, initial_fraction=0.1, final_fraction=0.01)
    np.testing.assert_allclose(s(0).numpy(), 1e-4, rtol=1e-5)          # base rate
    np.testing.assert_allclose(s(5).numpy(), 5.5e-4, rtol=1e-5)        # half-way up
    np.testing.assert_allclose(s(10).numpy(), 1e-3, rtol=1e-5)         # end of warm-up = peak
    np.testing.assert_allclose(s(55).numpy(), (1e-3 + 1e-5) / 2, rtol=1e-5)  # cosine mid-point
    np.testing.assert_allclose(s(100).numpy(), 1e-5, rtol=1e-5)        # end
    np.testing.assert_allclose(s(1000).numpy(), 1e-5, rtol=1e-5)       # constant after
    steps = np.arange(0, 130, 7)
    got = np.array([s(tf.constant(t, tf.int64)).numpy() for t in steps])
    want = [_reference(t, 1e-3, 100, 0.1, 0.1, 0.01) for t in steps]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all(np.diff(got[steps >= 10]) <= 1e-12)  # monotone decay after the peak


def test_one_cycle_edge_phases():
    no_warmup = OneCycle(2.0, 10, warmup_fraction=0.0, final_fraction=0.0)
    np.testing.assert_allclose(no_warmup(0).numpy(), 2.0)
    np.testing.assert_allclose(no_warmup(10).numpy(), 0.0, atol=1e-7)
    all_warmup = OneCycle(2.0, 10, warmup_fraction=1.0, initial_fraction=0.5, final_fraction=0.25)
    np.testing.assert_allclose(all_warmup(5).numpy(), 1.5)
    np.testing.assert_allclose(all_warmup(10).numpy(), 0.5)
    single = OneCycle(1.0, 1)
    assert np.isfinite(single(0).numpy()) and np.isfinite(single(3).numpy())


def test_one_cycle_config_round_trip():
    s = OneCycle(3e-4, 250, warmup_fraction=0.2, initial_fraction=0.05, final_fraction=0.1)
    restored = OneCycle.from_config(s.get_config())
    assert restored.get_config() == s.get_config()
    for t in (0, 49, 50, 120, 250, 400):
        assert restored(t).numpy() == s(t).numpy()
    serialized = tf.keras.optimizers.schedules.serialize(s)
    again = tf.keras.optimizers.schedules.deserialize(
        serialized, custom_objects={"OneCycle": OneCycle})
    assert again.get_config() == s.get_config()


@pytest.mark.parametrize("kwargs", [
    {"total_steps": 0}, {"total_steps": 2.5}, {"warmup_fraction": -0.1},
    {"warmup_fraction": 1.5}, {"initial_fraction": 2.0}, {"final_fraction": -1.0},
    {"peak_learning_rate": 0.0}])
def test_one_cycle_rejects_bad_arguments(kwargs):
    args = {"peak_learning_rate": 1e-3, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError):
        OneCycle(**args)


def test_make_optimizer_is_adamw_with_clipping_and_decay_exclusions():
    config = ModelConfig(learning_rate=2e-3, weight_decay=0.05, clipnorm=0.8,
                         warmup_fraction=0.2)
    opt = make_optimizer(config, 50)
    assert isinstance(opt, tf.keras.optimizers.AdamW)
    assert opt.clipnorm == pytest.approx(0.8)
    assert opt.weight_decay == pytest.approx(0.05)
    schedule = opt._learning_rate
    assert isinstance(schedule, OneCycle)
    assert schedule.peak_learning_rate == 2e-3 and schedule.total_steps == 50
    assert schedule.warmup_fraction == 0.2
    dense = tf.keras.layers.Dense(2)
    norm = tf.keras.layers.LayerNormalization()
    dense.build([None, 3])
    norm.build([None, 2])
    assert opt._use_weight_decay(dense.kernel)
    for variable in (dense.bias, norm.gamma, norm.beta):
        assert not opt._use_weight_decay(variable)


def test_make_optimizer_decays_kernels_only():
    opt = make_optimizer(ModelConfig(learning_rate=1e-2, weight_decay=0.5, warmup_fraction=0.0), 10)
    kernel = tf.Variable(tf.ones([2, 2]), name="kernel")
    bias = tf.Variable(tf.ones([2]), name="bias")
    opt.apply_gradients([(tf.zeros([2, 2]), kernel), (tf.zeros([2]), bias)])
    assert np.all(kernel.numpy() < 1.0)   # decoupled decay with a zero gradient
    np.testing.assert_allclose(bias.numpy(), 1.0)


def test_make_optimizer_mixed_precision_wraps_in_loss_scale_optimizer():
    opt = make_optimizer(ModelConfig(mixed_precision=True), 10)
    assert isinstance(opt, tf.keras.mixed_precision.LossScaleOptimizer)
    assert isinstance(opt.inner_optimizer, tf.keras.optimizers.AdamW)


@pytest.mark.parametrize("changes,steps", [
    ({}, 0), ({"warmup_fraction": 1.2}, 10), ({"weight_decay": -0.1}, 10),
    ({"clipnorm": 0.0}, 10), ({"learning_rate": -1.0}, 10)])
def test_make_optimizer_rejects_bad_arguments(changes, steps):
    with pytest.raises(ValueError):
        make_optimizer(ModelConfig(**changes), steps)
