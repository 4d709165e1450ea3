"""InputAdapter against a plain-Python reference: left padding, truncation, targets, pools."""
import numpy as np
import tensorflow as tf

from models.inputs import EVENT_FEATURES, InputAdapter

ITEMS = ["a", "b", "c", "d", "e"]


def _ragged(rows, dtype):
    return tf.RaggedTensor.from_row_lengths(tf.constant([v for r in rows for v in r], dtype),
                                            [len(r) for r in rows]).to_sparse()


def _features(histories, targets, pages, target_pages):
    n = [len(h) for h in histories]
    f = {"item_id": _ragged(histories, tf.string),
         "target_item_id": _ragged(targets, tf.string),
         "page_item_count": _ragged([[len(p) for p in ps] for ps in pages], tf.int64),
         "page_item_id": _ragged([[i for p in ps for i in p] for ps in pages], tf.string),
         "target_page_item_id": _ragged(target_pages, tf.string)}
    for name in EVENT_FEATURES:  # value = 10 * (position in history) + 1, so it is traceable
        f[name] = _ragged([[10 * j + 1 for j in range(k)] for k in n], tf.int64)
    for name in ("hour", "day_of_week", "week_of_year", "holiday"):
        f[f"target_{name}"] = tf.constant([7] * len(histories), tf.int64)
    # Event times 100 * (position + 1) s; the request 1000 * (row + 1) s.
    f["timestamp"] = _ragged([[100 * (j + 1) for j in range(k)] for k in n], tf.int64)
    f["target_timestamp"] = tf.constant([1000 * (r + 1) for r in range(len(histories))],
                                        tf.int64)
    return f


def test_left_padding_truncation_targets_and_pools():
    histories = [["a", "b", "c", "d"], ["e"], ["b", "zzz"]]
    pages = [[["a", "e"], [], ["c", "a"], ["d"]], [["e", "a"]], [[], ["b"]]]
    f = _features(histories, [["e", "a"], ["c"], ["zzz"]], pages, [["e", "b"], [], ["a"]])
    out = InputAdapter(ITEMS, max_history=3)(f)
    np.testing.assert_array_equal(out["items"].numpy(), [[1, 2, 3], [-1, -1, 4], [-1, 1, -1]])
    np.testing.assert_array_equal(out["position"].numpy(), [[3, 2, 1], [0, 0, 1], [0, 2, 0]])
    # Truncation keeps the latest events: row 0 drops "a" (history position 0).
    np.testing.assert_array_equal(out["event_type_id"].numpy()[0], [11, 21, 31])
    np.testing.assert_array_equal(out["next_items"].numpy(),
                                  [[2, 3, 4], [-1, 4, 2], [1, -1, -1]])
    np.testing.assert_array_equal(out["target"].numpy(), [4, 2, -1])
    np.testing.assert_array_equal(out["next_hour"].numpy()[1], [0, 1, 7])
    # Each position's request time is its next event's; the last position's the request's.
    np.testing.assert_array_equal(out["target_timestamp"].numpy(), [1000, 2000, 3000])
    np.testing.assert_array_equal(out["next_timestamp"].numpy(),
                                  [[300, 400, 1000], [0, 100, 2000], [100, 200, 3000]])
    pools = out["next_pools"].to_list()
    # Each position's pool is the page of the event it predicts: row 0's first position
    # ("b") predicts "c", shown with "a"; the last position predicts the target.
    assert pools[0:3] == [[2, 0], [3], [4, 1]]
    # Row 1: padding predicts "e" (the loss masks it out), "e" predicts the target (no page).
    assert pools[3:6] == [[], [4, 0], []]
    # Row 2: unknown items are -1 in the pool and history alike.
    assert pools[6:9] == [[], [1], [0]]


def test_history_indices_keep_the_whole_history():
    """What a ranking masks: every event, not only the latest ``max_history``."""
    histories = [["a", "b", "c", "d"], ["e"], ["b", "zzz"]]
    pages = [[[] for _ in h] for h in histories]
    f = _features(histories, [["e"], ["c"], ["a"]], pages, [[], [], []])
    seen = InputAdapter(ITEMS, max_history=2).history_indices(f)
    assert seen.to_list() == [[0, 1, 2, 3], [4], [1, -1]]
