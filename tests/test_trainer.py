"""The Trainer's model selection (``models.trainer``): the eval split's ranking it stops
on and selects the cold-item norm with, and what it records."""
import types

import numpy as np
import tensorflow as tf

from models import trainer
from models.config import make_config
from models.inputs import InputAdapter
from tests.test_inputs import ITEMS, _features

HISTORIES = [["a", "b", "c", "d"], ["e"], ["b", "zzz"], ["c", "a", "e"]]
TARGETS = [["e"], ["c", "d"], ["zzz"], ["b"]]


class _Accessor:
    """Test double of the Trainer's DataAccessor: the transformed eval batches as given."""

    def __init__(self, batches):
        self.batches = batches

    def tf_dataset_factory(self, file_pattern, options, schema):
        assert not options.shuffle and options.num_epochs == 1
        data = tf.data.Dataset.from_tensors(self.batches[0])
        return data.take(0) if not self.batches[0]["item_id"].dense_shape[0] else data


def _ranking(histories, targets, config=None):
    pages = [[[] for _ in h] for h in histories]
    features = _features(histories, targets, pages, [[] for _ in histories])
    no_schema = types.SimpleNamespace(transformed_metadata=types.SimpleNamespace(schema=None))
    return trainer.validation_ranking("eval-*", _Accessor([features]), no_schema,
                                      InputAdapter(ITEMS, max_history=2),
                                      config or make_config("tiny"))


def test_eval_ranking_masks_whole_histories_and_holds_out_every_target():
    ranking = _ranking(HISTORIES, TARGETS)
    index = {item: i for i, item in enumerate(ITEMS)}
    expected = {(tuple(index[i] for i in h if i in index), tuple(index[i] for i in t
                                                                 if i in index))
                for h, t in zip(HISTORIES, TARGETS)}
    split = list(ranking.split())   # streamed from the files, each batch cut to its span
    history = [h for b in split for h in b.history]
    got = {(tuple(h), tuple(t)) for h, t in zip(history, [t for b in split for t in b.targets])}
    assert got == expected  # whole histories (not the 2-event window), unknown ids dropped
    # Each row's latest event is its history's.
    latest = np.concatenate([b.inputs["items"].numpy()[:, -1] for b in split])
    latest_of = {tuple(index[i] for i in h if i in index): index.get(h[-1], -1)
                 for h in HISTORIES}
    assert [latest_of[tuple(h)] for h in history] == latest.tolist()
    assert [len(b.targets) for b in ranking.split()] == [len(b.targets) for b in split]
    assert ranking.variants == ("gi", "ni")
    assert _ranking(HISTORIES, TARGETS, make_config("tiny", "sasrec_id")).variants == ("gi", "ni")
    assert _ranking(HISTORIES, TARGETS, make_config("tiny", "sasrec_plain")).variants == ("ni",)


def test_an_empty_eval_split_gives_no_ranking():
    assert _ranking([], []) is None


def test_model_selection_records_the_restored_epoch_and_the_choices_after_training():
    history = types.SimpleNamespace(history={"val_ndcg@10": [0.1, 0.3, 0.2], "loss": [3, 2, 1]})
    selected = {"semantic_match": {"chosen": 2.0}, "cold_item_norm": {"chosen": 0.5, "norm": 1.2}}
    assert trainer.model_selection(history, selected) == {
        "monitor": "val_ndcg@10", "epochs_run": 3, "best_epoch": 2, "best": 0.3, **selected}
    assert trainer.model_selection(types.SimpleNamespace(history={}), {})["best_epoch"] is None


def _meta(numeric=(), vocab=None):
    return trainer.ModelMeta(num_event_types=3, user_numeric=list(numeric),
                             user_vocab_sizes=dict(vocab or {}), catalog_transformed_uri="",
                             catalog_transform_graph_uri="", transform_graph_uri="")


def test_the_user_token_is_off_only_where_the_data_has_no_user_features():
    config = make_config("tiny")
    assert config.use_user_token
    assert not trainer.fit_user_token(config, _meta()).use_user_token
    assert trainer.fit_user_token(config, _meta(vocab={"user_cat_region": 3})) == config
    assert trainer.fit_user_token(config, _meta(numeric=["user_num_age"])) == config
    ablated = make_config("tiny", "stars_no_user")
    assert trainer.fit_user_token(ablated, _meta(numeric=["user_num_age"])) == ablated
