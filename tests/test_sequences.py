"""Per-user sequences and splits: no leakage, nothing dropped, LOO protocol."""
import pytest

from stars.data.sequences import Event, SplitConfig, cut_time, user_examples


def _events(n, start=1000, step=10):
    return [Event(start + i * step, i, f"i{i}", "view", "s", f"p{i}", "", (f"i{i}", f"x{i}"))
            for i in range(n)]


def test_time_split_keeps_the_future_out_of_training():
    events = _events(10)
    cut = events[7].timestamp
    out = list(user_examples("u", events, SplitConfig(), cut))
    splits = [s for s, _ in out]
    assert splits == ["train", "eval"]
    train, evaluation = out[0][1], out[1][1]
    assert max(train["timestamp"] + train["target_timestamp"]) < cut
    assert evaluation["item_id"] == [f"i{i}".encode() for i in range(7)]
    assert evaluation["target_item_id"] == [b"i7", b"i8", b"i9"]
    assert evaluation["target_timestamp"] == [events[7].timestamp]
    assert evaluation["target_page_item_id"] == [b"i7", b"x7"]
    assert train["page_item_count"] == [2] * 6 and len(train["page_item_id"]) == 12


def test_long_histories_are_windowed_so_every_event_is_a_target_once():
    events = _events(23)
    out = list(user_examples("u", events, SplitConfig(max_history=5), cut=10**9))
    # Within a window every position predicts the next event; windows overlap by one.
    predicted = [i for _, f in out for i in (f["item_id"] + f["target_item_id"])[1:]]
    assert sorted(predicted) == sorted(e.item_id.encode() for e in events[1:])
    assert all(len(f["item_id"]) <= 5 for _, f in out)


def test_leave_one_out_protocol():
    events = list(reversed(_events(6)))  # order comes from time, not input order
    out = dict((s, f) for s, f in user_examples("u", events, SplitConfig(mode="leave_one_out")))
    assert out["test"]["target_item_id"] == [b"i5"] and out["test"]["item_id"][-1] == b"i4"
    assert out["eval"]["target_item_id"] == [b"i4"] and out["eval"]["item_id"][-1] == b"i3"
    assert out["train"]["target_item_id"] == [b"i3"]
    assert b"i4" not in out["train"]["item_id"]


def test_ties_are_broken_by_sequence_number():
    events = [Event(5, 2, "b", "view", "", "", ""), Event(5, 1, "a", "view", "", "", ""),
              Event(6, 0, "c", "view", "", "", "")]
    (_, features), = user_examples("u", events, SplitConfig(), cut=100)
    assert features["item_id"] == [b"a", b"b"] and features["target_item_id"] == [b"c"]


def test_user_features_and_home_region():
    events = _events(3)
    (_, f), = user_examples("u", events, SplitConfig(), cut=10**9,
                            user_features={"age": 31.0, "region": "eu", "tenure": float("nan")},
                            feature_kinds={"age": "numeric", "region": "categorical",
                                           "tenure": "numeric", "device": "categorical"})
    assert f["user_num_age"] == [31.0] and f["user_num_tenure"] == []
    assert f["user_cat_region"] == [b"eu"] and f["user_cat_device"] == [b""]
    assert f["region"] == [b"eu", b"eu"] and f["target_region"] == [b"eu"]


def test_short_users_yield_nothing_rather_than_failing():
    assert list(user_examples("u", _events(1), SplitConfig(), cut=10**9)) == []
    assert list(user_examples("u", [], SplitConfig(mode="leave_one_out"))) == []


def test_cut_time_and_config_validation():
    assert cut_time(list(range(100)), SplitConfig(eval_fraction=0.2)) == 80
    assert cut_time([1, 2], SplitConfig(cut_timestamp=7)) == 7
    with pytest.raises(ValueError, match="split mode"):
        SplitConfig(mode="random")
    with pytest.raises(ValueError, match="no interactions"):
        cut_time([], SplitConfig())
