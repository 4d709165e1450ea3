"""Writing a benchmark's results: the JSON document, its Markdown table beside it (same
name, ``.md``), and the command line that made them."""
from __future__ import annotations

import json
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


__all__ = ["command_line", "write_results"]
