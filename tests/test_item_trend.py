"""models.item_trend against a loop-over-events numpy reference."""
import numpy as np
import pytest
import tensorflow as tf

from models import item_trend as IT

DAY = 86400


def _reference(items, times, num_items, origin, period_s, window, num_rows):
    """rows[p, j] = log(1 + events of j in periods p - window .. p - 1), event by event."""
    rows = np.zeros((num_rows, num_items))
    for p in range(num_rows):
        for item, t in zip(items, times):
            q = (t - origin) // period_s
            if p - window <= q < p:
                rows[p, item] += 1
    return np.log1p(rows)


def test_trend_table_counts_the_window_before_each_period():
    rng = np.random.default_rng(0)
    items = rng.integers(0, 5, size=200)
    times = 1_000_000 + rng.integers(0, 60 * DAY, size=200)
    table = IT.trend_table(items, times, num_items=6, period_s=7 * DAY, window=2)
    assert table.origin == times.min() and table.window == 2
    num_periods = (times.max() - times.min()) // (7 * DAY) + 1
    assert table.rows.shape == (num_periods + 1, 6)
    np.testing.assert_allclose(table.rows, _reference(items, times, 6, table.origin, 7 * DAY,
                                                      2, num_periods + 1), rtol=1e-6)
    assert not table.rows[:, 5].any()          # never bought: no trend
    assert not table.rows[0].any()             # nothing before the first period


def test_a_request_never_counts_its_own_period():
    # An event in week 3: a request in week 3 (its own) does not see it, week 4 does;
    # requests past the data read the last row (the trend after it), earlier ones row 0.
    origin = 0
    times = np.array([0, 3 * 7 * DAY + DAY])
    table = IT.trend_table(np.array([1, 0]), times, 2, period_s=7 * DAY, window=2)
    rows = table.row_of(np.array([3, 4, 5, 6, -10, 100]) * 7 * DAY + origin)
    assert rows.tolist() == [3, 4, 4, 4, 0, 4]  # 4 rows past the 4 periods: the last one
    np.testing.assert_allclose(table.rows[rows][:, 0], np.log1p([0, 1, 1, 1, 0, 1]))


def test_unknown_items_are_skipped_and_no_event_gives_a_zero_row():
    table = IT.trend_table(np.array([-1, 0]), np.array([5, 5]), 3)
    np.testing.assert_allclose(table.rows[-1], np.log1p([1, 0, 0]))
    empty = IT.trend_table(np.zeros(0), np.zeros(0), 3)
    assert empty.rows.shape == (1, 3) and not empty.rows.any()
    with pytest.raises(ValueError, match="positive"):
        IT.trend_table(np.array([0]), np.array([0]), 1, period_s=0)


def test_item_trend_layer_matches_numpy_for_the_catalogue_and_for_slices():
    rng = np.random.default_rng(1)
    items = rng.integers(0, 4, size=100)
    times = rng.integers(0, 40 * DAY, size=100)
    table = IT.trend_table(items, times, 4, period_s=7 * DAY, window=2)
    layer = IT.ItemTrend(table)
    assert float(layer.beta.numpy()) == 0.0    # untrained: changes nothing
    layer.beta.assign(0.7)
    request = np.array([0, 9 * DAY, 30 * DAY, 400 * DAY], np.int64)
    expected = 0.7 * table.rows[table.row_of(request)]
    np.testing.assert_allclose(layer(tf.constant(request)).numpy(), expected, rtol=1e-6)
    slices = np.array([[0, 3], [1, 1], [2, 0], [3, 2]])
    np.testing.assert_allclose(layer.gather(tf.constant(request), tf.constant(slices)).numpy(),
                               np.take_along_axis(expected, slices, axis=1), rtol=1e-6)
    np.testing.assert_allclose(layer.current().numpy(), table.rows[-1])


def test_beta_learns_from_a_softmax_whose_targets_are_the_trending_items():
    table = IT.trend_table(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3]) * DAY, 3,
                           period_s=7 * DAY, window=1)
    layer = IT.ItemTrend(table)
    request = tf.constant([8 * DAY, 9 * DAY], tf.int64)
    with tf.GradientTape() as tape:
        logits = layer(request)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=[0, 0], logits=logits))
    (grad,) = tape.gradient(loss, [layer.beta])
    assert float(grad.numpy()) < 0             # a step raises β: trending items win
