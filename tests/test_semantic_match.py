"""The semantic match to the latest items against a numpy reference: the keys, the NI
query part, the serving space of a real StarsModel, and the weight's selection."""
import numpy as np
import pytest
import tensorflow as tf

from models import semantic_match as SM
from models import validation_ranking as VR
from models.config import make_config
from tests.test_stars_model import L, _catalog, _inputs, _model, _small_setup


def _reference_keys(text):
    centred = text - text.mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1, keepdims=True)


def _reference_query(keys, items, weight):
    """η Σ_k r_k key(latest_k) / Σ r over each row's latest known events (−1 skipped)."""
    out = np.zeros((len(items), keys.shape[1]))
    for b, row in enumerate(items):
        known = [i for i in row if i >= 0][::-1]  # latest first
        for r, item in zip(SM.RECENCY, known):
            out[b] += r * keys[item]
    return weight * out / sum(SM.RECENCY)


def test_keys_are_the_centred_text_unit_normalised_and_blank_text_stays_blank():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(7, 5))
    text[3] = 0.0  # an item without text
    keys = SM.semantic_keys(text)
    expected = _reference_keys(text)
    expected[3] = 0.0
    np.testing.assert_allclose(keys, expected, rtol=1e-5, atol=1e-6)
    assert keys.dtype == np.float32 and SM.semantic_keys(np.zeros((0, 5))).shape == (0, 5)


def test_query_weights_the_latest_three_known_events():
    rng = np.random.default_rng(1)
    text = rng.normal(size=(20, 6))
    match = SM.SemanticMatch(text)
    match.weight.assign(2.5)
    items = np.array([[-1, -1, -1, -1, 4, 9],     # two events
                      [3, 5, 7, 11, 13, 2],       # more than three: the latest three
                      [-1, 8, 6, -1, 1, -1],      # unknown items in between and at the end
                      [-1, -1, -1, -1, -1, -1],   # an empty history
                      [0, 0, 0, 0, 0, 19]], np.int32)  # repeats count as events
    got = match.query(tf.constant(items), tf.constant(items >= 0)).numpy()
    np.testing.assert_allclose(got, _reference_query(SM.semantic_keys(text), items, 2.5),
                               rtol=1e-5, atol=1e-6)
    assert not got[3].any()


def test_projected_keys_are_the_centred_text_on_its_principal_directions():
    rng = np.random.default_rng(2)
    # Three strong directions and noise: the top three carry the catalogue's text.
    text = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 8)) * 4 + 0.1 * rng.normal(size=(40, 8))
    text[5] = 0.0  # an item without text
    centred = text - text.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:3].T
    expected = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    expected[5] = 0.0
    keys = SM.semantic_keys(text, 3)
    assert keys.shape == (40, 3)
    # The directions' signs are arbitrary: compare the cosines the match is made of.
    np.testing.assert_allclose(keys @ keys.T, expected @ expected.T, rtol=1e-4, atol=1e-5)
    # No narrower than asked is no projection at all; a negative width is an error.
    np.testing.assert_allclose(SM.semantic_keys(text, 8), SM.semantic_keys(text), atol=1e-6)
    np.testing.assert_allclose(SM.semantic_keys(text, 0), SM.semantic_keys(text), atol=1e-6)
    with pytest.raises(ValueError, match="semantic_match_dim"):
        SM.semantic_keys(text, -1)


@pytest.mark.parametrize("key_dim", [0, 3])
def test_the_serving_space_appends_the_keys_and_the_ni_match_and_training_never_sees_it(key_dim):
    catalog, inputs = _small_setup()
    config = make_config("tiny", max_history=L, full_softmax=True,  # no sampling: exact
                         semantic_match=True, semantic_match_dim=key_dim)
    assert config.semantic_match
    model = _model(catalog, config)
    losses_off = {k: v.numpy() for k, v in model.loss_parts(inputs, training=False).items()}
    model.semantic_match.weight.assign(3.0)
    losses_on = {k: v.numpy() for k, v in model.loss_parts(inputs, training=False).items()}
    assert losses_on == losses_off

    keys = SM.semantic_keys(catalog.text_embedding, key_dim)
    assert keys.shape[1] == (key_dim or catalog.text_embedding.shape[1])
    items = model.item_embeddings().numpy()
    learned = model.item_vectors().numpy()
    np.testing.assert_allclose(items, np.concatenate([learned, keys], 1), rtol=1e-6)
    gen, nxt = (x.numpy() for x in model.user_embeddings(inputs))
    _, gen_state, next_state = model.encode(inputs)
    s = config.serving_dim
    np.testing.assert_allclose(nxt[:, :s], model.next_head(next_state).numpy(), rtol=1e-5)
    np.testing.assert_allclose(gen[:, :s], model.gen_head(gen_state).numpy(), rtol=1e-5)
    assert not gen[:, s:].any()
    match = _reference_query(keys, inputs["items"].numpy(), 3.0)
    np.testing.assert_allclose(nxt[:, s:], match, rtol=1e-5, atol=1e-6)
    # NI scores: the learned dot product plus η Σ_k r_k cos(latest_k, j).
    np.testing.assert_allclose(nxt @ items.T, nxt[:, :s] @ learned.T + match @ keys.T,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["stars_no_text", "sasrec_id", "sasrec_plain"])
def test_models_without_text_have_no_match(variant):
    catalog, inputs = _small_setup()
    config = make_config("tiny", variant, max_history=L, semantic_match=True)
    model = _model(catalog, config)
    assert model.semantic_match is None
    assert model.item_embeddings().shape[1] == config.serving_dim
    assert model.user_embeddings(inputs)[1].shape[1] == config.serving_dim


def _ranking_setup():
    """A catalogue of 6 text groups; each user's next item shares the latest item's group."""
    rng = np.random.default_rng(7)
    num_items, groups = 48, 6
    group = np.arange(num_items) % groups
    text = np.eye(groups)[group] * 3 + 0.3 * rng.normal(size=(num_items, groups))
    catalog = _catalog(np.pad(text, [(0, 0), (0, 16 - groups)]), group % 4,
                       rng.integers(1, 20, num_items))
    histories, targets = [], []
    for _ in range(64):
        history = list(rng.choice(num_items, size=int(rng.integers(1, L)), replace=False))
        same = [i for i in range(num_items) if group[i] == group[history[-1]]
                and i not in history]
        histories.append(history)
        targets.append([int(rng.choice(same))])
    return catalog, histories, targets


def assert_best_of_grid(chosen, weights, variable):
    """A post hoc weight's selection tried ``weights`` in order, kept the best validation
    NDCG@10 (ties to the smaller), left it in ``variable``, and the best is above 0 (off);
    returns (tried, best)."""
    tried = chosen["tried"]
    assert [t["weight"] for t in tried] == list(weights)
    best = max(tried, key=lambda t: (t["val_ndcg@10"], -t["weight"]))
    assert chosen["chosen"] == best["weight"] == float(variable.numpy())
    assert chosen["chosen"] > 0 and best["val_ndcg@10"] > tried[0]["val_ndcg@10"]
    return tried, best


def test_choose_weight_keeps_the_best_validation_ndcg_and_matches_re_encoding():
    catalog, histories, targets = _ranking_setup()
    config = make_config("tiny", max_history=L, semantic_match=True)
    model = _model(catalog, config)
    batches = [_inputs(histories[s:s + 16], targets[s:s + 16]) for s in range(0, 64, 16)]
    ranking = VR.ValidationRanking.from_batches(batches, histories, targets, ("gi", "ni"))
    ranking.set_model(model)
    # An untrained model ranks by text alone better than by its random states.
    tried, _ = assert_best_of_grid(SM.choose_weight(model, ranking), SM.WEIGHTS,
                                   model.semantic_match.weight)
    # Scaling the encoded match part is the same as encoding at each weight.
    for t in tried[::3]:
        model.semantic_match.weight.assign(t["weight"])
        ranking.set_model(model)
        hr, ndcg = ranking.scores()["ni"]
        assert (round(hr, 5), round(ndcg, 5)) == (t["val_hr@10"], t["val_ndcg@10"])


def test_choose_weight_is_none_without_a_match_or_without_ni():
    catalog, histories, targets = _ranking_setup()
    batches = [_inputs(histories, targets)]
    no_text = _model(catalog, make_config("tiny", "stars_no_text", max_history=L,
                                          semantic_match=True))
    both = VR.ValidationRanking.from_batches(batches, histories, targets)
    assert SM.choose_weight(no_text, both) is None
    model = _model(catalog, make_config("tiny", max_history=L, semantic_match=True))
    gi_only = VR.ValidationRanking.from_batches(batches, histories, targets, ("gi",))
    assert SM.choose_weight(model, gi_only) is None
