"""The `stars` command: bad input is a clear message and exit code 2, not a traceback."""
import json

from stars import cli
from tests.fixtures import write_small_dataset


def test_validate_reports_counts_and_rejects(tmp_path, capsys):
    data = write_small_dataset(tmp_path / "data")
    assert cli.main(["data", "validate", "--data-dir", str(data),
                     "--rejects", str(tmp_path / "rejects")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["interactions_accepted"] == report["interactions_read"] - 1
    assert report["rejects"]["interactions"] == {"unknown item_id": 1}
    assert (tmp_path / "rejects" / "interactions.csv").is_file()


def test_malformed_input_exits_2_naming_the_place(tmp_path, capsys):
    data = write_small_dataset(tmp_path / "data")
    path = data / "interactions.csv"
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    cells[3] = "teleport"  # data row 3's event_type
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    assert cli.main(["data", "validate", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "interactions.csv" in err and "row 3" in err and "column 'event_type'" in err


def test_missing_data_dir(tmp_path, capsys):
    assert cli.main(["data", "validate", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
