"""The co-occurrence counts (evaluation.cooccurrence) against plain-Python references."""
from collections import Counter

import numpy as np

from evaluation.cooccurrence import CooccurrenceCounts
from tests.test_lambdamart import NUM_ITEMS, TRAIN, _split


def _counts():
    return CooccurrenceCounts(_split([s[:-1] for s in TRAIN], [s[-1:] for s in TRAIN]),
                              NUM_ITEMS)


def _reference_matrix():
    """b counts 1/d when it follows a by d <= 3 events in a training sequence (a != b)."""
    cooc, adjacent = Counter(), Counter()
    for seq in TRAIN:
        for i, a in enumerate(seq):
            for d in (1, 2, 3):
                if i + d < len(seq) and seq[i + d] != a:
                    cooc[a, seq[i + d]] += 1.0 / d
                    adjacent[a, seq[i + d]] += d == 1
    dense = np.zeros((NUM_ITEMS, NUM_ITEMS))
    transitions = np.zeros((NUM_ITEMS, NUM_ITEMS))
    for (a, b), v in cooc.items():
        dense[a, b] = v
    for (a, b), v in adjacent.items():
        transitions[a, b] = v
    return dense, transitions


def test_counts_match_the_windowed_reference():
    counts = _counts()
    dense, transitions = _reference_matrix()
    np.testing.assert_allclose(counts.matrix.toarray(), dense, rtol=1e-6)
    np.testing.assert_array_equal(counts.transitions.toarray(), transitions)
    np.testing.assert_array_equal(counts.out_degree, transitions.sum(axis=1))


def test_recent_weights_the_last_three_items_from_the_latest():
    counts = _counts()
    dense, _ = _reference_matrix()
    histories = [[0, 1], [2], [], [3, 2, 0, 1], [11]]
    got = counts.recent([np.array(h, np.int64) for h in histories])
    assert got.shape == (len(histories), NUM_ITEMS)
    for row, history in enumerate(histories):
        expected = sum((w * dense[item] for w, item in zip((1.0, 0.5, 0.25), history[::-1])),
                       np.zeros(NUM_ITEMS))
        np.testing.assert_allclose(got[row], expected, rtol=1e-6)
    assert not got[2].any() and not got[4].any()  # no history; an item nothing followed
