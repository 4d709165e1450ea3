"""The serving half of ``stars demo``: model server + the pipeline's release + sidecar,
then a catalogue refresh served without a restart.

After the pipeline has published a release (model version, user embeddings, catalogue),
this starts the TF Serving-compatible model server (REST and gRPC, two versions kept
loaded) and the sidecar following the release directory (embedded post-filter, model
over gRPC), then sends real requests: REST ``:predict`` and gRPC ``Predict`` with the
official stub to the model server, and sidecar recommendations with filters for a known
user, an anonymous session and a round-robin request.  Then a product is added to the
catalogue, the catalogue refresh publishes a new release, and the sidecar -- still
running -- switches to it and recommends the new product to a session about it.  Every
returned item is checked against the filters; everything is shut down at the end.
"""
import argparse
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _history(data_dir: str, n_users: int = 2):
    """A few real users and their latest events, from the demo's interactions."""
    from stars.data import contract
    events = contract.read_whole_table(contract.find_table_file(data_dir, contract.INTERACTIONS),
                                       contract.INTERACTIONS)
    events = events.sort_values(["user_id", "timestamp"])
    users = list(events["user_id"].drop_duplicates()[:n_users])
    return users, {u: events[events["user_id"] == u].tail(5) for u in users}


def _grpc_predict(port: int, model_name: str, events) -> list:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    request.inputs["history_item_ids"].CopyFrom(
        tf.make_tensor_proto([list(events["item_id"])]))
    request.inputs["history_event_types"].CopyFrom(
        tf.make_tensor_proto([list(events["event_type"])]))
    request.inputs["history_timestamps"].CopyFrom(
        tf.make_tensor_proto([[int(t) for t in events["timestamp"]]], dtype=tf.int64))
    request.inputs["request_timestamp"].CopyFrom(
        tf.make_tensor_proto([int(events["timestamp"].max()) + 60], dtype=tf.int64))
    with grpc.insecure_channel(f"localhost:{port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=30)
    return [v.decode() for v in tf.make_ndarray(response.outputs["ni_ids"])[0][:5]]


def _check_filters(items: list, filters: dict, catalogue: dict) -> None:
    """Raises if an answer breaks its request's filters (regions empty = sold everywhere)."""
    for entry in items:
        item = catalogue[entry["item_id"]]
        if "region" in filters and item["regions"] and filters["region"] not in item["regions"]:
            raise AssertionError(f"{entry['item_id']} is not sold in {filters['region']}")
        if filters.get("in_stock") and item["stock"] is not None and item["stock"] <= 0:
            raise AssertionError(f"{entry['item_id']} is out of stock")
        if entry["item_id"] in filters.get("exclude_ids", []):
            raise AssertionError(f"{entry['item_id']} was excluded")


def _catalogue(data_dir: str) -> dict:
    from stars.data import contract
    items = contract.read_whole_table(contract.find_table_file(data_dir, contract.ITEMS),
                                      contract.ITEMS)
    out = {}
    for row in items.to_dict("records"):
        stock = row.get("stock")
        out[str(row["item_id"])] = {
            "title": str(row["title"]), "regions": [r for r in (row.get("regions") or []) if r],
            "stock": None if stock is None or stock != stock else int(stock)}
    return out


def add_product(data_dir: str, like: str) -> dict:
    """Appends a new product to the catalogue file: a new edition of item ``like`` (same
    text, category and shop data, a new id and title).  Returns its row."""
    import pandas as pd

    from stars.data import contract
    path = contract.find_table_file(data_dir, contract.ITEMS)
    items = (pd.read_parquet(path) if path.endswith(".parquet")
             else pd.read_csv(path, dtype=str, keep_default_na=False))
    row = items[items["item_id"].astype(str) == like].iloc[0].copy()
    row["item_id"] = f"{like}-new"
    row["title"] = f"{row['title']} (new edition)"
    items = pd.concat([items, row.to_frame().T], ignore_index=True)
    if path.endswith(".parquet"):
        items.to_parquet(path, index=False)
    else:
        items.to_csv(path, index=False)
    return {k: str(v) for k, v in row.items()}


def _wait_for_release(app, release_id: str, timeout_s: float = 120.0) -> float:
    started = time.time()
    while time.time() - started < timeout_s:
        if app.popularity_source.status()["release"] == release_id:
            return time.time() - started
        time.sleep(0.1)
    raise TimeoutError(f"the sidecar did not switch to release {release_id} within "
                       f"{timeout_s:.0f} s: {app.popularity_source.status()}")


def run(data_dir: str, model_base_path: str, release_dir: str, work_dir: str,
        refresh: Optional[Callable[[], None]] = None, model_name: str = "stars") -> dict:
    """``refresh``: runs the catalogue refresh (``stars catalog refresh``) of this
    pipeline; None skips the refresh part."""
    from serving.model_server.server import serve
    from serving.sidecar.cli import add_serve_sidecar_parser, build_app
    from serving.sidecar.server import make_server
    from stars import release as releases

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    # two versions loaded: the release being replaced answers until the sidecar switches
    server = serve(model_base_path, model_name, rest_port=0, grpc_port=0, host="127.0.0.1",
                   num_latest=2)
    sidecar = app = None
    try:
        print(f"== model server: REST :{server.rest_port}, gRPC :{server.grpc_port}, "
              f"versions {server.versions.serving_versions()}")
        users, history = _history(data_dir)
        events = history[users[0]]
        rest = _post(f"http://127.0.0.1:{server.rest_port}/v1/models/{model_name}:predict", {
            "signature_name": "serving_default",
            "instances": [{"history_item_ids": list(events["item_id"]),
                           "history_event_types": list(events["event_type"]),
                           "history_timestamps": [int(t) for t in events["timestamp"]],
                           "request_timestamp": int(events["timestamp"].max()) + 60}]})
        report["rest_ni_top5"] = rest["predictions"][0]["ni_ids"][:5]
        report["grpc_ni_top5"] = _grpc_predict(server.grpc_port, model_name, events)
        print(f"== REST predict (user {users[0]}): {report['rest_ni_top5']}")
        print(f"== gRPC predict (user {users[0]}): {report['grpc_ni_top5']}")

        release = releases.current(release_dir)
        if release is None:
            raise RuntimeError(f"the pipeline published no release in {release_dir}")
        stored = release.manifest["user_embeddings"]
        quality = release.manifest["index_quality"]
        print(f"== release {release.release_id}: model version {release.model_version}, "
              f"{stored['users']} users' embeddings, {release.manifest['catalogue']['items']} "
              f"catalogue items, ScaNN recall@{quality['k']} {quality['scann_recall_at_k']:.3f}")
        report["release"] = release.release_id

        sidecar_parser = argparse.ArgumentParser(prog="stars serve")
        add_serve_sidecar_parser(sidecar_parser.add_subparsers())
        args = sidecar_parser.parse_args([  # the flags `stars serve sidecar` takes
            "sidecar", "--release-dir", release_dir,
            "--model-url", f"grpc://127.0.0.1:{server.grpc_port}", "--model-name", model_name,
            "--user-store", stored["store"], "--host", "127.0.0.1", "--port", "0",
            "--model-timeout-ms", "2000", "--budget-ms", "5000", "--release-poll-ms", "200"])
        app = build_app(args)
        _wait_for_release(app, release.release_id)
        app.popularity_source.refresh()  # the fallback ranking that ships with the model
        report["popularity_source"] = app.recommender.popularity.source
        print(f"== sidecar fallback ranking: {len(app.recommender.popularity.ranking)} items, "
              f"from {report['popularity_source']}")
        sidecar = make_server(app, "127.0.0.1", 0)
        threading.Thread(target=sidecar.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{sidecar.server_address[1]}/v1/recommendations"
        catalogue = _catalogue(data_dir)
        last = int(max(h["timestamp"].max() for h in history.values())) + 3600
        requests = [
            ("known user, rr, region+stock filters", {
                "user_id": users[0], "k": 10, "mode": "rr",
                "filters": {"region": "us", "in_stock": True},
                "context": {"timestamp": last}}),
            ("anonymous session, next-item, excluding its own items", {
                "events": [{"item_id": i, "event_type": e, "timestamp": int(t)} for i, e, t in
                           zip(events["item_id"], events["event_type"], events["timestamp"])],
                "k": 5, "mode": "next",
                "filters": {"in_stock": True, "exclude_ids": list(events["item_id"])},
                "context": {"timestamp": last, "signals": {"promotion": True}}}),
            ("unknown user, general interest", {
                "user_id": "nobody-knows-me", "k": 5, "mode": "general",
                "filters": {"region": "uk"}, "context": {"timestamp": last}}),
        ]
        for title, body in requests:
            report[title] = _show(url, title, body, catalogue)
        print("== every answer respects its filters")
        if refresh is not None:
            report["refresh"] = _refresh(url, app, data_dir, release_dir, refresh, events,
                                         last)
    finally:
        if app is not None and app.popularity_source is not None:
            app.popularity_source.stop()
        if sidecar is not None:
            sidecar.shutdown()
            sidecar.server_close()
        server.stop()
        print("== model server and sidecar stopped")
    return report


def _show(url: str, title: str, body: dict, catalogue: dict) -> dict:
    answer = _post(url, body)
    _check_filters(answer["items"], body["filters"], catalogue)
    print(f"== sidecar: {title}: embedding={answer.get('user_embedding')} "
          f"degraded={answer.get('degraded')} latency_ms={answer.get('latency_ms')}")
    for x in answer["items"]:
        print("     ", x["item_id"], x.get("source"), catalogue[x["item_id"]]["title"][:40])
    return {"items": [x["item_id"] for x in answer["items"]], "degraded": answer.get("degraded"),
            "latency_ms": answer.get("latency_ms")}


def _refresh(url, app, data_dir, release_dir, refresh, events, last) -> dict:
    """Adds a product, runs the catalogue refresh, waits for the running sidecar to
    switch, and asks for a session about the product's older edition: the new product,
    never interacted with, is retrieved from its text and tags alone."""
    from stars import release as releases
    like = str(events["item_id"].iloc[-1])
    product = add_product(data_dir, like)
    changed = time.time()
    print(f"== catalogue: added {product['item_id']} \"{product['title'][:50]}\"; "
          "refreshing the catalogue (no retraining)")
    refresh()
    release = releases.current(release_dir)
    switched = _wait_for_release(app, release.release_id)
    served_after = time.time() - changed
    print(f"== release {release.release_id} (model version {release.model_version}, "
          f"{release.manifest['catalogue']['items']} items) served {served_after:.1f} s after "
          f"the catalogue changed (the sidecar switched {switched:.1f} s after publication)")
    # a session about the older edition: where do the two editions rank among the top 100?
    body = {"events": [{"item_id": like, "event_type": "view", "timestamp": last - 60}],
            "k": 100, "mode": "next", "context": {"timestamp": last}}
    answer = _post(url, body)
    ids = [x["item_id"] for x in answer["items"]]
    rank = ids.index(product["item_id"]) + 1 if product["item_id"] in ids else None
    older = ids.index(like) + 1 if like in ids else None
    print(f"== a session about {like}, after the refresh (next-item, top 100, degraded="
          f"{answer.get('degraded')}): the new product {product['item_id']} is "
          + (f"at rank {rank}" if rank else "not in the top 100")
          + f" (no interactions: its text and tags alone; the older edition, with its "
          f"history, at rank {older})")
    shown = {"items": ids, "degraded": answer.get("degraded")}
    return {"release": release.release_id, "new_item": product["item_id"], "rank": rank,
            "older_edition_rank": older, "served_after_s": round(served_after, 1), **shown}
