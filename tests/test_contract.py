"""The data contract: clear errors naming file, row and column; lists; formats."""
import pandas as pd
import pytest

from stars.data import contract
from stars.data.contract import ContractError
from tests.fixtures import write_small_dataset

HEADER = "user_id,item_id,timestamp,event_type\n"


def _interactions(tmp_path, body, header=HEADER):
    path = tmp_path / "interactions.csv"
    path.write_text(header + body)
    return list(contract.read_table(path, contract.INTERACTIONS))


def test_reads_and_normalises_interactions(tmp_path):
    chunks = _interactions(tmp_path, "u1,i1,1700000000,view\n"
                           "u1,i2,2023-11-14T22:13:21Z,Add-To-Cart\n"
                           "u2,i1,2023-11-14 22:13:21+01:00,BUY\n")
    frame = chunks[0]
    assert frame["timestamp"].tolist() == [1700000000, 1700000001, 1699996401]
    assert frame["event_type"].tolist() == ["view", "add_to_cart", "purchase"]
    assert frame["_row"].tolist() == [1, 2, 3]
    assert frame["session_id"].tolist() == ["", "", ""]  # optional column defaults


@pytest.mark.parametrize("body,row,column,fragment", [
    ("u1,i1,yesterday,view\n", 1, "timestamp", "ISO-8601"),
    ("u1,i1,1700000000,view\nu1,,1700000000,view\n", 2, "item_id", "must not be empty"),
    ("u1,i1,1700000000,view\nu1,i2,1700000000,wishlist\n", 2, "event_type", "unknown event type"),
])
def test_malformed_rows_name_file_row_and_column(tmp_path, body, row, column, fragment):
    with pytest.raises(ContractError) as error:
        _interactions(tmp_path, body)
    assert error.value.row == row and error.value.column == column
    assert "interactions.csv" in str(error.value) and fragment in str(error.value)
    assert f"row {row}" in str(error.value) and f"column '{column}'" in str(error.value)


def test_missing_required_column(tmp_path):
    with pytest.raises(ContractError, match="column 'event_type': required column is missing"):
        _interactions(tmp_path, "u1,i1,1700000000\n", header="user_id,item_id,timestamp\n")


def test_items_numbers_lists_and_duplicates(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,title,price,regions,embedding\n"
                    "a,Tea,4.5,us|eu,0.1|0.2\nb,Coffee,,,\n")
    frame = contract.read_whole_table(path, contract.ITEMS)
    assert frame["regions"].tolist() == [["us", "eu"], []]
    assert frame["embedding"].tolist() == [[0.1, 0.2], []]
    assert frame["price"].isna().tolist() == [False, True]
    path.write_text("item_id,title,price\na,Tea,cheap\n")
    with pytest.raises(ContractError,
                       match=r"row 1, column 'price': expected a number, got 'cheap'"):
        contract.read_whole_table(path, contract.ITEMS)
    path.write_text("item_id,title,stock\na,Tea,1.5\n")
    with pytest.raises(ContractError, match="column 'stock': expected an integer"):
        contract.read_whole_table(path, contract.ITEMS)
    path.write_text("item_id,title\na,Tea\nb,Coffee\na,Tea again\n")
    with pytest.raises(ContractError, match="row 3, column 'item_id': duplicate id 'a'"):
        contract.check_unique(contract.read_whole_table(path, contract.ITEMS), "item_id", path)


def test_parquet_with_list_columns(tmp_path):
    path = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": ["a"], "title": ["Tea"], "regions": [["us", "uk"]],
                  "embedding": [[0.5, 0.25]]}).to_parquet(path)
    frame = contract.read_whole_table(path, contract.ITEMS)
    assert frame["regions"][0] == ["us", "uk"] and frame["embedding"][0] == [0.5, 0.25]


def test_find_table_file(tmp_path):
    with pytest.raises(ContractError, match="required table 'items' is missing"):
        contract.find_table_file(tmp_path, contract.ITEMS)
    assert contract.find_table_file(tmp_path, contract.USERS) is None
    (tmp_path / "users.csv").write_text("user_id\n")
    (tmp_path / "users.parquet").write_text("")
    with pytest.raises(ContractError, match="more than one file"):
        contract.find_table_file(tmp_path, contract.USERS)
    with pytest.raises(ContractError, match="does not exist"):
        contract.find_table_file(tmp_path / "nope", contract.ITEMS)


def test_empty_file_is_a_clear_error(tmp_path):
    (tmp_path / "interactions.csv").write_text("")
    with pytest.raises(ContractError, match="file is empty"):
        list(contract.read_table(tmp_path / "interactions.csv", contract.INTERACTIONS))


def test_user_feature_kinds(tmp_path):
    data = write_small_dataset(tmp_path)
    users = contract.read_whole_table(data / "users.csv", contract.USERS)
    assert contract.user_feature_kinds(users) == {
        "age": "numeric", "tenure_days": "numeric", "email_domain": "categorical",
        "region": "categorical"}


def test_chunks_keep_row_numbers(tmp_path):
    body = "".join(f"u{i},i{i},{1700000000 + i},view\n" for i in range(25))
    path = tmp_path / "interactions.csv"
    path.write_text(HEADER + body)
    chunks = list(contract.read_table(path, contract.INTERACTIONS, chunk_rows=10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert chunks[2]["_row"].tolist() == [21, 22, 23, 24, 25]
