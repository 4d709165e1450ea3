"""End to end: a release switch under load.  The pipeline publishes release 1 (model,
user embeddings, catalogue); the model server (two versions kept loaded) and the sidecar
(following the release directory) serve it under a small bounded load; the catalogue
changes (two products added, a title changed, a product removed) and the catalogue
refresh publishes release 2 without retraining.  Across the switch every answer is a
200 with k items, none is degraded, none breaks its in-stock filter; after the switch
the removed product never appears and a session about a new product is answered with
the other new one (within the index's top K: the tiny model is trained for 2 epochs)."""
import json
import os
import threading
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from cli import main as cli
from stars import release as releases
from tests.fixtures import copy_of_run

pytestmark = pytest.mark.e2e


def _post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


class Load:
    """Closed-loop load on two threads: known users and anonymous sessions with a region
    filter; every answer is kept with the time its request was sent."""

    def __init__(self, url, users, sessions, last):
        self.url, self.users, self.sessions, self.last = url, users, sessions, last
        self.answers, self.stop = [], threading.Event()

    def _requests(self, n):
        if n % 2:
            return {"user_id": self.users[n % len(self.users)], "k": 10, "mode": "rr",
                    "filters": {"in_stock": True}, "context": {"timestamp": self.last}}
        items = self.sessions[n % len(self.sessions)]
        return {"events": [{"item_id": i, "event_type": "view", "timestamp": self.last - 60}
                           for i in items], "k": 10, "mode": "next",
                "filters": {"in_stock": True}, "context": {"timestamp": self.last}}

    def _loop(self, offset):
        n = offset
        while not self.stop.is_set():
            sent = time.monotonic()
            status, body = _post(self.url, self._requests(n))
            self.answers.append((sent, status, body))
            n += 2
            time.sleep(0.02)

    def start(self):
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True)
                        for i in range(2)]
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def _change_catalogue(data_dir, remove, retitle, like):
    """Two new products (new editions of ``like``), ``retitle``'s title changed,
    ``remove`` removed; returns the new ids."""
    path = os.path.join(data_dir, "items.csv")
    items = pd.read_csv(path, dtype=str, keep_default_na=False)
    new = items[items["item_id"] == like].copy()
    new = pd.concat([new, new], ignore_index=True)
    new["item_id"] = [f"{like}-new1", f"{like}-new2"]
    new["title"] = [f"{t} (new edition {n})" for n, t in enumerate(new["title"], 1)]
    items.loc[items["item_id"] == retitle, "title"] = "Completely different title"
    items = pd.concat([items[items["item_id"] != remove], new], ignore_index=True)
    items.to_csv(path, index=False)
    return list(new["item_id"])


def test_a_catalogue_refresh_switches_releases_under_load(pushed_model, tmp_path):
    import argparse

    from serving.model_server.server import serve
    from serving.sidecar.cli import add_serve_sidecar_parser, build_app
    from serving.sidecar.server import make_server
    from stars.data import contract
    base_config, _ = pushed_model
    # a copy of the whole pipeline (data, root, release 1), so the shared fixture is unchanged
    config = copy_of_run(base_config, tmp_path, copy_data=True)
    root, data = config.pipeline_root, config.data_dir
    first = releases.current(config.releases)
    assert first is not None and first.manifest["source"] == "pipeline"
    assert first.manifest["user_embeddings"]["users"] > 0
    quality = first.manifest["index_quality"]
    assert quality["query_source"] == "user_embeddings" and quality["threshold"] == 0.95
    assert quality["scann_recall_at_k"] >= 0.95
    events = contract.read_whole_table(os.path.join(data, "interactions.csv"),
                                       contract.INTERACTIONS).sort_values("timestamp")
    last = int(events["timestamp"].max()) + 3600
    users = list(events["user_id"].drop_duplicates()[:20])
    sessions = [list(g["item_id"].tail(3)) for _, g in events.groupby("user_id")][:20]

    server = serve(os.path.join(config.serving_base, config.model_name), config.model_name,
                   rest_port=0, grpc_port=0, host="127.0.0.1", num_latest=2, poll_seconds=0.2)
    parser = argparse.ArgumentParser()
    add_serve_sidecar_parser(parser.add_subparsers())
    app = build_app(parser.parse_args([
        "sidecar", "--release-dir", config.releases, "--user-store", config.store,
        "--model-url", f"grpc://127.0.0.1:{server.grpc_port}", "--model-timeout-ms", "3000",
        "--budget-ms", "8000", "--release-poll-ms", "100"]))
    sidecar = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=sidecar.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{sidecar.server_address[1]}/v1/recommendations"
    load = None
    try:
        deadline = time.monotonic() + 60
        while app.popularity_source.status()["model_version"] != first.model_version \
                or app.popularity_source.error:
            assert time.monotonic() < deadline, app.popularity_source.status()
            time.sleep(0.1)
        # the product to remove: one the sessions are answered with today
        status, answer = _post(url, Load(url, users, sessions, last)._requests(0))
        assert status == 200 and answer["items"]
        remove = answer["items"][0]["item_id"]
        like = sessions[0][-1]
        retitle = next(i for i in (x["item_id"] for x in answer["items"][1:]) if i != like)
        load = Load(url, users, sessions, last).start()
        time.sleep(1.0)
        added = _change_catalogue(data, remove, retitle, like)
        refresh_started = time.monotonic()
        assert cli.main(["catalog", "refresh", "--data-dir", data, "--root", root,
                         "--encoder", config.encoder, "--top-k", str(config.top_k),
                         "--max-history", str(config.max_history)]) == 0
        refreshed = time.monotonic()
        second = releases.current(config.releases)
        assert second.release_id != first.release_id
        assert second.manifest["source"] == "catalog-refresh"
        assert second.manifest["previous"] == first.release_id
        assert int(second.model_version) > int(first.model_version)
        assert second.manifest["model"]["trained_model"] == first.trained_model
        assert second.manifest["catalogue"]["items"] == first.manifest["catalogue"]["items"] + 1
        deadline = time.monotonic() + 60
        while app.popularity_source.status()["release"] != second.release_id:
            assert time.monotonic() < deadline, app.popularity_source.status()
            time.sleep(0.05)
        switched = time.monotonic()
        time.sleep(1.5)
        # a session about one new product is answered with the other (same text and tags,
        # no interactions: the item tower alone places it)
        status, about_new = _post(url, {
            "events": [{"item_id": added[0], "event_type": "view", "timestamp": last - 60}],
            "k": 50, "mode": "general", "filters": {"exclude_ids": [added[0]]},
            "context": {"timestamp": last}})
    finally:
        if load is not None:
            load.finish()
        app.popularity_source.stop()
        sidecar.shutdown()
        sidecar.server_close()
        server.stop()
    assert len(load.answers) > 20
    assert [s for _, s, _ in load.answers if s != 200] == []
    degraded = [(round(sent - refresh_started, 2), b.get("degraded_reasons"),
                 b.get("model_version")) for sent, _, b in load.answers if b.get("degraded")]
    assert degraded == [], (round(refreshed - refresh_started, 2),
                            round(switched - refresh_started, 2))
    after = [b for sent, _, b in load.answers if sent > switched]
    assert after, "no answer after the switch"
    assert all(remove not in [x["item_id"] for x in b["items"]] for b in after)
    stock = {i: s for i, s in pd.read_csv(os.path.join(base_config.data_dir, "items.csv"),
                                         dtype=str, keep_default_na=False)[
        ["item_id", "stock"]].itertuples(index=False)}
    for _, _, body in load.answers:  # k items, and the in-stock rule held throughout
        assert len(body["items"]) == 10
        for x in body["items"]:
            in_stock = stock.get(x["item_id"].split("-new")[0], "")
            assert in_stock == "" or float(in_stock) > 0, x
    assert status == 200 and not about_new["degraded"]
    answered = [x["item_id"] for x in about_new["items"]]
    assert added[1] in answered, (len(answered), [x["source"] for x in about_new["items"]])
    # the refresh saw the change of title (re-embedded) and served the new products
    report = json.load(open(os.path.join(root, "CatalogRefresher", "serving_model",
                                         sorted(os.listdir(os.path.join(
                                             root, "CatalogRefresher", "serving_model")))[-1],
                                         "index_report.json")))
    assert retitle in report["changes"]["changed"]
    assert sorted(report["changes"]["new"]) == sorted(added)
    assert report["changes"]["removed"] == [remove]
    index_ids = set(pd.read_csv(os.path.join(second.catalog_dir, "items.csv"),
                                dtype=str)["item_id"])
    assert set(added) <= index_ids and remove not in index_ids
