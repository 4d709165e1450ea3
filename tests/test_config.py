"""Model configuration: presets, ablation switches, a variant's tuning and overrides."""
from models.config import ABLATIONS, PRESETS, VARIANT_TUNING, make_config, variant_tuning


def test_text_less_variants_keep_every_items_identity():
    """Without text δ is the ID embedding: dropping it would blank the item, not train a
    content path, so the ID-only baseline and "- text" keep δ whole under any preset."""
    for preset in PRESETS:
        assert make_config(preset, "stars").delta_dropout == PRESETS[preset].delta_dropout
        for variant in ("sasrec_id", "sasrec_plain", "stars_no_text"):
            config = make_config(preset, variant)
            assert not config.use_text and config.delta_dropout == 0.0
    assert make_config("benchmark", "stars").delta_dropout > 0


def test_projections_only_where_the_serving_width_needs_them():
    """The benchmark preset reads out the encoder states (widths match); the paper preset
    projects 768 → 256, so it must keep the projections."""
    for variant in ABLATIONS:
        config = make_config("benchmark", variant)
        assert not config.serving_projections and config.serving_dim == config.d_model
    paper = make_config("paper")
    assert paper.serving_projections and paper.serving_dim != paper.d_model


def test_variant_tuning_and_overrides_layer_over_the_ablation():
    stars_model = make_config("benchmark", "stars")
    # The ID-only baselines and "- text" are all ID models: SASRec's √d and schedule.
    for variant in ("sasrec_id", "sasrec_plain", "stars_no_text"):
        tuned = make_config("benchmark", variant)
        for field, value in VARIANT_TUNING["benchmark"][variant].items():
            assert getattr(tuned, field) == value
        assert tuned.scale_item_tokens and not stars_model.scale_item_tokens
        assert tuned.epochs == 20 != stars_model.epochs
        # Only under the preset it was chosen for.
        assert not make_config("cpu", variant).scale_item_tokens
    assert variant_tuning("benchmark", "stars_no_tags") == {} == variant_tuning(None, "sasrec_id")
    # An override of a field the ablation also sets wins instead of clashing.
    assert make_config("benchmark", "sasrec_id", alpha=0.5, dropout=0.2).alpha == 0.5
    assert make_config("benchmark", "sasrec_id", dropout=0.2).dropout == 0.2


def test_id_only_baseline_is_stars_without_its_semantic_parts():
    """``sasrec_id`` (the issue's baseline) differs from STARS only by the semantic item
    token (no text, no tags, so no text match) and the full cross-entropy; ``sasrec_plain``
    is SASRec as published, with every other STARS part off as well."""
    for preset in PRESETS:
        stars_model, id_only = make_config(preset, "stars"), make_config(preset, "sasrec_id")
        differing = {f for f in ABLATIONS["sasrec_id"]
                     if getattr(id_only, f) != getattr(stars_model, f)}
        assert {"use_text", "use_tags"} <= differing
        assert differing <= {"use_text", "use_tags", "delta_frozen_epochs", "delta_lr_scale",
                             "delta_dropout", "semantic_match", "alpha", "full_softmax"}
        assert id_only.full_softmax and id_only.alpha == 0.0
        for part in ("use_context", "item_trend", "use_user_token", "use_engagement",
                     "use_recency", "lambda_gen", "successor_source"):
            assert getattr(id_only, part) == getattr(stars_model, part)
        plain = make_config(preset, "sasrec_plain")
        assert not any(getattr(plain, part) for part in (
            "use_text", "use_tags", "use_context", "item_trend", "use_user_token",
            "use_engagement", "use_recency", "semantic_match", "successor_source"))
        assert plain.lambda_gen == 0.0 and plain.full_softmax and plain.alpha == 0.0
