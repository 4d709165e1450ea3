"""Round-robin interleaving (stars.interleaving), the one RR rule of the sidecar, the
pipeline's Evaluator and the offline evaluation, against a plain-Python reference."""
import random

import numpy as np
import pytest

from stars.interleaving import interleave_round_robin, round_robin


def ref_interleave(a, b, k, first=0):
    """Slot by slot: each ranking's next item not yet taken (-1 entries skipped); the
    preferred ranking's when it has one, else the other's, else an empty slot."""
    out, src = [], []
    lists, ptr = [list(a), list(b)], [0, 0]
    for t in range(k):
        cand = []
        for w in (0, 1):
            while ptr[w] < len(lists[w]) and (lists[w][ptr[w]] < 0 or lists[w][ptr[w]] in out):
                ptr[w] += 1
            cand.append(lists[w][ptr[w]] if ptr[w] < len(lists[w]) else -1)
        pref = (first + t) % 2
        w = pref if cand[pref] >= 0 else 1 - pref
        if cand[w] < 0:
            out.append(-1)
            src.append(-1)
        else:
            out.append(cand[w])
            src.append(w)
            ptr[w] += 1
    return out, src


def _ref_pairs(a, b, k, first=0):
    """The reference's answer as round_robin gives it: (item, source), empty slots left out."""
    items, src = ref_interleave(a, b, k, first)
    return [(i, s) for i, s in zip(items, src) if s >= 0]


@pytest.mark.parametrize("a, b, k, start, want", [
    ([1, 2, 3, 4], [2, 5, 1, 6], 6, 0, [(1, 0), (2, 1), (3, 0), (5, 1), (4, 0), (6, 1)]),
    ([1, 2, 3, 4], [2, 5, 1, 6], 3, 1, [(2, 1), (1, 0), (5, 1)]),     # B starts
    ([], [], 5, 0, []),                                               # both empty
    ([], [4, 5], 3, 0, [(4, 1), (5, 1)]),                             # A empty: B fills
    ([7, 8, 9], [], 2, 0, [(7, 0), (8, 0)]),                          # k below the total
    ([1, 2], [1, 2], 4, 0, [(1, 0), (2, 1)]),                         # the same items
    ([3, 3, 4], [3, 5], 5, 0, [(3, 0), (5, 1), (4, 0)]),              # repeats in a list
    ([1], [2, 3, 4, 5], 4, 0, [(1, 0), (2, 1), (3, 1), (4, 1)]),      # unequal lengths
])
def test_round_robin_hand_examples(a, b, k, start, want):
    assert round_robin(a, b, k, start=start) == want
    assert _ref_pairs(a, b, k, start) == want


def test_round_robin_matches_the_reference():
    rng = random.Random(3)
    for _ in range(500):
        a = [rng.randrange(20) for _ in range(rng.randint(0, 12))]  # repeats allowed
        b = [rng.randrange(20) for _ in range(rng.randint(0, 12))]
        k, start = rng.randint(1, 25), rng.randint(0, 1)
        got = round_robin(a, b, k, start=start)
        assert got == _ref_pairs(a, b, k, start), (a, b, k, start)
        items = [i for i, _ in got]
        assert len(items) == len(set(items)) == min(k, len(set(a) | set(b)))


def test_round_robin_on_scored_ids_keys_by_id():
    """The sidecar's lists: (id, score) pairs, an item the same whatever its score."""
    gi = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
    ni = [("b", 0.7), ("d", 0.6), ("a", 0.5)]
    got = round_robin(gi, ni, 10, key=lambda pair: pair[0])
    assert got == [(("a", 0.9), 0), (("b", 0.7), 1), (("c", 0.1), 0), (("d", 0.6), 1)]


def test_interleave_round_robin_rows_match_the_reference():
    rng = np.random.default_rng(3)
    n = 200
    a = np.stack([rng.permutation(15)[:8] for _ in range(n)])
    b = np.stack([rng.permutation(15)[:6] for _ in range(n)])
    a[rng.random(a.shape) < 0.15] = -1
    first = rng.integers(0, 2, size=n)
    for k in (3, 12, 20):
        items, src = interleave_round_robin(a, b, k, first=first)
        assert items.shape == src.shape == (n, k) and src.dtype == np.int8
        for i in range(n):
            exp_items, exp_src = ref_interleave(a[i], b[i], k, int(first[i]))
            assert items[i].tolist() == exp_items and src[i].tolist() == exp_src, (k, i)


def test_interleave_round_robin_padding_and_empty_input():
    items, src = interleave_round_robin(np.array([[7, -1, -1]]), np.array([[7, 8, -1]]), 5)
    np.testing.assert_array_equal(items, [[7, 8, -1, -1, -1]])
    np.testing.assert_array_equal(src, [[0, 1, -1, -1, -1]])
    items, src = interleave_round_robin(np.zeros((0, 4), np.int64), np.zeros((0, 2), np.int64), 3)
    assert items.shape == src.shape == (0, 3)
    items, _ = interleave_round_robin(np.zeros((2, 0), np.int64), np.array([[1], [2]]), 2)
    np.testing.assert_array_equal(items, [[1, -1], [2, -1]])


def test_interleave_round_robin_rejects_bad_input():
    with pytest.raises(ValueError, match="rows"):
        interleave_round_robin(np.zeros((2, 3), np.int64), np.zeros((3, 3), np.int64), 3)
    with pytest.raises(ValueError, match="positive"):
        interleave_round_robin(np.zeros((1, 3), np.int64), np.zeros((1, 3), np.int64), 0)
    with pytest.raises(TypeError):
        interleave_round_robin(np.zeros((1, 3)), np.zeros((1, 3)), 3)
