"""The co-occurrence generator of the LambdaMART baseline, ranking the whole catalogue by
itself (the ``cooccurrence`` baseline), against a plain-Python reference."""
from collections import Counter

import numpy as np

from evaluation import lambdamart
from evaluation.splits import SplitData
from models.item_catalog import ItemCatalog

NUM_ITEMS = 12
TRAIN = [[0, 1, 2, 3], [1, 2, 4], [2, 3, 5, 1], [6, 7], [0, 2, 3], [8, 9, 10]]


def _split(histories, targets):
    return SplitData([f"u{i}" for i in range(len(histories))],
                     [np.array(h, np.int64) for h in histories],
                     [np.arange(len(h), dtype=np.int64) for h in histories],
                     [np.array(t, np.int64) for t in targets],
                     np.full(len(histories), 100, np.int64),
                     [np.zeros(0, np.int64) for _ in histories])


def _generator():
    rng = np.random.default_rng(0)
    catalog = ItemCatalog(np.array([f"i{j}" for j in range(NUM_ITEMS)]),
                          rng.normal(size=(NUM_ITEMS, 4)).astype(np.float32),
                          np.zeros((NUM_ITEMS, 1), np.float32), np.zeros(NUM_ITEMS, np.int32),
                          np.zeros(NUM_ITEMS, np.int32), np.zeros(NUM_ITEMS, np.float32),
                          np.ones(NUM_ITEMS, np.int32))
    train = _split([s[:-1] for s in TRAIN], [s[-1:] for s in TRAIN])
    counts = np.bincount(np.concatenate(TRAIN), minlength=NUM_ITEMS).astype(np.float64)
    return lambdamart.LambdaMartBaseline(catalog, counts, train), counts


def _reference(history, counts, k):
    """Directed co-occurrence within 3 events (weights 1/d) with the last three items
    (weights 1, 1/2, 1/4), popularity x 1e-3 added; ties to the lower index."""
    cooc = Counter()
    for seq in TRAIN:
        for i, a in enumerate(seq):
            for d in (1, 2, 3):
                if i + d < len(seq) and seq[i + d] != a:
                    cooc[a, seq[i + d]] += 1.0 / d
    scores = np.zeros(NUM_ITEMS)
    for w, item in zip((1.0, 0.5, 0.25), history[::-1][:3]):
        scores += [w * cooc[item, j] for j in range(NUM_ITEMS)]
    scores += 1e-3 * counts / counts.max()
    order = sorted(range(NUM_ITEMS), key=lambda j: (-scores[j], j))
    return order[:k], [j for j in order if j not in set(history)][:k]


def test_generator_ranks_the_catalogue_by_recent_cooccurrence():
    generator, counts = _generator()
    histories = [[0, 1], [2], [6], [11], [3, 2, 0, 1]]
    masked, unmasked = generator.rank_generator(_split(histories, [[5]] * 5), k=6)
    for row, history in enumerate(histories):
        expected_unmasked, expected_masked = _reference(history, counts, 6)
        assert unmasked[row].tolist() == expected_unmasked, history
        assert masked[row].tolist() == expected_masked, history
    # An unseen last item leaves popularity alone: the most frequent items first.
    assert unmasked[3][:3].tolist() == sorted(range(NUM_ITEMS), key=lambda j: (-counts[j], j))[:3]


def test_item_recency_reads_only_interactions_before_the_request():
    """last_seen_before against a loop: the latest training event of the item strictly
    before the row's request time (nothing after it is known at request time)."""
    model, _ = _generator()
    events = {}
    for seq in TRAIN:  # _split's times: a history event's position; the target at 100
        for t, item in enumerate(seq[:-1]):
            events.setdefault(item, []).append(t)
        events.setdefault(seq[-1], []).append(100)
    items = np.array([[0, 1, 2, 3, 11], [5, 1, 2, 0, 7], [3, 3, 9, 10, 4], [3, 5, 1, 6, 8]])
    request = np.array([1, 3, 0, 101])
    expected = [[max([t for t in events.get(j, []) if t < r], default=-1) for j in row]
                for row, r in zip(items, request)]
    np.testing.assert_array_equal(model.last_seen_before(items, request), expected)
    assert (model.last_seen_before(items, request) < request[:, None]).all()
