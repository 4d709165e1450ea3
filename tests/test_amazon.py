"""Importing the public Amazon review format (test builds its own tiny copy)."""
import csv

import pytest

from stars.data import amazon, catalog, contract


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "items.csv", ["item_id", "asin", "s3rec_item_id", "title", "s3rec_attr_ids"], [
        (1, "A1", 1, "Rose Lip Balm", "7 12 40"), (2, "A2", 2, "Vegan Shampoo", "7 13"),
        (3, "A3", 3, "Never Reviewed Serum", "7 12"), (4, "A4", 4, "Nail Polish", "")])
    _write(src / "interactions.csv", ["user_id", "reviewerID", "s3rec_user_id", "item_id", "asin",
                                      "s3rec_item_id", "timestamp", "pos"], [
        (1, "R1", 1, 2, "A2", 2, 1400000000, 1), (1, "R1", 1, 1, "A1", 1, 1400000000, 0),
        (1, "R1", 1, 4, "A4", 4, 1400086400, 2), (2, "R2", 2, 99, "A99", 99, 1400000000, 0),
        (2, "R2", 2, 1, "A1", 1, 1400000000, 1)])
    return src


def test_import_writes_the_contract(source, tmp_path):
    out = tmp_path / "out"
    summary = amazon.import_amazon(source, out)
    assert summary == {"items": 4, "untitled_items": 0, "interactions": 4,
                       "rejected_interactions": 1, "users": 2}
    items = {f["item_id"][0]: f for f in catalog.read_catalog(out)}
    assert set(items) == {"1", "2", "3", "4"}  # unreviewed items stay in the catalogue
    # Attribute 7 is the most frequent (broadest): the category; the rarest is the subclass.
    assert items["1"]["category"] == ["attr_7"] and items["1"]["subclass"] == ["attr_40"]
    assert items["4"]["category"] == ["unknown"]
    events = contract.read_whole_table(out / "interactions.csv", contract.INTERACTIONS)
    assert set(events["event_type"]) == {"purchase"}
    user1 = events[events["user_id"] == "1"].sort_values(["timestamp", "sequence_number"])
    assert user1["item_id"].tolist() == ["1", "2", "4"]  # `pos` breaks the same-day tie
    rejects = (out / "rejects" / "interactions.csv").read_text()
    assert "unknown item_id" in rejects and ",99," in rejects


def test_missing_source_columns_are_named(source, tmp_path):
    (source / "items.csv").write_text("item_id,asin\n1,A1\n")
    with pytest.raises(contract.ContractError, match="column 'title'"):
        amazon.import_amazon(source, tmp_path / "out")


def test_an_untitled_item_keeps_its_reviews_under_a_named_title(source, tmp_path):
    rows = (source / "items.csv").read_text().splitlines()
    rows[2] = rows[2].replace("Vegan Shampoo", "")  # item 2: reviewed, no title
    rows[4] = rows[4].replace("Nail Polish", "").replace("A4", "")  # item 4: no title, no asin
    (source / "items.csv").write_text("\n".join(rows) + "\n")
    summary = amazon.import_amazon(source, tmp_path / "out")
    assert summary["untitled_items"] == 2 and summary["interactions"] == 4
    items = {f["item_id"][0]: f for f in catalog.read_catalog(tmp_path / "out")}
    assert items["2"]["title"] == ["untitled item A2"]
    assert items["4"]["title"] == ["untitled item 4"]
    events = contract.read_whole_table(tmp_path / "out" / "interactions.csv", contract.INTERACTIONS)
    assert "2" in set(events["item_id"])
    # Other required cells still may not be empty.
    (source / "items.csv").write_text("\n".join(rows).replace("\n1,A1", "\n,A1") + "\n")
    with pytest.raises(contract.ContractError, match="must not be empty"):
        amazon.import_amazon(source, tmp_path / "again")


def test_a_source_without_attributes_or_pos_imports_in_file_order(source, tmp_path):
    # Another dataset of the same family may lack the optional columns.
    items = [r.rsplit(",", 1)[0] for r in (source / "items.csv").read_text().splitlines()]
    (source / "items.csv").write_text("\n".join(items) + "\n")
    reviews = [r.rsplit(",", 1)[0] for r in (source / "interactions.csv").read_text().splitlines()]
    (source / "interactions.csv").write_text("\n".join(reviews) + "\n")
    out = tmp_path / "out"
    summary = amazon.import_amazon(source, out)
    assert summary["interactions"] == 4 and summary["rejected_interactions"] == 1
    items = {f["item_id"][0]: f for f in catalog.read_catalog(out)}
    assert all(f["category"] == ["unknown"] for f in items.values())
    events = contract.read_whole_table(out / "interactions.csv", contract.INTERACTIONS)
    user1 = events[events["user_id"] == "1"].sort_values(["timestamp", "sequence_number"])
    assert user1["item_id"].tolist() == ["2", "1", "4"]  # the file's order breaks the tie


@pytest.mark.parametrize("pos", ["", "first", "1.5"])
def test_a_pos_that_is_not_an_integer_is_named(source, tmp_path, pos):
    rows = (source / "interactions.csv").read_text().splitlines()
    rows[3] = rows[3].rsplit(",", 1)[0] + "," + pos
    (source / "interactions.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(contract.ContractError, match="row 3, column 'pos': must be an integer"):
        amazon.import_amazon(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
