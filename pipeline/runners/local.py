"""Runs the pipeline with TFX's LocalDagRunner (the embedded default), printing one line
per component with its duration: LocalDagRunner logs "Component X is running/finished"
through absl, which the console leaves to the log file."""
from __future__ import annotations

import logging
import sys
import time
from typing import IO, Dict, Optional

from tfx import v1 as tfx

from pipeline.configs import PipelineConfig
from pipeline.pipeline import create_pipeline

RUNNING, FINISHED, SKIPPED = ("Component %s is running.", "Component %s is finished.",
                              "Skipping component %s.")


class ComponentLines(logging.Handler):
    """LocalDagRunner's component records -> ``[3/12] Transform  12.3 s`` lines."""

    def __init__(self, total: int, out: Optional[IO[str]] = None):
        super().__init__(logging.INFO)
        self.total, self.out = total, out
        self.started: Dict[str, float] = {}
        self.done = 0

    def _line(self, name: str, what: str) -> None:
        print(f"   [{self.done:>{len(str(self.total))}}/{self.total}] {name:<28} {what}",
              file=self.out or sys.stdout, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg not in (RUNNING, FINISHED, SKIPPED) or not record.args:
            return
        name = str(record.args[0])  # type: ignore[index]
        if record.msg == RUNNING:
            self.started[name] = time.perf_counter()
            return
        self.done += 1
        if record.msg == SKIPPED:
            self._line(name, "skipped")
        else:
            self._line(name, f"{time.perf_counter() - self.started.pop(name):6.1f} s")

    def failed(self) -> None:
        """Names the component that was running when the run raised."""
        for name, started in self.started.items():
            self._line(name, f"failed after {time.perf_counter() - started:.1f} s")


def run(config: PipelineConfig, out: Optional[IO[str]] = None) -> None:
    from absl import logging as absl_logging
    pipeline = create_pipeline(config)
    lines = ComponentLines(len(pipeline.components), out)
    absl_logger = absl_logging.get_absl_logger()
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)  # the component records are INFO
    absl_logger.addHandler(lines)
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except BaseException:
        lines.failed()
        raise
    finally:
        absl_logger.removeHandler(lines)
        absl_logging.set_verbosity(verbosity)
