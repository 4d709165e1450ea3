"""Writing a benchmark's results: the JSON document, its Markdown table beside it (same
name, ``.md``), and the command line that made them."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Callable, Sequence


def command_line(target: str, variable: str, args: Sequence[str]) -> str:
    """``make <target>`` with the arguments given, as a user would type it."""
    return f"make {target}" + (f" {variable}='{' '.join(args)}'" if args else "")


def write_results(out: str, document: dict, markdown: Callable[[dict], str]) -> str:
    """Writes ``out`` (JSON) and ``out`` with ``.md`` (``markdown(document)``); returns the
    Markdown."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")
    text = markdown(document)
    path.with_suffix(".md").write_text(text)
    return text


def machine() -> dict:
    """Where a benchmark ran: cores it could use, platform, Python and TensorFlow."""
    import numpy as np
    import tensorflow as tf
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"cpu_count": os.cpu_count(), "usable_cores": affinity,
            "platform": platform.platform(), "processor": platform.processor() or None,
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "numpy": np.__version__}


__all__ = ["command_line", "machine", "write_results"]
