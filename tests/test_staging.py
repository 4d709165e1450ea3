"""Validation pass: unknown items are counted and kept aside, never dropped silently."""
import csv

import pyarrow.parquet as pq

from stars.data import catalog, staging
from tests.fixtures import EVENTS, write_small_dataset


def test_unknown_items_go_to_rejects_and_the_rest_is_staged(tmp_path):
    data = write_small_dataset(tmp_path / "data")
    ids = {f["item_id"][0] for f in catalog.read_catalog(data)}
    report = staging.stage(data, ids, tmp_path / "stage", tmp_path / "rejects")
    assert report.interactions_read == len(EVENTS)
    assert report.interactions_accepted == len(EVENTS) - 1
    assert report.rejects == {"interactions": {"unknown item_id": 1},
                              "impressions": {"unknown item_id nope": 1}}
    with open(tmp_path / "rejects" / "interactions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["item_id"] == "zzz-unknown"
    assert rows[0]["source_row"] == "19" and rows[0]["reject_reason"] == "unknown item_id"
    assert rows[0]["sequence_number"] == ""  # missing stays missing, not "nan"
    staged = pq.read_table(tmp_path / "stage" / "interactions").to_pandas()
    assert len(staged) == report.interactions_accepted
    # Without a sequence_number column, file order breaks timestamp ties.
    assert staged["sequence_number"].tolist() == sorted(staged["sequence_number"].tolist())
    assert report.user_feature_kinds["age"] == "numeric"
    assert len(report.timestamps) == report.interactions_accepted


def test_catalogue_reports_duplicates_and_fills_classes(tmp_path):
    data = write_small_dataset(tmp_path)
    items = {f["item_id"][0]: f for f in catalog.read_catalog(data)}
    assert items["i1"]["category"] == ["Grocery"] and items["i1"]["subclass"] == ["grocery/tea"]
    assert items["i5"]["price"] == [] and items["i5"]["stock"] == []
    assert items["i1"]["regions"] == ["us", "eu"]
