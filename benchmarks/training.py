"""Training-speed benchmark (``make bench-training``): random vs length-bucketed batches.

    python -m benchmarks.training --pipeline out/beauty/eval/pipeline \
        [--models sasrec_plain,stars] [--epochs 2] [--out benchmarks/results/training_speed.json]

On the training split of a leave-one-out data half (what ``make bench-quality``
builds), times ``StarsModel.train_step`` over whole epochs of the Trainer's input
pipeline with ``length_buckets`` off (random users, the full window) and on
(grouped by history span, cut to it), epochs interleaved so both share the
machine's noise.  Reports seconds per epoch and the ratio, plus the padding each
layout carries (share of encoder columns that hold no event).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from stars.environment import configure


def _epoch(step, data) -> dict:
    """Runs ``step`` over one epoch of ``data``: wall seconds, batches, columns, events."""
    import tensorflow as tf
    batches = columns = events = 0
    started = time.perf_counter()
    for batch in data:
        step(batch)
        batches += 1
        columns += int(tf.size(batch["valid"]))
        events += int(tf.reduce_sum(tf.cast(batch["valid"], tf.int32)))
    return {"s": time.perf_counter() - started, "batches": batches, "columns": columns,
            "events": events}


def measure(pipeline_root: str, variant: str, epochs: int, overrides=None) -> dict:
    import tensorflow as tf

    from evaluation import offline
    from models import trainer as T
    ctx = offline.EvalContext(pipeline_root)
    layouts = {}
    for buckets in (False, True):
        config = offline.model_config(variant, "benchmark", 0, False,
                                      {**(overrides or {}), "length_buckets": buckets})
        adapter = T.make_adapter(ctx.catalog, config, ctx.meta)
        data, _ = T.training_dataset(ctx.files("train"), ctx.accessor, ctx.tft_output,
                                     adapter, config)
        model = T.build_model(ctx.catalog, config, ctx.meta)
        model.item_embeddings(tf.constant([0]))
        model.items.build(None)
        model.compile(optimizer=T.make_optimizer(config, 10_000))
        step = tf.function(model.train_step, reduce_retracing=True)
        layouts["bucketed" if buckets else "random"] = {"config": config, "data": data,
                                                        "step": step, "epochs": []}
    for layout in layouts.values():  # warm-up epoch: graph tracing, one per batch width
        _epoch(layout["step"], layout["data"])
    for _ in range(epochs):
        for layout in layouts.values():
            layout["epochs"].append(_epoch(layout["step"], layout["data"]))
    out = {}
    for name, layout in layouts.items():
        runs = layout["epochs"]
        seconds = [r["s"] for r in runs]
        out[name] = {"s_per_epoch": round(sum(seconds) / len(seconds), 2),
                     "s_per_epoch_each": [round(s, 2) for s in seconds],
                     "batches_per_epoch": runs[0]["batches"],
                     "padding_share": round(1 - runs[0]["events"] / runs[0]["columns"], 3)}
    out["speedup"] = round(out["random"]["s_per_epoch"] / out["bucketed"]["s_per_epoch"], 2)
    config = layouts["bucketed"]["config"]
    out["config"] = {"d_model": config.d_model, "batch_size": config.batch_size,
                     "max_history": config.max_history, "full_softmax": config.full_softmax}
    return out


def main(argv=None) -> int:
    configure()  # the entry point sets the process up (stars.environment)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="out/beauty/eval/pipeline",
                        help="a leave-one-out data half (make bench-quality builds one)")
    parser.add_argument("--models", default="sasrec_plain,stars")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per layout")
    parser.add_argument("--out", default="benchmarks/results/training_speed.json")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if not os.path.isdir(args.pipeline):
        print(f"benchmarks.training: error: no data half at {args.pipeline}; run "
              "'make bench-quality' first (it builds one)", file=sys.stderr)
        return 2
    document = {"pipeline": args.pipeline, "cores": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "machine": platform.machine(), "models": {}}
    for variant in [m for m in args.models.split(",") if m]:
        document["models"][variant] = measure(args.pipeline, variant, args.epochs)
        print(variant, json.dumps(document["models"][variant]), flush=True)
    document["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(document, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
