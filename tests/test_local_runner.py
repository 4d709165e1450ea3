"""The local runner's console: one line per component, from LocalDagRunner's own records,
heard without changing anyone's log levels."""
import inspect
import io
import logging

import pytest
from absl import logging as absl_logging

from pipeline.runners.local import (
    CACHED,
    FINISHED,
    RUNNING,
    SKIPPED,
    ComponentLines,
    listening,
)


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


def test_a_cache_hit_prints_cached_instead_of_a_duration():
    out = io.StringIO()
    lines = ComponentLines(total=2, out=out)
    with listening(lines):
        absl_logging.info(RUNNING, "Transform")
        absl_logging.info(CACHED, 12)
        absl_logging.info(FINISHED, "Transform")
        absl_logging.info(RUNNING, "StarsTrainer")
        absl_logging.info(FINISHED, "StarsTrainer")
    printed = out.getvalue().splitlines()
    assert printed[0].split() == ["[1/2]", "Transform", "cached"]
    assert printed[1].split()[:2] == ["[2/2]", "StarsTrainer"] and printed[1].endswith(" s")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.NOTSET)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_listening_leaves_verbosity_and_other_handlers_alone():
    """The component lines need absl's INFO records; nothing else should start seeing them
    (the run used to raise absl's verbosity, which lowers the root logger's level too)."""
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.WARNING)
    root, absl_logger = logging.getLogger(), absl_logging.get_absl_logger()
    root_level = root.level  # earlier tests may have left it lower: this test's premise
    root.setLevel(logging.WARNING)
    levels = (root.level, absl_logger.level)
    elsewhere = _Records()
    root.addHandler(elsewhere)
    out = io.StringIO()
    try:
        with listening(ComponentLines(total=1, out=out)):
            assert absl_logging.get_verbosity() == absl_logging.WARNING
            assert root.level == levels[0]
            absl_logging.info(RUNNING, "CatalogExampleGen")
            absl_logging.set_verbosity(absl_logging.FATAL)    # as TF's SavedModel export
            absl_logging.warning("a warning while absl is asked for FATAL only: dropped")
            absl_logging.set_verbosity(absl_logging.WARNING)  # and back
            absl_logging.info(FINISHED, "CatalogExampleGen")
            absl_logging.warning("a warning still goes where it went")
            logging.getLogger("some.library").info("another library's INFO: still dropped")
        assert (root.level, absl_logger.level) == levels
        assert not absl_logger.filters
        absl_logging.info(RUNNING, "Transform")  # after: no line, no record
    finally:
        root.removeHandler(elsewhere)
        root.setLevel(root_level)
        absl_logging.set_verbosity(verbosity)
    assert out.getvalue().split()[:2] == ["[1/1]", "CatalogExampleGen"]
    assert len(out.getvalue().splitlines()) == 1
    assert [r.getMessage() for r in elsewhere.records] == ["a warning still goes where it went"]


def test_the_cache_hit_record_is_the_one_the_launcher_writes():
    from tfx.orchestration.portable import launcher
    assert repr(CACHED) in inspect.getsource(launcher)


def test_one_run_at_a_time_publishes_into_a_release_directory(tmp_path):
    """The pipeline and the catalogue refresh share the releases: a second publisher is
    refused at once, and the lock goes with the run."""
    from pipeline.configs import PipelineConfig
    from pipeline.runners.local import PublisherBusy, sole_publisher
    config = PipelineConfig(data_dir=str(tmp_path / "data"), pipeline_root=str(tmp_path))
    with sole_publisher(config):
        with pytest.raises(PublisherBusy, match="another pipeline run or catalogue refresh"):
            with sole_publisher(config):
                pass
    with sole_publisher(config):  # released
        pass


def test_default_beam_arguments_build_no_tfx_package(monkeypatch):
    """TFX repackages itself for remote Beam workers whenever a Beam executor gets
    arguments without a dependency flag: 52 MB in /tmp per component run, never removed
    (enough runs filled a CI disk). The defaults must leave TFX nothing to build."""
    from tfx.components.statistics_gen.executor import Executor as StatisticsGenExecutor
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.utils import dependency_utils

    from pipeline.configs import PipelineConfig

    def build():
        raise AssertionError("a TFX sdist was built for a local run")

    monkeypatch.setattr(dependency_utils, "build_ephemeral_package", build)
    executor = StatisticsGenExecutor(BaseBeamExecutor.Context(
        beam_pipeline_args=list(PipelineConfig.beam_pipeline_args)))
    assert executor._make_beam_pipeline().options.get_all_options()["runner"] is None
    with pytest.raises(AssertionError, match="sdist"):  # the guard above is live
        StatisticsGenExecutor(BaseBeamExecutor.Context(
            beam_pipeline_args=["--direct_num_workers=1"]))


def test_a_url_root_needs_local_paths_for_the_runner_state(tmp_path):
    import dataclasses

    from pipeline.configs import PipelineConfig
    from pipeline.runners.local import check_local_state
    config = PipelineConfig(data_dir="gs://bucket/data", pipeline_root="gs://bucket/root")
    with pytest.raises(ValueError, match="pass --metadata-path, --release-dir, --user-store"):
        check_local_state(config)
    with pytest.raises(ValueError, match="pass --metadata-path \\("):
        check_local_state(dataclasses.replace(config, train_model=False))
    check_local_state(dataclasses.replace(
        config, metadata_path=str(tmp_path / "mlmd.sqlite"), release_dir=str(tmp_path / "r"),
        user_store="redis://127.0.0.1:6379/0"))  # a Redis store is no path: fine
