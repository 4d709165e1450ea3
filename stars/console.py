"""What a person sees on the console: the command's own lines and progress, not library noise.

A pipeline run logs hundreds of lines from TensorFlow, absl, Beam and TFX (CUDA factories
on a CPU machine, analyzer notices, MLMD query notes) that tell neither progress nor
trouble.  :func:`setup` sends all Python logging and warnings to a log file and leaves on
the console only warnings from STARS's own packages and errors from anyone; ``verbose``
shows everything on the console as well.  :func:`progress` is the progress bar of long
loops: a ``tqdm`` bar on stderr while it runs, gone when done, and silent when stderr is
not a terminal (CI, a log file), so it never adds lines to captured output.
"""
from __future__ import annotations

import logging
import os
import sys
from logging.handlers import MemoryHandler
from typing import Iterable, Optional, TypeVar

OWN_PACKAGES = ("stars", "models", "components", "pipeline", "serving", "evaluation", "cli",
                "benchmarks", "__main__")
# What setup chose, for the child processes our code starts (they inherit the environment).
LOG_FILE_VAR, VERBOSE_VAR = "STARS_LOG_FILE", "STARS_VERBOSE"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
T = TypeVar("T")


class _ConsoleFilter(logging.Filter):
    """Warnings of our own packages and errors of anyone; nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return record.name.split(".")[0] in OWN_PACKAGES


def hold_until_setup() -> None:
    """Keeps the records and warnings of the start-up imports (before the command line is
    parsed and the log file known) for :func:`setup` to write where they belong."""
    root = logging.getLogger()
    if not any(isinstance(h, MemoryHandler) and getattr(h, "_stars_console", False)
               for h in root.handlers):
        held = MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        held._stars_console = True  # type: ignore[attr-defined]
        root.addHandler(held)
    _capture_warnings()


def _capture_warnings() -> None:
    """Warnings become log records.  Off and on again: ``captureWarnings(True)`` does nothing
    when an earlier call captured them and someone (a ``catch_warnings`` block) has since
    put its own ``showwarning`` back."""
    logging.captureWarnings(False)
    logging.captureWarnings(True)


def setup(log_file: Optional[str], verbose: bool = False,
          filtered: bool = True) -> Optional[str]:
    """Routes logging: everything to ``log_file`` (appended; None: no file); the console
    gets INFO and up when ``verbose``, else WARNING and up, only our own packages' unless
    ``filtered`` is off.  Idempotent: replaces the handlers an earlier call added (and
    leaves others, e.g. pytest's).  Returns the log file's absolute path."""
    root = logging.getLogger()
    held = [h for h in root.handlers if isinstance(h, MemoryHandler)]
    for handler in [h for h in root.handlers if getattr(h, "_stars_console", False)]:
        root.removeHandler(handler)
        if handler not in held:
            handler.close()
    root.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    if filtered and not verbose:
        console.addFilter(_ConsoleFilter())
    handlers: list = [console]
    if log_file:
        log_file = os.path.abspath(log_file)
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter(FORMAT))
        handlers.append(to_file)
    for handler in handlers:
        handler._stars_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for memory in held:  # start-up records, through the handlers just set up
        for record in memory.buffer:
            root.handle(record)
        memory.buffer.clear()
        memory.close()
    _capture_warnings()
    _absl_through_python_logging()
    os.environ[LOG_FILE_VAR] = log_file or ""
    os.environ[VERBOSE_VAR] = "1" if verbose else ""
    return log_file


def setup_child() -> None:
    """The same routing in a child process our code starts (a process pool's initializer):
    its imports' warnings go to the parent's log file, not the console."""
    if LOG_FILE_VAR in os.environ:
        setup(os.environ[LOG_FILE_VAR] or None, verbose=bool(os.environ.get(VERBOSE_VAR)))


def _absl_through_python_logging() -> None:
    """absl (TFX's logger) at INFO, so the file gets TFX's component lines; absl writes
    through Python logging unless absl.app installed its own stderr handler."""
    try:
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logging.get_absl_logger().propagate = True


def progress(iterable: Optional[Iterable[T]] = None, total: Optional[int] = None,
             desc: str = "", unit: str = "it"):
    """``iterable`` with a progress bar on stderr when stderr is a terminal; without an
    iterable, a bar to ``update(n)`` by hand (use it as a context manager)."""
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, file=sys.stderr,
                disable=None, dynamic_ncols=True, unit_scale=True)


__all__ = ["setup", "setup_child", "hold_until_setup", "progress", "OWN_PACKAGES"]
