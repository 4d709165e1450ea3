"""The `stars` command: bad input is a clear message and exit code 2, not a traceback."""
import json

from cli import main as cli
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


def _pipeline_args(data, root, *extra):
    return cli.build_parser().parse_args(["pipeline", "run", "--data-dir", str(data),
                                          "--root", str(root), *extra])


def test_pipeline_context_follows_the_timestamps_unless_forced(tmp_path, capsys):
    data = write_small_dataset(tmp_path / "data")  # clock times: context on
    config = cli._pipeline_config(_pipeline_args(data, tmp_path / "p"))
    assert json.loads(config.model_overrides) == {"use_context": True}
    assert "timestamps tell the time of day" in capsys.readouterr().err
    path = data / "interactions.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()]
    column = rows[0].index("timestamp")
    for row in rows[1:]:  # the same events on day-granular dates (review dates)
        row[column] = str(int(row[column]) // 86400 * 86400)
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    config = cli._pipeline_config(_pipeline_args(data, tmp_path / "p",
                                                 "--model-overrides", '{"epochs": 3}'))
    assert json.loads(config.model_overrides) == {"epochs": 3, "use_context": False}
    forced = cli._pipeline_config(_pipeline_args(data, tmp_path / "p", "--context", "on"))
    assert json.loads(forced.model_overrides) == {"use_context": True}
    remote = _pipeline_args("gs://bucket/data", "gs://bucket/root")
    assert cli._model_overrides(remote) == ""  # not read at compile time: model default


def test_bad_model_overrides_exit_2(tmp_path, capsys):
    data = write_small_dataset(tmp_path / "data")
    code = cli.main(["pipeline", "run", "--data-dir", str(data), "--root", str(tmp_path / "p"),
                     "--model-overrides", "{epochs: 3"])
    assert code == 2 and "--model-overrides is not valid JSON" in capsys.readouterr().err
