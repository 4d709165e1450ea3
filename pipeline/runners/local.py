"""Runs the pipeline with TFX's LocalDagRunner (the embedded default), printing one line
per component with its duration, or ``cached``: LocalDagRunner logs "Component X is
running/finished" through absl, which the console leaves to the log file.

Caching: the runner fingerprints the data files at run time (``stars.data.fingerprint``)
and passes the fingerprints in the config, so a rerun on unchanged data reuses the data
half; the model half always runs (why: ``pipeline.pipeline.create_pipeline``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from typing import IO, Dict, Iterator, Optional, Sequence, Set, Tuple

from tfx import v1 as tfx

from components import catalog_example_gen, interaction_example_gen
from pipeline.configs import PipelineConfig
from pipeline.pipeline import create_pipeline, create_refresh_pipeline, data_components
from stars import storage
from stars.data import fingerprint

RUNNING, FINISHED, SKIPPED = ("Component %s is running.", "Component %s is finished.",
                              "Skipping component %s.")
CACHED = "A cached execution %d is used."  # tfx.orchestration.portable.launcher, in between


def component_event(record: logging.LogRecord) -> Optional[Tuple[str, str]]:
    """(RUNNING | FINISHED | SKIPPED, component name) for LocalDagRunner's component
    records; None for any other record."""
    if record.msg not in (RUNNING, FINISHED, SKIPPED) or not record.args:
        return None
    return str(record.msg), str(record.args[0])  # type: ignore[index]


class ComponentLines(logging.Handler):
    """LocalDagRunner's component records -> ``[3/12] Transform  12.3 s`` lines."""

    def __init__(self, total: int, out: Optional[IO[str]] = None):
        super().__init__(logging.INFO)
        self.total, self.out = total, out
        self.started: Dict[str, float] = {}
        self.cached: Set[str] = set()
        self.done = 0

    def _line(self, name: str, what: str) -> None:
        print(f"   [{self.done:>{len(str(self.total))}}/{self.total}] {name:<28} {what}",
              file=self.out or sys.stdout, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == CACHED:   # components run one at a time: the one started
            self.cached.update(self.started)
            return
        event = component_event(record)
        if event is None:
            return
        what, name = event
        if what == RUNNING:
            self.started[name] = time.perf_counter()
            return
        self.done += 1
        if what == SKIPPED:
            self._line(name, "skipped")
        elif name in self.cached:
            self.started.pop(name)
            self._line(name, "cached")
        else:
            self._line(name, f"{time.perf_counter() - self.started.pop(name):6.1f} s")

    def failed(self) -> None:
        """Names the component that was running when the run raised."""
        for name, started in self.started.items():
            self._line(name, f"failed after {time.perf_counter() - started:.1f} s")


@contextlib.contextmanager
def listening(*handlers: logging.Handler) -> Iterator[None]:
    """Feeds ``handlers`` absl's INFO records without changing what anyone else sees.

    ``absl_logging.set_verbosity(INFO)`` would lower the root logger's level too (when
    absl's handler is on the root) and let every library's INFO lines through.  Instead
    the absl logger alone stays open to INFO, and a filter on it hands each record to
    ``handler`` and passes on only those the level its owners asked for lets through.
    They keep asking during the run -- TensorFlow's SavedModel export sets absl's
    verbosity to FATAL and back -- so the logger's ``setLevel`` is shadowed meanwhile:
    it records the level asked for and leaves the logger open.
    """
    from absl import logging as absl_logging
    logger = absl_logging.get_absl_logger()
    set_level = type(logger).setLevel
    asked = logger.level                     # NOTSET: the root's level applies

    def threshold() -> int:
        return asked or (logger.parent.getEffectiveLevel() if logger.parent else 0)

    def ask(level) -> None:
        nonlocal asked
        asked = logging.getLevelName(level) if isinstance(level, str) else int(level)
        set_level(logger, min(threshold(), logging.INFO))

    def tap(record: logging.LogRecord) -> bool:
        for handler in handlers:
            handler.handle(record)
        return record.levelno >= threshold()

    logger.addFilter(tap)
    logger.setLevel = ask
    ask(asked)
    try:
        yield
    finally:
        del logger.setLevel
        set_level(logger, asked)
        logger.removeFilter(tap)


def fingerprinted(config: PipelineConfig) -> PipelineConfig:
    """``config`` with the fingerprints of the data as it is now (none without caching:
    hashing large tables is wasted then)."""
    if not config.enable_cache:
        return config
    return dataclasses.replace(
        config,
        catalog_fingerprint=fingerprint.tables_fingerprint(
            config.data_dir, catalog_example_gen.READS),
        interactions_fingerprint=fingerprint.tables_fingerprint(
            config.data_dir, interaction_example_gen.READS))


def compile_with_data_half_cached(config: PipelineConfig):
    """The pipeline IR, with caching left on (if on) only for the data half's nodes."""
    from tfx.orchestration.portable import tfx_runner
    data_ids = {node.id for node in data_components(config)}
    # What LocalDagRunner.run does before run_with_ir (pip dependencies, then compile).
    ir = tfx_runner._make_pipeline_proto(create_pipeline(config))
    for node in ir.nodes:
        if node.pipeline_node.node_info.id not in data_ids:
            node.pipeline_node.execution_options.caching_options.enable_cache = False
    return ir


class PublisherBusy(RuntimeError):
    """Another pipeline run or catalogue refresh is publishing into the same releases."""


@contextlib.contextmanager
def sole_publisher(config: PipelineConfig) -> Iterator[None]:
    """One run at a time publishes into a release directory: the training pipeline and the
    catalogue refresh both push versions, commit store generations and replace ``CURRENT``,
    and interleaved they would publish each other's halves.  An exclusive ``flock`` on
    ``<releases>/.lock`` (held for the run, released by the kernel if the process dies);
    a second run fails at once instead of waiting behind a long one."""
    import fcntl
    os.makedirs(config.releases, exist_ok=True)
    with open(os.path.join(config.releases, ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PublisherBusy(f"another pipeline run or catalogue refresh is publishing into "
                                f"{config.releases}; run again when it has finished") from None
        yield


def check_local_state(config: PipelineConfig) -> None:
    """MLMD (SQLite), the release directory (flock, rename) and the embedded user store
    (SQLite) need a local disk. With a URL root (gs://...) their defaults would be URLs:
    say which to set instead of failing deep inside MLMD or creating a local ``gs:``."""
    state = [("--metadata-path", config.metadata)]
    if config.train_model:
        state.append(("--release-dir", config.releases))
        if config.store.startswith("embedded:"):  # redis://... is a server, not a path
            state.append(("--user-store", config.store.removeprefix("embedded:")))
    remote = [flag for flag, path in state if storage.is_remote(path)]
    if remote:
        raise ValueError(f"the pipeline root {config.pipeline_root} is a URL: artefacts go "
                         f"there, but the local runner's state needs local paths; pass "
                         f"{', '.join(remote)} (the user store may also be redis://...)")


def run(config: PipelineConfig, out: Optional[IO[str]] = None,
        monitors: Sequence[logging.Handler] = ()) -> None:
    """Runs the pipeline; ``monitors`` hear the component records too (benchmarks)."""
    check_local_state(config)
    ir = compile_with_data_half_cached(fingerprinted(config))
    if not config.train_model:  # the data half publishes nothing
        run_ir(ir, out, monitors)
        return
    with sole_publisher(config):
        run_ir(ir, out, monitors)


def run_refresh(config: PipelineConfig, out: Optional[IO[str]] = None) -> None:
    """The catalogue refresh (``pipeline.pipeline.create_refresh_pipeline``), never cached;
    the fingerprints still let the CatalogIndexer check it snapshots the file it read."""
    from tfx.orchestration.portable import tfx_runner
    check_local_state(config)
    config = fingerprinted(dataclasses.replace(config, enable_cache=True))
    with sole_publisher(config):
        run_ir(tfx_runner._make_pipeline_proto(create_refresh_pipeline(config)), out)


def run_ir(ir, out: Optional[IO[str]] = None,
           monitors: Sequence[logging.Handler] = ()) -> None:
    lines = ComponentLines(len(ir.nodes), out)
    with listening(lines, *monitors):
        try:
            tfx.orchestration.LocalDagRunner().run_with_ir(ir)
        except BaseException:
            lines.failed()
            raise
