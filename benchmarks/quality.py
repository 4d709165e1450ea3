"""Offline quality benchmark (``make bench-quality``).

    python -m benchmarks.quality --data-dir out/beauty/data --out out/beauty/eval \
        --dataset beauty --results benchmarks/results/quality_beauty.json [--quick]

Runs the leave-one-out data half once under ``<out>/pipeline``, trains and
scores every model with the standard full-catalogue protocol (history-masked
and unmasked), and writes the results JSON and a Markdown report with PNG plots
(see :mod:`evaluation.offline` and ``benchmarks/README.md``), the report with the
quality targets checked (``benchmarks/quality_targets.py``): what ``stars eval`` reports,
judged.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from benchmarks import quality_targets
from evaluation import offline
from stars.environment import configure


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    offline.add_arguments(parser)
    return parser


def main(argv=None) -> int:
    configure()  # before the run imports the models (stars.environment)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("stars").setLevel(logging.INFO)  # progress; Beam/TFX stay quiet
    try:
        document = offline.run_from_args(args,
                                         report_sections=[quality_targets.report_section])
    except (ValueError, FileNotFoundError) as e:
        print(f"benchmarks.quality: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(offline.summary_lines(document)))
    print(json.dumps({"results": document["paths"]["results"],
                      "report": document["paths"]["report"], "skipped": document["skipped"],
                      "wall_s": document["wall_s"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
