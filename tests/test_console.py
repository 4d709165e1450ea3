"""The console shows the command's own lines; library logs go to the log file."""
import logging
import warnings

import pytest

from stars import console


@pytest.fixture()
def routed(tmp_path, monkeypatch):
    """console.setup for the test, and the root logger (and environment) as it was after."""
    monkeypatch.delenv(console.LOG_FILE_VAR, raising=False)  # restored after the test
    monkeypatch.delenv(console.VERBOSE_VAR, raising=False)
    root = logging.getLogger()
    level = root.level
    yield tmp_path / "logs" / "stars.log"
    for handler in [h for h in root.handlers if getattr(h, "_stars_console", False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)


def test_library_noise_goes_to_the_file_ours_to_the_console(routed, capsys):
    path = console.setup(str(routed))
    logging.getLogger("absl").warning("Tables initialized inside a tf.function")
    logging.getLogger("apache_beam.io").info("reading shards")
    warnings.warn("a library's notice", UserWarning, stacklevel=1)
    logging.getLogger("serving.sidecar.api").warning("our own warning")
    logging.getLogger("tensorflow").error("a library's error")
    logging.getLogger("models.trainer").info("epoch 3: loss 1.2")
    err = capsys.readouterr().err
    assert "our own warning" in err and "a library's error" in err
    assert "Tables initialized" not in err and "reading shards" not in err
    assert "notice" not in err and "epoch 3" not in err
    text = open(path).read()
    for line in ("Tables initialized", "reading shards", "a library's notice",
                 "our own warning", "a library's error", "epoch 3: loss 1.2"):
        assert line in text


def test_verbose_shows_everything_and_setup_twice_adds_no_handlers(routed, capsys):
    console.setup(str(routed))
    console.setup(str(routed), verbose=True)
    logging.getLogger("absl").info("Component Trainer is running.")
    err = capsys.readouterr().err
    assert err.count("Component Trainer is running.") == 1
    assert open(routed).read().count("Component Trainer is running.") == 1


def test_unfiltered_console_for_servers_keeps_warnings_of_anyone(routed, capsys):
    console.setup(None, filtered=False)
    logging.getLogger("uvicorn.error").warning("port in use")
    logging.getLogger("absl").info("not at INFO")
    err = capsys.readouterr().err
    assert "port in use" in err and "not at INFO" not in err


def test_progress_is_silent_off_a_terminal(capsys):
    items = list(console.progress(range(5), desc="scoring"))
    with console.progress(desc="enriching", unit="item") as bar:
        bar.update(3)
    assert items == [0, 1, 2, 3, 4] and bar.disable  # pytest's stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_start_up_warnings_are_held_for_the_log_file(routed, capsys):
    console.hold_until_setup()
    warnings.warn("an import-time notice", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == ""  # held, not printed
    path = console.setup(str(routed))
    assert "an import-time notice" in open(path).read()
    assert "an import-time notice" not in capsys.readouterr().err


def _warn_in_child() -> int:
    warnings.warn("a child process's notice", UserWarning, stacklevel=1)
    return 1


def test_child_processes_log_where_the_parent_does(routed, capfd):
    import concurrent.futures
    import multiprocessing
    path = console.setup(str(routed))
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=console.setup_child) as pool:
        assert pool.submit(_warn_in_child).result() == 1
    assert "a child process's notice" in open(path).read()
    assert "a child process's notice" not in capfd.readouterr().err
