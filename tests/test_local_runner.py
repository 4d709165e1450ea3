"""The local runner's console: one line per component, from LocalDagRunner's own records."""
import inspect
import io

from absl import logging as absl_logging

from pipeline.runners.local import FINISHED, RUNNING, SKIPPED, ComponentLines


def test_one_line_per_component_with_its_duration():
    out = io.StringIO()
    lines = ComponentLines(total=3, out=out)
    logger = absl_logging.get_absl_logger()
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    logger.addHandler(lines)
    try:
        absl_logging.info(RUNNING, "CatalogExampleGen")
        absl_logging.info("Going to run a new execution 7")  # other records: no line
        absl_logging.info(FINISHED, "CatalogExampleGen")
        absl_logging.info(SKIPPED, "Pusher")
        absl_logging.info(RUNNING, "Trainer")
        lines.failed()
    finally:
        logger.removeHandler(lines)
        absl_logging.set_verbosity(verbosity)
    printed = out.getvalue().splitlines()
    assert len(printed) == 3, printed
    assert printed[0].split()[:2] == ["[1/3]", "CatalogExampleGen"]
    assert printed[0].endswith(" s") and float(printed[0].split()[-2]) >= 0.0
    assert printed[1].split() == ["[2/3]", "Pusher", "skipped"]
    assert "Trainer" in printed[2] and "failed after" in printed[2]


def test_the_records_are_the_ones_local_dag_runner_writes():
    """If TFX rewords its records, the lines would silently stop: fail here instead."""
    from tfx.orchestration.local import local_dag_runner
    source = inspect.getsource(local_dag_runner)
    for message in (RUNNING, FINISHED, SKIPPED):
        assert repr(message) in source or f'"{message}"' in source, message
