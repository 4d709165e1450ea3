"""CandidateSliceSampler against a plain-Python checker of the §4.3 negative-sampling rules."""
import numpy as np
import pytest
import tensorflow as tf

from models.negatives import RANDOM, SAME_PAGE, SUBCLASS, CandidateSliceSampler


def check_row(neg, src, pos, page, subclass, k, cap):
    """Asserts every rule for one row; returns the number of same-page and subclass picks."""
    num_items = len(subclass)
    neg, src = list(neg), list(src)
    assert len(neg) == len(src) == k
    assert pos not in neg, "the positive is never a negative"
    assert all(0 <= j < num_items for j in neg)
    assert src == sorted(src), "order: same-page, then subclass, then random"
    page_pool = {j for j in page if 0 <= j < num_items and j != pos}
    same = [j for j, s in zip(neg, src) if s == SAME_PAGE]
    sub = [j for j, s in zip(neg, src) if s == SUBCLASS]
    rand = [j for j, s in zip(neg, src) if s == RANDOM]
    assert len(same) == min(cap, len(page_pool), k)
    assert set(same) <= page_pool and len(set(same)) == len(same)
    members = {j for j in range(num_items) if subclass[j] == subclass[pos]} - {pos} - set(same)
    assert len(sub) == min(k - len(same), len(members))
    assert set(sub) <= members and len(set(sub)) == len(sub)
    free = set(range(num_items)) - {pos} - set(same) - set(sub)
    distinct = rand[:min(len(rand), len(free))]  # then with replacement (tiny catalogues)
    assert set(distinct) <= free and len(set(distinct)) == len(distinct)
    if num_items - 1 >= k:
        assert len(set(neg)) == k, "no repeats while the catalogue is large enough"
    if rand:
        assert not members - set(sub), "random fallback only after the subclass is exhausted"
    return len(same), len(sub)


def run_and_check(sampler, subclass, positives, pages, seed=None):
    ragged = tf.ragged.constant(pages, dtype=tf.int64, ragged_rank=1) if pages else None
    neg, src = sampler(tf.constant(positives, tf.int64), same_page=ragged, seed=seed)
    assert neg.dtype == src.dtype == tf.int64
    for b, pos in enumerate(positives):
        check_row(neg[b].numpy(), src[b].numpy(), pos, pages[b] if pages else [], subclass,
                  sampler.num_negatives, sampler.max_same_page)
    return neg.numpy(), src.numpy()


SHAPES = [  # (subclass of each item, K, max_same_page)
    ([0, 0], 1, 0),
    ([0, 1], 3, 2),                         # tiny: fallback with replacement
    ([0, 0, 0, 1], 6, 2),
    ([0, 1, 2, 3, 4], 4, 1),                # singleton subclasses: random right away
    ([3, 1, 3, 0, 1, 3, 3, 2, 0, 1], 5, 3),
    (list(np.arange(40) % 4), 12, 4),
    (list(np.arange(40) // 10), 30, 8),     # subclass exhausted, then random
]


@pytest.mark.parametrize("subclass,k,cap", SHAPES)
def test_rules_hold_over_many_seeds(subclass, k, cap):
    rng = np.random.default_rng(len(subclass) * 100 + k)
    n = len(subclass)
    sampler = CandidateSliceSampler(subclass, num_negatives=k, max_same_page=cap, seed=1)
    for trial in range(12):
        batch = 6
        positives = rng.integers(0, n, size=batch).tolist()
        pages = []
        for pos in positives:  # pages with the positive, duplicates, padding and bad ids
            page = rng.integers(-1, n + 2, size=rng.integers(0, 8)).tolist()
            if rng.uniform() < 0.5:
                page.append(pos)
            pages.append(page)
        run_and_check(sampler, subclass, positives, pages if trial % 3 else None,
                      seed=tf.constant([trial, 7], tf.int64))


def test_sources_and_page_cap_exactly():
    subclass = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    sampler = CandidateSliceSampler(subclass, num_negatives=7, max_same_page=2, seed=0)
    pages = [[7, 8, 9, 0, 0, 7], [1], []]
    neg, src = run_and_check(sampler, subclass, [0, 0, 11], pages)
    np.testing.assert_array_equal(src[0], [0, 0, 1, 1, 1, 2, 2])  # 2 page, 3 sub, 2 random
    assert set(neg[0, :2]) <= {7, 8, 9} and set(neg[0, 2:5]) == {1, 2, 3}
    np.testing.assert_array_equal(src[1], [0, 1, 1, 2, 2, 2, 2])  # page item 1 not resampled
    assert neg[1, 0] == 1 and set(neg[1, 1:3]) == {2, 3}
    np.testing.assert_array_equal(src[2], [1, 1, 1, 1, 2, 2, 2])
    assert set(neg[2, :4]) == {7, 8, 9, 10} and not set(neg[2, 4:]) & {7, 8, 9, 10, 11}


def test_dense_pages_padded_with_minus_one_and_max_same_page_above_k():
    subclass = np.arange(20) % 5
    sampler = CandidateSliceSampler(subclass, num_negatives=3, max_same_page=10, seed=0)
    assert sampler.max_same_page == 3
    pages = tf.constant([[4, 5, 6, 7, -1], [-1, -1, -1, -1, -1]], tf.int32)
    neg, src = sampler(tf.constant([1, 2], tf.int32), same_page=pages)
    assert neg.dtype == tf.int32
    np.testing.assert_array_equal(src.numpy()[0], [SAME_PAGE] * 3)
    assert set(neg.numpy()[0]) <= {4, 5, 6, 7} and len(set(neg.numpy()[0])) == 3
    check_row(neg.numpy()[1], src.numpy()[1], 2, [], subclass, 3, 3)


def test_every_page_subset_is_reachable():
    sampler = CandidateSliceSampler(np.zeros(10, int), num_negatives=2, max_same_page=2, seed=3)
    pages = tf.ragged.constant([[1, 2, 3, 4]] * 64, dtype=tf.int64)
    neg, _ = sampler(tf.zeros([64], tf.int64), same_page=pages)
    assert {frozenset(row) for row in neg.numpy().tolist()} == {
        frozenset((a, b)) for a in range(1, 5) for b in range(a + 1, 5)}


def test_tiny_catalogue_fills_with_replacement_never_the_positive():
    sampler = CandidateSliceSampler([0, 0], num_negatives=5, max_same_page=2, seed=0)
    neg, src = sampler(tf.constant([0, 1, 1]), same_page=tf.ragged.constant([[0, 1], [], [1]]))
    np.testing.assert_array_equal(neg.numpy(), [[1] * 5, [0] * 5, [0] * 5])
    np.testing.assert_array_equal(src.numpy()[:, 0], [SAME_PAGE, SUBCLASS, SUBCLASS])


def test_reproducible_with_explicit_seed_and_constructor_seed():
    subclass = np.arange(50) % 3
    positives = tf.constant([0, 5, 9, 49])
    a = CandidateSliceSampler(subclass, num_negatives=10, max_same_page=2, seed=42)
    b = CandidateSliceSampler(subclass, num_negatives=10, max_same_page=2, seed=42)
    for _ in range(2):  # the generators advance in lock-step
        np.testing.assert_array_equal(a(positives)[0].numpy(), b(positives)[0].numpy())
    seed = tf.constant([3, 4], tf.int64)
    np.testing.assert_array_equal(a(positives, seed=seed)[0].numpy(),
                                  b(positives, seed=seed)[0].numpy())
    draws = {tuple(a(positives)[0].numpy().ravel()) for _ in range(4)}
    assert len(draws) > 1, "without an explicit seed successive calls differ"


def test_works_inside_tf_function_and_on_empty_batches():
    subclass = np.arange(30) % 4
    sampler = CandidateSliceSampler(subclass, num_negatives=8, max_same_page=3, seed=0)

    @tf.function
    def sample(positives, pages):
        return sampler(positives, same_page=pages)

    pages = tf.ragged.constant([[1, 2, 3], [], [29, 28, 0, 0]], dtype=tf.int64)
    for _ in range(2):
        neg, src = sample(tf.constant([0, 7, 28], tf.int64), pages)
        for b, pos in enumerate([0, 7, 28]):
            check_row(neg[b].numpy(), src[b].numpy(), pos, pages[b].numpy().tolist(), subclass,
                      8, 3)
    empty_pages = tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int64),
                                                   tf.zeros([0], tf.int64))
    neg, src = sample(tf.zeros([0], tf.int64), empty_pages)
    assert neg.shape == (0, 8) and src.shape == (0, 8)


@pytest.mark.parametrize("kwargs", [
    {"item_subclass": [0]},
    {"item_subclass": [0, -1]},
    {"item_subclass": [0, 3], "num_subclass": 2},
    {"num_negatives": 0},
    {"max_same_page": -1},
])
def test_bad_constructor_arguments(kwargs):
    args = {"item_subclass": [0, 1, 1], "num_negatives": 2, "max_same_page": 1, **kwargs}
    with pytest.raises(ValueError):
        CandidateSliceSampler(**args)


def test_subclass_and_random_picks_are_uniform():
    subclass = np.r_[np.zeros(8, int), np.ones(5, int)]
    sampler = CandidateSliceSampler(subclass, num_negatives=9, max_same_page=0, seed=0)
    neg, src = sampler(tf.fill([3000], 3))
    neg, src = neg.numpy(), src.numpy()
    sub = np.bincount(neg[src == SUBCLASS], minlength=13)[[0, 1, 2, 4, 5, 6, 7]] / 3000
    rand = np.bincount(neg[src == RANDOM], minlength=13)[8:] / 3000
    np.testing.assert_allclose(sub, 1.0, atol=1e-9)      # all 7 subclass mates, each time
    np.testing.assert_allclose(rand, 2 / 5, atol=0.04)  # 2 of the 5 others, uniformly
