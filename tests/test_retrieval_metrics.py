"""Retrieval metrics against hand-computed values and brute-force Python references."""
import math

import numpy as np
import pytest

from stars import retrieval_metrics as rm

# ---------------------------------------------------------------- references

def ref_metrics(row, targets, k):
    """Plain-Python Hit/Recall/NDCG@k of one example (module-doc definitions)."""
    t = set(int(x) for x in targets)
    top = [int(x) for x in row[:k]]
    rel = [1 if (x >= 0 and x in t) else 0 for x in top]
    if not t:
        return 0.0, 0.0, 0.0
    dcg = sum(r / math.log2(p + 2) for p, r in enumerate(rel))
    idcg = sum(1 / math.log2(p + 2) for p in range(min(len(t), k)))
    return float(any(rel)), sum(rel) / len(t), dcg / idcg


def ref_rank(row, targets):
    t = set(int(x) for x in targets)
    for p, x in enumerate(row):
        if x >= 0 and int(x) in t:
            return p + 1
    return 0


def ref_top_k(scores_row, k, exclude=()):
    ex = set(int(x) for x in exclude)
    cands = [(-float(s), i) for i, s in enumerate(scores_row)
             if i not in ex and not math.isnan(s) and s != -math.inf]
    cands.sort()
    out = [i for _, i in cands[:k]]
    return out + [-1] * (k - len(out))



# ---------------------------------------------------------------- per-example

def test_hand_computed_example():
    top_k = np.array([[3, 1, 4, -1, -1],      # target 4 at rank 3
                      [7, 8, 9, 2, 5],        # targets {2, 9, 11}: ranks 3 and 4
                      [0, 1, 2, 3, 4],        # no target
                      [-1, -1, -1, -1, -1]])  # empty list (tiny catalogue)
    targets = [np.array([4]), np.array([9, 2, 11, 2]), np.array([], int), np.array([1])]
    m = rm.per_example_metrics(top_k, targets, ks=(1, 3, 5))
    np.testing.assert_array_equal(m["has_target"], [True, True, False, True])
    np.testing.assert_array_equal(m["num_targets"], [1, 3, 0, 1])  # duplicate 2 counted once
    np.testing.assert_array_equal(m["rank"], [3, 3, 0, 0])
    np.testing.assert_allclose(m["hit@1"], [0, 0, 0, 0])
    np.testing.assert_allclose(m["hit@3"], [1, 1, 0, 0])
    np.testing.assert_allclose(m["recall@3"], [1, 1 / 3, 0, 0])
    np.testing.assert_allclose(m["recall@5"], [1, 2 / 3, 0, 0])
    np.testing.assert_allclose(m["ndcg@3"], [0.5, 0.5 / (1 + 1 / math.log2(3) + 0.5), 0, 0])
    idcg5 = 1 + 1 / math.log2(3) + 0.5
    np.testing.assert_allclose(m["ndcg@5"], [0.5, (0.5 + 1 / math.log2(5)) / idcg5, 0, 0])
    np.testing.assert_allclose(m["mrr"], [1 / 3, 1 / 3, 0, 0])
    s = rm.summarise(m)
    assert s["num_examples"] == 3  # the target-less example is excluded
    assert s["hit@3"] == pytest.approx(2 / 3)
    assert s["recall@5"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert "rank" not in s and "has_target" not in s


def test_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    n, k_max, num_items = 300, 12, 25
    top_k = np.stack([rng.permutation(num_items)[:k_max] for _ in range(n)])
    top_k[rng.random((n, k_max)) < 0.1] = -1  # padding anywhere is tolerated
    targets = [rng.integers(0, num_items, size=rng.integers(0, 6)) for _ in range(n)]
    ks = (1, 5, 12)
    m = rm.per_example_metrics(top_k, targets, ks=ks)
    for i in range(n):
        assert m["rank"][i] == ref_rank(top_k[i], targets[i])
        for k in ks:
            hit, rec, ndcg = ref_metrics(top_k[i], targets[i], k)
            assert m[f"hit@{k}"][i] == hit
            assert m[f"recall@{k}"][i] == pytest.approx(rec)
            assert m[f"ndcg@{k}"][i] == pytest.approx(ndcg)
    mask = np.array([len(set(t)) > 0 for t in targets])
    np.testing.assert_array_equal(m["has_target"], mask)
    s = rm.summarise(m, mask)
    assert s["ndcg@5"] == pytest.approx(np.mean(m["ndcg@5"][mask]))


def test_single_target_recall_equals_hit_and_ndcg_bounds():
    rng = np.random.default_rng(1)
    top_k = np.stack([rng.permutation(40)[:20] for _ in range(100)])
    targets = [np.array([rng.integers(0, 40)]) for _ in range(100)]
    m = rm.per_example_metrics(top_k, targets, ks=(10, 20))
    np.testing.assert_array_equal(m["recall@10"], m["hit@10"])
    assert ((m["ndcg@20"] >= 0) & (m["ndcg@20"] <= 1)).all()
    assert (m["ndcg@10"] <= m["ndcg@20"] + 1e-12).all()


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="exceeds"):
        rm.per_example_metrics(np.zeros((1, 5), int) - 1, [np.array([1])], ks=(10,))
    with pytest.raises(ValueError, match="repeats"):
        rm.per_example_metrics(np.array([[1, 2, 1]]), [np.array([1])], ks=(3,))
    with pytest.raises(ValueError, match="entries"):
        rm.per_example_metrics(np.array([[1, 2, 3]]), [], ks=(3,))
    with pytest.raises(TypeError):
        rm.per_example_metrics(np.array([[1.0, 2.0]]), [np.array([1])], ks=(2,))


def test_summarise_empty_mask_gives_nan():
    m = rm.per_example_metrics(np.array([[1, 2]]), [np.array([], int)], ks=(2,))
    s = rm.summarise(m)
    assert s["num_examples"] == 0 and math.isnan(s["hit@2"])


# ---------------------------------------------------------------- coverage

def test_coverage():
    top_k = np.array([[0, 1, 2], [1, 3, -1], [-1, -1, -1]])
    assert rm.coverage_at_k(top_k, 2, 10) == pytest.approx(3 / 10)  # {0, 1, 3}
    assert rm.coverage_at_k(top_k, 3, 4) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        rm.coverage_at_k(top_k, 3, 3)


# ---------------------------------------------------------------- top-k from scores

def test_top_k_ties_break_by_lower_index_and_history_is_masked():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1, 0.5],
                       [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    out = rm.top_k_from_scores(scores, 4, exclude=[np.array([1]), np.array([0, 2, -1])])
    np.testing.assert_array_equal(out, [[3, 0, 2, 5], [1, 3, 4, 5]])


def test_top_k_larger_than_catalogue_pads_with_minus_one():
    scores = np.array([[0.2, 0.1, 0.3], [0.0, np.nan, -np.inf]])
    out = rm.top_k_from_scores(scores, 5, exclude=[np.array([2]), np.array([], int)])
    np.testing.assert_array_equal(out, [[0, 1, -1, -1, -1], [0, -1, -1, -1, -1]])


def test_top_k_matches_brute_force_with_chunking():
    rng = np.random.default_rng(2)
    n, num_items = 157, 30
    scores = rng.integers(0, 6, size=(n, num_items)).astype(np.float32)  # many ties
    exclude = [rng.choice(num_items, size=rng.integers(0, 28), replace=False) for _ in range(n)]
    for k in (1, 7, 30, 35):
        out = rm.top_k_from_scores(scores, k, exclude=exclude, chunk_elements=100)
        for i in range(n):
            assert out[i].tolist() == ref_top_k(scores[i], k, exclude[i]), (k, i)
    np.testing.assert_array_equal(rm.top_k_from_scores(scores, 7, chunk_elements=100),
                                  rm.top_k_from_scores(scores, 7))


def test_top_k_output_feeds_per_example_metrics():
    scores = np.array([[0.1, 0.8, 0.3, 0.9]])
    top = rm.top_k_from_scores(scores, 3, exclude=[np.array([3])])  # [1, 2, 0]
    m = rm.per_example_metrics(top, [np.array([2])], ks=(1, 3))
    assert m["hit@1"][0] == 0 and m["hit@3"][0] == 1 and m["rank"][0] == 2
