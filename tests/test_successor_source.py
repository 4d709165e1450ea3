"""The successor source against plain-Python references: the table, a request's weighted
counts, the exact serving merge, a real StarsModel's NI term, the weight's selection and
the table's save and restore."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from models import successor_source as SS
from models import trainer
from models import validation_ranking as VR
from models.config import make_config
from tests.test_semantic_match import _ranking_setup, assert_best_of_grid
from tests.test_stars_model import USER_VOCAB, L, _inputs, _model, _small_setup

SEQUENCES = [[0, 1, 2, 3, 1], [2, 3, 4], [5, 5, 6, 0], [1, 0, 1, 7, 2, 3]]
N = 9   # item 8 never occurs


def _reference(sequences, n):
    """b counts 1/d when it follows a by d <= 3 events in a sequence (a != b)."""
    dense = np.zeros((n, n))
    for seq in sequences:
        for i, a in enumerate(seq):
            for d in (1, 2, 3):
                if i + d < len(seq) and seq[i + d] != a:
                    dense[a, seq[i + d]] += 1.0 / d
    return dense


def _reference_request(dense, items, valid):
    """Σ_k r_k counts[latest_k] over each row's latest three known events."""
    out = np.zeros((len(items), dense.shape[1]))
    for b, (row, ok) in enumerate(zip(items, valid)):
        known = [i for i, v in zip(row, ok) if v and i >= 0][::-1]   # latest first
        for r, item in zip((1.0, 0.5, 0.25), known):
            out[b] += r * dense[item]
    return out


def _table_dense(table):
    dense = np.zeros((table.num_items, table.num_items))
    for a in range(table.num_items):
        for j in range(table.row_splits[a], table.row_splits[a + 1]):
            dense[a, table.successors[j]] += table.counts[j]
    return dense


def test_the_table_holds_the_windowed_counts():
    table = SS.SuccessorTable.from_sequences(SEQUENCES, N)
    assert table.num_items == N and table.row_splits[-1] == len(table.successors)
    np.testing.assert_allclose(_table_dense(table), _reference(SEQUENCES, N), rtol=1e-6)
    # One entry per (item, successor): the CSR rows are summed and sorted.
    for a in range(N):
        row = table.successors[table.row_splits[a]:table.row_splits[a + 1]]
        assert list(row) == sorted(set(row))
    empty = SS.SuccessorTable.empty(N, 5)
    assert empty.num_items == N and len(empty.successors) == len(empty.counts) == 5


def test_example_sequences_are_the_known_history_then_the_first_target():
    got = SS.example_sequences([np.array([3, -1, 4]), np.array([], np.int64), np.array([1])],
                               [np.array([5, 6]), np.array([2]), np.array([-1])])
    assert [g.tolist() for g in got] == [[3, 4, 5], [2], [1]]


ITEMS = np.array([[-1, -1, 0, 1, 2],      # latest 2, then 1, then 0
                  [1, 0, -1, 7, 3],       # an unknown item is skipped: 3, 7, 0
                  [-1, -1, -1, -1, -1],   # empty history
                  [-1, -1, -1, -1, 8],    # nothing ever followed item 8
                  [5, 6, 0, 1, 0]])       # item 0 twice among the latest three
VALID = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1],
                  [1, 1, 1, 1, 1]], bool)


def test_a_request_counts_what_followed_its_latest_three_known_events():
    source = SS.SuccessorSource(SS.SuccessorTable.from_sequences(SEQUENCES, N))
    expected = _reference_request(_reference(SEQUENCES, N), ITEMS, VALID)
    np.testing.assert_allclose(source.log_counts(ITEMS, VALID).numpy(), np.log1p(expected),
                               rtol=1e-6, atol=1e-7)
    rows, items, counts = (x.numpy() for x in source.user_counts(ITEMS, VALID))
    assert len(set(zip(rows, items))) == len(rows)       # one entry per (row, item)
    np.testing.assert_allclose(counts, expected[rows, items], rtol=1e-6)
    assert len(rows) == np.count_nonzero(expected)
    assert not source(ITEMS, VALID).numpy().any()        # γ starts at 0: off
    source.weight.assign(1.5)
    np.testing.assert_allclose(source(ITEMS, VALID).numpy(), 1.5 * np.log1p(expected),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("extra", [0, 4])
def test_the_merge_is_the_exact_top_k_of_the_full_score(extra):
    """The index's top K (here exact, K = k + ``extra``) merged with the successors ranks
    as a brute-force pass over the whole catalogue by h·w_j + b_j + γ log(1 + count_j)."""
    rng = np.random.default_rng(3)
    n, dim, k = 60, 6, 7
    sequences = [list(rng.integers(0, n, size=int(rng.integers(2, 12)))) for _ in range(80)]
    source = SS.SuccessorSource(SS.SuccessorTable.from_sequences(sequences, n))
    source.weight.assign(2.0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    queries = rng.normal(size=(len(ITEMS) + 3, dim)).astype(np.float32)
    items = np.full((len(queries), 5), -1, np.int64)
    valid = np.zeros(items.shape, bool)
    for b in range(len(queries)):
        length = b % 6
        items[b, 5 - length:] = rng.integers(0, n, size=length)
        valid[b, 5 - length:] = True
    counts = _reference_request(_reference(sequences, n), items, valid)
    bias = rng.normal(size=n).astype(np.float32)    # an index coordinate such as the trend
    plain = queries @ vectors.T + bias
    full = plain + 2.0 * np.log1p(counts)
    index_items = np.argsort(-plain, axis=1)[:, :k + extra]
    index_scores = np.take_along_axis(plain, index_items, axis=1)
    scores, found = (x.numpy() for x in source.merge_top_k(
        tf.constant(index_scores), tf.constant(index_items), tf.constant(queries),
        tf.constant(vectors), tf.constant(items), tf.constant(valid), k,
        item_bias=tf.constant(bias)))
    expected = np.argsort(-full, axis=1)[:, :k]
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-5,
                               atol=1e-5)
    # Successors outside the index's answer did make it in (the merge is not a re-rank).
    assert any(set(f) - set(i) for f, i in zip(found, index_items))


def _model_with_source(catalog, config, sequences):
    table = SS.SuccessorTable.from_sequences(sequences, len(catalog))
    meta = trainer.ModelMeta(
        num_event_types=3, user_numeric=[], user_vocab_sizes=USER_VOCAB,
        catalog_transformed_uri="", catalog_transform_graph_uri="",
        transform_graph_uri="").with_successors(table)
    return trainer.build_model(catalog, config, meta, successors=table), meta, table


def test_the_model_adds_the_term_to_ni_only_and_training_never_sees_it():
    catalog, inputs = _small_setup()
    config = make_config("tiny", max_history=L, full_softmax=True, successor_source=True)
    sequences = [[i % len(catalog), (3 * i + 1) % len(catalog)] for i in range(40)]
    model, _, table = _model_with_source(catalog, config, sequences)
    assert model.next_prior(inputs) is None              # γ = 0 until selection
    losses_off = {k: v.numpy() for k, v in model.loss_parts(inputs, training=False).items()}
    model.successor_source.weight.assign(2.0)
    losses_on = {k: v.numpy() for k, v in model.loss_parts(inputs, training=False).items()}
    assert losses_on == losses_off
    expected = _reference_request(_table_dense(table), inputs["items"].numpy(),
                                  inputs["valid"].numpy())
    np.testing.assert_allclose(model.next_prior(inputs).numpy(), 2.0 * np.log1p(expected),
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="no successor table"):
        _model(catalog, config)


def test_the_table_and_its_weight_are_saved_and_restored(tmp_path):
    catalog, inputs = _small_setup()
    config = make_config("tiny", max_history=L, successor_source=True)
    sequences = [[i % len(catalog), (5 * i + 2) % len(catalog), i % 3] for i in range(30)]
    model, meta, table = _model_with_source(catalog, config, sequences)
    model.loss_parts(inputs)
    model.successor_source.weight.assign(1.5)
    trainer.save_trained(model, config, meta, str(tmp_path))
    loaded, _, loaded_meta, _, _ = trainer.load_trained(str(tmp_path), catalog=catalog)
    assert loaded_meta.successor_entries == len(table.successors) > 0
    np.testing.assert_array_equal(loaded.successor_source.row_splits.numpy(), table.row_splits)
    np.testing.assert_array_equal(loaded.successor_source.successors.numpy(), table.successors)
    np.testing.assert_array_equal(loaded.successor_source.counts.numpy(), table.counts)
    assert float(loaded.successor_source.weight.numpy()) == 1.5
    np.testing.assert_allclose(loaded.next_prior(inputs).numpy(),
                               model.next_prior(inputs).numpy())
    # Without the switch the model has no source (the ablations and the ID-only baseline).
    off = trainer.build_model(catalog, config.replace(successor_source=False),
                              dataclasses.replace(meta, successor_entries=0))
    assert off.successor_source is None and off.next_prior(inputs) is None


def test_choose_weight_keeps_the_best_validation_ndcg_and_ranks_with_the_term():
    """Each user's next item followed their latest item in the table's sequences: the
    count finds it, so a weight above 0 wins on the validation ranking."""
    catalog, histories, targets = _ranking_setup()
    config = make_config("tiny", max_history=L, successor_source=True)
    sequences = [[h[-1], t[0]] for h, t in zip(histories, targets)]
    model, _, table = _model_with_source(catalog, config, sequences)
    batches = [_inputs(histories[s:s + 16], targets[s:s + 16]) for s in range(0, 64, 16)]
    ranking = VR.ValidationRanking.from_batches(batches, histories, targets, ("gi", "ni"))
    ranking.set_model(model)
    plain = ranking.scores()["ni"]
    tried, best = assert_best_of_grid(SS.choose_weight(model, ranking), SS.WEIGHTS,
                                      model.successor_source.weight)
    assert (tried[0]["val_hr@10"], tried[0]["val_ndcg@10"]) == (round(plain[0], 5),
                                                                round(plain[1], 5))
    # The ranking's NI term is the model's own: its top 10 by the dense scores, brute force.
    queries = ranking.user_queries()["ni"]
    items = model.item_embeddings().numpy()
    split = list(ranking.split())
    prior = np.concatenate([model.next_prior(b.inputs).numpy() for b in split])
    scores = queries @ items.T + prior
    hits = []
    for row, (history, target) in enumerate(zip([h for b in split for h in b.history],
                                                [t for b in split for t in b.targets])):
        scores[row, history] = -np.inf
        hits.append(target[0] in np.argsort(-scores[row])[:10])
    assert round(float(np.mean(hits)), 5) == best["val_hr@10"]
    # GI is untouched by the source.
    assert ranking.scores()["gi"] == pytest.approx(ranking.scores({"gi": ranking.user_queries()[
        "gi"]})["gi"])


def test_choose_weight_is_none_without_a_source_or_without_ni():
    catalog, histories, targets = _ranking_setup()
    batches = [_inputs(histories, targets)]
    plain = _model(catalog, make_config("tiny", max_history=L))
    both = VR.ValidationRanking.from_batches(batches, histories, targets)
    assert SS.choose_weight(plain, both) is None
    model, _, _ = _model_with_source(catalog, make_config("tiny", max_history=L,
                                                          successor_source=True),
                                     [[h[-1], t[0]] for h, t in zip(histories, targets)])
    gi_only = VR.ValidationRanking.from_batches(batches, histories, targets, ("gi",))
    assert SS.choose_weight(model, gi_only) is None


def test_an_empty_table_changes_nothing():
    """Training examples of one event each follow nothing: no entries, no term, and the
    merge gives back the index's answer (as for any batch whose requests have no
    successors, e.g. one request with an empty history)."""
    table = SS.SuccessorTable.from_sequences([[0], [3], []], N)
    assert len(table.successors) == 0
    source = SS.SuccessorSource(table)
    source.weight.assign(2.0)
    assert not source(ITEMS, VALID).numpy().any()
    scores = np.tile(np.arange(5, 0, -1, dtype=np.float32), (len(ITEMS), 1))
    index_items = np.tile(np.arange(5), (len(ITEMS), 1))
    got_scores, got_items = (x.numpy() for x in source.merge_top_k(
        scores, index_items, np.zeros((len(ITEMS), 2), np.float32), np.zeros((N, 2), np.float32),
        ITEMS, VALID, 3))
    np.testing.assert_array_equal(got_items, index_items[:, :3])
    np.testing.assert_array_equal(got_scores, scores[:, :3])
