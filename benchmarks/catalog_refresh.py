"""Catalogue refresh benchmark: wall time from "catalogue file changed" to "new item served".

    python -m benchmarks.catalog_refresh [--sizes demo,100k] [--work out/bench-refresh] \\
        [--out benchmarks/results/catalog_refresh.json]

For each catalogue size (synthetic data: ``demo`` = 1,500 items, ``100k`` = the serving
benchmark's ``bench100k``), with the serving benchmark's fast pipeline settings (hashing
text encoder, ``tiny`` model, 1 epoch; cached under ``--work``), the pipeline publishes
release 1; then, with the model server (two versions loaded) and the sidecar following the
release directory running in this process:

1. a product is appended to the catalogue file (a new edition of an existing item) -- the
   clock starts;
2. ``stars catalog refresh`` runs (a child process, as a CronJob would run it);
3. the sidecar is polled until it serves the new release, then asked for a session about
   the product's older edition until the new product is in its top 100.

Recorded per size: the refresh's wall time, publication -> sidecar switch, change -> new
item served, the new item's rank, and how many items the refresh re-embedded (the
enrichment cache keeps the others).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import List

from benchmarks import serving as bench_serving
from benchmarks.report import command_line, write_results
from stars.environment import configure

SIZE_PRESETS = {"demo": "demo", "100k": "bench100k"}
TOP_K = bench_serving.TOP_K


def _refresh(config) -> None:  # in a child process
    configure()
    from pipeline.runners import local
    local.run_refresh(config)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _latest_report(root: str, component: str, output: str, name: str) -> dict:
    base = os.path.join(root, component, output)
    runs = sorted(os.listdir(base), key=int)
    with open(os.path.join(base, runs[-1], name)) as f:
        return json.load(f)


def bench_size(size: str, work: Path, seed: int) -> dict:
    import argparse as _argparse

    from serving import demo
    from serving.model_server.server import serve
    from serving.sidecar.cli import add_serve_sidecar_parser, build_app
    from serving.sidecar.server import make_server
    from stars import release as releases

    preset = SIZE_PRESETS.get(size, size)
    data_dir, root = work / size / "data", work / size / "pipeline"
    data = bench_serving._ensure_data(data_dir, preset, seed)
    config = bench_serving._pipeline_config(data_dir, root)
    model_base = os.path.join(config.serving_base, config.model_name)
    pipeline = bench_serving._ensure_model(config, model_base)
    first = releases.current(config.releases)
    if first is None:
        raise RuntimeError(f"no release under {config.releases}: remove {root} (a pipeline "
                           "run from before releases) and run again")
    server = serve(model_base, config.model_name, rest_port=0, grpc_port=0,
                   host="127.0.0.1", num_latest=2)
    parser = _argparse.ArgumentParser()
    add_serve_sidecar_parser(parser.add_subparsers())
    app = build_app(parser.parse_args([
        "sidecar", "--release-dir", config.releases, "--user-store", config.store,
        "--model-url", f"grpc://127.0.0.1:{server.grpc_port}", "--model-timeout-ms", "5000",
        "--budget-ms", "10000", "--release-poll-ms", "100"]))
    sidecar = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=sidecar.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{sidecar.server_address[1]}/v1/recommendations"
    try:
        sessions, last = bench_serving._sessions(str(data_dir), 1)
        like = sessions[0][1][-1][0]
        product = demo.add_product(str(data_dir), like)
        changed = time.time()
        child = multiprocessing.get_context("spawn").Process(target=_refresh, args=(config,))
        child.start()
        child.join()
        refreshed = time.time()
        if child.exitcode != 0:
            raise RuntimeError(f"the refresh failed (exit code {child.exitcode})")
        second = releases.current(config.releases)
        if second is None or second.release_id == first.release_id:
            raise RuntimeError("the refresh published no release (index gate failed?)")
        while app.popularity_source.status()["release"] != second.release_id:
            if time.time() - refreshed > 120:
                raise RuntimeError(f"no switch: {app.popularity_source.status()}")
            time.sleep(0.05)
        switched = time.time()
        body = {"events": [{"item_id": like, "event_type": "view", "timestamp": last + 60}],
                "k": TOP_K, "mode": "next",
                "context": {"timestamp": last + 120}}
        answer = [x["item_id"] for x in _post(url, body)["items"]]
        served = time.time()
        rank = answer.index(product["item_id"]) + 1 if product["item_id"] in answer else None
    finally:
        app.popularity_source.stop()
        sidecar.shutdown()
        sidecar.server_close()
        server.stop()
    enrichment = _latest_report(str(root), "ItemEnricher", "enriched_items",
                                "enrichment_report.json")
    from models.index_quality import REPORT_FILE
    index = _latest_report(str(root), "CatalogRefresher", "serving_model", REPORT_FILE)
    return {"size": size, "preset": preset, "items": index["items"], "data": data,
            "pipeline": pipeline, "release_before": first.release_id,
            "release_after": second.release_id,
            "refresh_s": round(refreshed - changed, 1),
            "published_to_switch_s": round(switched - refreshed, 2),
            "changed_to_served_s": round(served - changed, 1),
            "new_item": product["item_id"], "new_item_rank": rank,
            "re_embedded": enrichment.get("encoded"),
            "from_enrichment_cache": enrichment.get("embeddings_from_cache"),
            "scann_recall_at_k": index["scann_recall_at_k"], "k": index["k"],
            "changes": {k: index[k] for k in ("new_items", "removed_items", "changed_items",
                                              "kept_items")}}


def markdown(document: dict) -> str:
    lines = [f"# Catalogue refresh ({document['started_at'][:10]})", "",
             f"Command: `{document['command']}`", "",
             "Clock: from the catalogue file getting one new product, through `stars catalog "
             "refresh` (child process) and the running sidecar's switch, to its first answer "
             f"from the new release (a next-item session about the older edition, top "
             f"{TOP_K}); 'new item rank' is the new product's place in that answer (None: "
             "not in it).  Settings (the serving benchmark's fast pipeline: a weak 1-epoch "
             "`tiny` model on hashed text, so the rank says little; the `cpu` preset of "
             "`make demo` puts it at 41 of 100, its trained older edition at 4): "
             f"{json.dumps(bench_serving.PIPELINE_SETTINGS)}.", "",
             "| size | items | refresh s | publication -> switch s | change -> served s | "
             "new item rank | re-embedded | from cache | ScaNN recall@K |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in document["sizes"]:
        lines.append(f"| {r['size']} | {r['items']} | {r['refresh_s']} | "
                     f"{r['published_to_switch_s']} | {r['changed_to_served_s']} | "
                     f"{r['new_item_rank']} | {r['re_embedded']} | "
                     f"{r['from_enrichment_cache']} | {r['scann_recall_at_k']:.3f} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.catalog_refresh",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="demo,100k")
    parser.add_argument("--work", default="out/bench-refresh")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/catalog_refresh.json")
    return parser


def main(argv=None) -> int:
    configure()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    sizes: List[dict] = []
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        sizes.append(bench_size(size, Path(args.work), args.seed))
        print(json.dumps(sizes[-1], indent=1), flush=True)
    document = {"benchmark": "catalog_refresh",
                "command": command_line("bench-refresh", "BENCH_REFRESH_ARGS", argv),
                "started_at": started, "machine": bench_serving._machine(), "sizes": sizes}
    print(write_results(args.out, document, markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
