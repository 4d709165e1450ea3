"""The synthetic generator: deterministic, in the contract, and its planted structure is there."""
import collections
import datetime
import filecmp
import json

import numpy as np
import pandas as pd
import pytest

from stars.data import contract, staging, synth
from stars.enrichment.taggers import KeywordTagger


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_small")
    synth.generate(out, "small", seed=0)
    items = pd.read_csv(out / "items.csv", dtype=str, keep_default_na=False)
    events = pd.read_csv(out / "interactions.csv", dtype={"page_id": str},
                         keep_default_na=False)
    pages = pd.read_csv(out / "impressions.csv", dtype=str)
    users = pd.read_csv(out / "users.csv", keep_default_na=False)
    truth = json.load(open(out / "synth_truth.json"))
    return out, items, events, pages, users, truth


def test_same_seed_same_files_other_seed_other_data(tmp_path):
    synth.generate(tmp_path / "a", "tiny", seed=7)
    synth.generate(tmp_path / "b", "tiny", seed=7)
    synth.generate(tmp_path / "c", "tiny", seed=8)
    for name in ("items.csv", "users.csv", "interactions.csv", "impressions.csv"):
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
    assert not filecmp.cmp(tmp_path / "a" / "interactions.csv",
                           tmp_path / "c" / "interactions.csv", shallow=False)


def test_unknown_size_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown size 'huge'.*tiny"):
        synth.generate(tmp_path, "huge")


def test_output_satisfies_the_data_contract_with_no_rejects(small, tmp_path):
    out = small[0]
    items = contract.read_whole_table(out / "items.csv", contract.ITEMS)
    report = staging.stage(out, set(items["item_id"]), tmp_path / "staged", tmp_path / "rejects")
    assert not any(report.rejects.values()), report.rejects
    assert report.interactions_accepted == report.interactions_read > 0
    events = contract.read_whole_table(out / "interactions.csv", contract.INTERACTIONS)
    assert set(events["event_type"]) == {"view", "add_to_cart", "purchase"}
    assert contract.user_feature_kinds(
        contract.read_whole_table(out / "users.csv", contract.USERS)) == {
        "age": "numeric", "tenure_days": "numeric", "email_domain": "categorical",
        "region": "categorical", "device": "categorical"}


def test_taxonomy_is_a_tree_and_text_follows_it(small):
    _, items, *_ = small
    top = items["category_path"].str.split(" > ").str[0]
    assert (items.groupby("subclass").apply(lambda g: top[g.index].nunique()) == 1).all()
    assert items["subclass"].nunique() >= 20

    def words(text):
        return set(text.lower().replace(",", " ").replace(".", " ").replace(":", " ").split())

    texts = [words(t + " " + d) for t, d in zip(items["title"], items["description"])]
    frequency = collections.Counter(w for t in texts for w in t)
    stop = {w for w, n in frequency.items() if n > 0.2 * len(texts)}  # "by", "and", ...
    texts = [t - stop for t in texts]
    rng = np.random.default_rng(0)
    same, other = [], []
    for _ in range(2000):
        a, b = rng.integers(len(items), size=2)
        if a == b:
            continue
        jaccard = len(texts[a] & texts[b]) / len(texts[a] | texts[b])
        (same if items["subclass"][a] == items["subclass"][b] else other).append(jaccard)
    assert np.mean(same) > 2 * np.mean(other)


def test_attribute_words_are_in_the_text_and_found_by_the_tagger(small):
    _, items, *_ = small
    tags = KeywordTagger().tag(items.to_dict("records"))
    found = collections.Counter(t for item in tags for t in item)
    assert {"organic", "vegan", "gluten_free", "wireless", "cruelty_free"} <= set(found)
    assert sum(1 for t in tags if t) > 0.5 * len(items)
    merchant = items[items["tags"] != ""]
    assert 0.1 * len(items) < len(merchant) < 0.5 * len(items)


def test_funnel_views_then_carts_then_purchases_of_the_same_item(small):
    _, _, events, *_ = small
    counts = events["event_type"].value_counts()
    assert counts["view"] > 2 * counts["add_to_cart"] > 2 * 0.8 * counts["purchase"] > 0
    seen = set()
    for row in events.itertuples():
        key = (row.session_id, row.item_id)
        if row.event_type == "add_to_cart":
            assert (key, "view") in seen
        if row.event_type == "purchase":
            assert (key, "add_to_cart") in seen
        seen.add((key, row.event_type))
    assert (events.groupby("user_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing)).all()


def test_events_on_pages_are_items_shown_on_that_page(small):
    _, _, events, pages, *_ = small
    shown = dict(zip(pages["page_id"], pages["item_ids"].str.split("|")))
    paged = events[events["page_id"] != ""]
    assert len(paged) > 0.8 * len(events)
    assert all(item in shown[page] for item, page in zip(paged["item_id"], paged["page_id"]))
    # a page shows one subclass (or one holiday's items): same-page negatives are hard ones
    assert np.median([len(v) for v in shown.values()]) >= 6


def _share(items_of_interest, purchases, mask):
    chosen = purchases[mask]
    return chosen["item_id"].isin(items_of_interest).mean()


def test_holiday_items_peak_in_their_season(small):
    _, _, events, _, _, truth = small
    purchases = events[events["event_type"] != "view"]
    for holiday in truth["holidays"].values():
        in_season = purchases["timestamp"].between(holiday["season_start"], holiday["season_end"])
        inside = _share(holiday["items"], purchases, in_season)
        outside = _share(holiday["items"], purchases, ~in_season)
        assert inside > 3 * outside, (holiday, inside, outside)


def test_more_shopping_at_weekends(small):
    _, _, events, *_ = small
    sessions = events.groupby("session_id")["timestamp"].min()
    weekday = np.array([datetime.datetime.fromtimestamp(t, datetime.timezone.utc).weekday()
                        for t in sessions])
    per_day = np.bincount(weekday, minlength=7)
    assert per_day[5:].mean() > 1.3 * per_day[:5].mean()


def test_short_term_intent_often_differs_from_long_term_taste(small):
    _, items, events, *_ = small
    subclass = dict(zip(items["item_id"], items["subclass"]))
    events = events.assign(subclass=events["item_id"].map(subclass))
    favourite = events.groupby("user_id")["subclass"].agg(lambda s: s.mode()[0])
    session = events.groupby("session_id").agg(user=("user_id", "first"),
                                               subclass=("subclass", lambda s: s.mode()[0]),
                                               purity=("subclass", lambda s: s.value_counts(
                                                   normalize=True).iloc[0]))
    off_taste = (session["subclass"] != favourite[session["user"]].values).mean()
    assert 0.2 < off_taste < 0.8
    assert session["purity"].mean() > 0.8  # within a session, intent is stable


def test_user_features_shift_taste(small):
    _, items, events, _, users, _ = small
    category = dict(zip(items["item_id"], items["category_path"].str.split(" > ").str[0]))
    age = dict(zip(users["user_id"], users["age"]))
    joined = events.assign(category=events["item_id"].map(category),
                           young=events["user_id"].map(age) < 30)
    share = joined.groupby("young")["category"].apply(lambda c: (c == "Electronics").mean())
    assert share[True] > 1.5 * share[False]


def test_cold_start_items_appear_only_after_launch(small):
    _, items, events, pages, _, truth = small
    launches = truth["cold_start_items"]
    assert 0.05 * len(items) < len(launches) < 0.25 * len(items)
    ts = events[events["item_id"].isin(launches)]
    assert (ts["timestamp"] >= ts["item_id"].map(launches)).all()
    assert ts["item_id"].nunique() > 0.5 * len(launches)
    late = truth["start"] + 0.6 * (truth["end"] - truth["start"])
    assert min(launches.values()) >= late


def test_stock_and_regions(small):
    _, items, *_ = small
    stock = items["stock"].astype(int)
    assert 0.02 < (stock == 0).mean() < 0.15
    regional = items[items["regions"] != ""]
    assert 0.2 < len(regional) / len(items) < 0.6
    assert set("|".join(regional["regions"]).split("|")) <= {"us", "eu", "uk", "ca"}


def test_truth_counts_match_the_files(small):
    _, items, events, pages, users, truth = small
    counts = truth["counts"]
    assert counts["events"] == events["event_type"].value_counts().to_dict()
    assert counts["pages"] == len(pages) and counts["users"] == len(users) == 2000
    assert counts["items"] == len(items)
    assert counts["intents"]["holiday"] > 0 and counts["intents"]["short_term"] > 0


def test_cli_writes_the_dataset(tmp_path, capsys):
    from cli import main as cli
    assert cli.main(["data", "synth", "--size", "tiny", "--seed", "1", "--out",
                     str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["users"] == 150
    assert (tmp_path / "synth_truth.json").is_file()
