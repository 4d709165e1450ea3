"""evaluation.seed_means: several seeds of a model are averaged, never cherry-picked."""
import pytest

from evaluation import seed_means


def _entry(model, variant, seed, ndcg, hr=0.1, val=None, **config):
    entry = {"model": model, "variant": variant, "seed": seed,
             "masked": {"ndcg@10": ndcg, "hr@10": hr, "num_examples": 100},
             "unmasked": {"ndcg@10": ndcg / 2}, "wall_s": 10.0 * (seed + 1),
             "config": {"epochs": 20, "seed": seed, "training": {"best_epoch": seed},
                        **config}, "slices": {"category": {}}}
    if val is not None:
        entry["validation"] = {"masked": {"ndcg@10": val}}
    return entry


def test_seeds_of_one_model_variant_are_averaged():
    entries = [_entry("stars", "ni", 1, 0.06, val=0.08), _entry("stars", "ni", 0, 0.04, val=0.06),
               _entry("stars", "gi", 0, 0.03), _entry("sasrec_id", "ni", 0, 0.05)]
    means = {(e["model"], e["variant"]): e for e in seed_means.mean_entries(entries)}
    ni = means[("stars", "ni")]
    assert ni["seeds"] == [0, 1]
    assert ni["masked"]["ndcg@10"] == pytest.approx(0.05)
    assert ni["masked"]["num_examples"] == 100
    assert ni["unmasked"]["ndcg@10"] == pytest.approx(0.025)
    assert ni["validation"]["masked"]["ndcg@10"] == pytest.approx(0.07)
    assert ni["spread"]["ndcg@10"] == [0.04, 0.06]
    assert ni["wall_s"] == pytest.approx(15.0)
    assert "slices" not in ni
    # A model run once passes through unchanged.
    once = means[("sasrec_id", "ni")]
    assert once["seeds"] == [0] and once["masked"]["ndcg@10"] == 0.05 and "spread" not in once
    assert seed_means.several_seeds(entries)
    assert not seed_means.several_seeds(entries[1:])


def test_settings_ignore_only_the_per_run_fields():
    a, b = _entry("stars", "ni", 0, 0.04), _entry("stars", "ni", 1, 0.05)
    assert seed_means.settings(a) == seed_means.settings(b)
    assert seed_means.settings(a) != seed_means.settings(_entry("stars", "ni", 0, 0.04,
                                                                 epochs=40))


def test_settings_count_fields_a_record_predates_at_their_defaults():
    from models.config import ModelConfig
    old = _entry("stars", "ni", 0, 0.04)                      # recorded before mask_history
    assert seed_means.settings(old) == seed_means.settings(
        _entry("stars", "ni", 1, 0.05, mask_history=ModelConfig.mask_history))
    assert seed_means.settings(old) != seed_means.settings(
        _entry("stars", "ni", 1, 0.05, mask_history=not ModelConfig.mask_history))
    # A record that is not a model configuration is left as it is.
    scores = {"model": "popularity", "config": {"scores": "counts"}}
    assert seed_means.settings(scores) == '{"scores": "counts"}'


def test_settings_drop_a_retired_field_only_where_it_held_todays_behaviour():
    from models.config import RETIRED
    field, today = next(iter(RETIRED.items()))
    current = _entry("stars", "ni", 1, 0.05)
    assert seed_means.settings(_entry("stars", "ni", 0, 0.04, **{field: today})) == \
        seed_means.settings(current)
    assert seed_means.settings(_entry("stars", "ni", 0, 0.04, **{field: not today})) != \
        seed_means.settings(current)
