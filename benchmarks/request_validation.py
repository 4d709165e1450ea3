"""Cost of checking a sidecar request against openapi.yaml, side by side in one process:

* ``fastjsonschema``: the schema compiled to Python, what the sidecar runs
  (``serving.sidecar.validation.check``), alone and with the conversion into a
  ``RecommendationRequest`` (``api.parse_request``);
* ``jsonschema``: the interpreter the tests use as the reference implementation.

    python -m benchmarks.request_validation [--repeat 2000] [--out benchmarks/results/...]

Requests: a known user with filters and context, and anonymous sessions of 20 and 200
events (the default limit).  Figures are microseconds per request (best of 5 runs).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import timeit

from benchmarks.report import command_line, write_results


def _requests() -> dict:
    filters = {"region": "us", "in_stock": True, "price": {"min": 5, "max": 50},
               "exclude_ids": ["i42"], "categories": ["Grocery > Tea"]}
    context = {"timestamp": 1700000000, "signals": {"promotion": True, "weather": 0.3}}

    def session(n):
        return {"events": [{"item_id": f"i{i}", "event_type": "view",
                            "timestamp": 1699990000 + i} for i in range(n)],
                "k": 10, "mode": "rr", "filters": filters, "context": context}
    return {"known_user": {"user_id": "u123", "k": 10, "mode": "rr", "filters": filters,
                           "context": context},
            "session_20_events": session(20), "session_200_events": session(200)}


def measure(repeat: int) -> dict:
    import jsonschema

    from serving.sidecar.api import parse_request
    from serving.sidecar.validation import check, openapi_document
    doc = openapi_document()
    reference = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/RecommendationRequest", "components": doc["components"]})
    rows = []
    for name, body in _requests().items():
        def per_request_us(fn):
            return min(timeit.repeat(fn, number=repeat, repeat=5)) / repeat * 1e6
        rows.append({
            "request": name,
            "fastjsonschema_us": per_request_us(lambda b=body: check("RecommendationRequest", b)),
            "parse_request_us": per_request_us(lambda b=body: parse_request(b, now=1700000000)),
            "jsonschema_us": per_request_us(lambda b=body: reference.validate(b))})
        rows[-1]["jsonschema_over_fastjsonschema"] = (rows[-1]["jsonschema_us"]
                                                      / rows[-1]["fastjsonschema_us"])
    return {"rows": rows}


def _markdown(doc: dict) -> str:
    lines = [f"Request validation against openapi.yaml (`{doc['command']}`, {doc['date']}, "
             f"{doc['machine']}); microseconds per request, best of 5.", "",
             "| request | fastjsonschema check | check + conversion (parse_request) | "
             "jsonschema | jsonschema / fastjsonschema |", "|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['request']} | {r['fastjsonschema_us']:.0f} | "
                     f"{r['parse_request_us']:.0f} | {r['jsonschema_us']:.0f} | "
                     f"{r['jsonschema_over_fastjsonschema']:.1f}× |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.request_validation")
    p.add_argument("--repeat", type=int, default=2000)
    p.add_argument("--out", default="benchmarks/results/request_validation.json")
    args = p.parse_args(argv)
    doc = {"command": command_line("bench-validation", "BENCH_VALIDATION_ARGS",
                                   argv if argv is not None else sys.argv[1:]),
           "date": datetime.date.today().isoformat(),
           "machine": f"{platform.machine()}, {platform.python_version()}",
           **measure(args.repeat)}
    print(write_results(args.out, doc, _markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
