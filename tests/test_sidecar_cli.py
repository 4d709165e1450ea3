"""`serve sidecar` wiring: the parser builds a working app (embedded or Elasticsearch
backend, batch user store), and the command serves HTTP and stops on SIGTERM."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from serving.sidecar.cli import add_serve_sidecar_parser, build_app
from serving.sidecar.elasticsearch_backend import ElasticsearchFilterBackend
from serving.sidecar.filters import EmbeddedFilterBackend
from serving.sidecar.validation import RequestError
from tests.elasticsearch_test_double import ElasticsearchTestDouble
from tests.fixtures import free_port, write_small_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("sidecar_cli"))


def _parse(*argv):
    parser = argparse.ArgumentParser(prog="stars serve")
    add_serve_sidecar_parser(parser.add_subparsers(dest="serve_command"))
    return parser.parse_args(["sidecar", *argv])


def _post(app, body):
    try:
        status, _, payload = app.recommendations(json.dumps(body).encode(), time.perf_counter())
    except RequestError as e:
        return e.status, e.to_json()
    return status, json.loads(payload)


def test_build_app_embedded_with_unreachable_model(data_dir, tmp_path):
    counts = tmp_path / "item_popularity"
    counts.write_text("9 i7\n8 i2\n")
    args = _parse("--data-dir", str(data_dir), "--model-url",
                  f"http://127.0.0.1:{free_port()}", "--popularity-counts", str(counts),
                  "--model-timeout-ms", "100", "--max-k", "50", "--signal-names", "a,b")
    app = build_app(args)
    assert isinstance(app.recommender.filter_backend, EmbeddedFilterBackend)
    assert app.config.max_k == 50 and app.config.signal_names == ("a", "b")
    status, body = _post(app, {"events": [{"item_id": "i1"}], "k": 3,
                               "filters": {"region": "us"}, "context": {"signals": {"a": 1}}})
    assert status == 200 and body["degraded"] and body["degraded_reasons"] == ["model_unavailable"]
    assert [i["item_id"] for i in body["items"]] == ["i7", "i2", "i1"]
    assert _post(app, {"user_id": "u", "k": 51})[0] == 400


def test_build_app_elasticsearch_and_batch_store(data_dir, tmp_path):
    with ElasticsearchTestDouble() as es:
        args = _parse("--data-dir", str(data_dir), "--model-url", "http://127.0.0.1:1",
                      "--filter-backend", "elasticsearch", "--es-hosts", es.url,
                      "--es-alias", "cat", "--filter-failure", "closed",
                      "--user-store", f"embedded:{tmp_path / 'store'}")
        app = build_app(args)
        backend = app.recommender.filter_backend
        assert isinstance(backend, ElasticsearchFilterBackend) and backend.alias == "cat"
        assert app.recommender.config.filter_failure == "closed"
        assert app.recommender.user_store.get("u1") is None  # an empty batch store
    with pytest.raises(ValueError, match="needs --es-hosts"):
        build_app(_parse("--data-dir", str(data_dir), "--filter-backend", "elasticsearch"))
    with pytest.raises(ValueError, match="module:callable"):
        build_app(_parse("--data-dir", str(data_dir), "--user-store", "x",
                         "--user-store-factory", "nonsense"))


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.e2e
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_sidecar_command_serves_drains_and_stops_on_sigterm(data_dir, workers):
    """The command as a user runs it: it serves; on SIGTERM /readyz turns 503 (draining)
    while requests are still answered, then it stops cleanly.  With two workers the
    metrics are summed over both processes."""
    port = free_port()
    code = ("import sys, argparse; from serving.sidecar.cli import add_serve_sidecar_parser;"
            "p = argparse.ArgumentParser(); add_serve_sidecar_parser(p.add_subparsers());"
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "sidecar", "--data-dir", str(data_dir), "--host",
         "127.0.0.1", "--port", str(port), "--model-url", f"http://127.0.0.1:{free_port()}",
         "--model-timeout-ms", "50", "--workers", str(workers), "--drain-ms", "4000"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own process group: a failed test stops the workers too
    body = json.dumps({"events": [{"item_id": "i1"}], "k": 2}).encode()

    def recommend():
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/recommendations", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    try:
        deadline = time.time() + 90
        while True:
            try:
                status, health = _get(port, "/healthz")
                assert status == 200 and json.loads(health)["status"] == "ok"
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.time() < deadline
                time.sleep(0.2)
        status, ready = _get(port, "/readyz")
        assert status == 503 and json.loads(ready)["checks"]["draining"] is False
        for _ in range(6):
            status, answer = recommend()
            assert status == 200 and answer["degraded_reasons"] == ["model_unavailable"]
        if workers == 2:  # spread over the workers, summed in every worker's /metrics
            metrics = _get(port, "/metrics")[1].decode()
            assert 'stars_sidecar_requests_total{endpoint="recommendations",status="200"} 6.0' \
                in metrics
        proc.send_signal(signal.SIGTERM)  # uvicorn's supervisor relays it within 0.5 s
        signalled = time.monotonic()
        while not json.loads(_get(port, "/readyz")[1])["checks"]["draining"]:
            assert time.monotonic() - signalled < 3.5, "not draining within the drain window"
            time.sleep(0.05)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/recommendations", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:  # still served while draining,
            assert r.status == 200 and r.headers["Connection"] == "close"  # not kept alive
        assert proc.wait(timeout=30) == 0
        assert json.loads(proc.stdout.read())["catalogue_items"] == 9
    finally:
        try:  # whatever is left of the group (workers outlive a killed supervisor)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_hung_redis_costs_one_timeout_then_the_store_rests(data_dir, tmp_path):
    """A user store that hangs (SIGSTOP: connections open, no answers) costs a request the
    store's socket timeout once; then the breaker rests it, and known users are encoded
    from their events (marked) at once.  When Redis answers again, the stored path is
    back after the cool-down."""
    from serving.batch.redis_store import RedisStore
    from tests.redis_server import start_or_skip
    redis_server = start_or_skip(tmp_path)
    try:
        store = RedisStore.from_url(redis_server.url)
        writer = store.begin_refresh(model_version="")
        writer.put("u1", [1.0] * 4, [0.5] * 4)
        writer.commit()
        args = _parse("--data-dir", str(data_dir), "--model-url",
                      f"http://127.0.0.1:{free_port()}", "--model-timeout-ms", "20",
                      "--user-store", redis_server.url, "--user-store-timeout-ms", "50",
                      "--backend-cooldown-ms", "300")
        app = build_app(args)
        assert "socket_timeout=0.05" in app.recommender.user_store.url
        request = {"user_id": "u1", "events": [{"item_id": "i1"}], "k": 2}
        status, body = _post(app, request)
        assert status == 200 and "user_store_unavailable" not in body["degraded_reasons"]
        assert not body["cold_start"]  # found in the store (the model is down: popularity)
        redis_server.pause()
        timings = []
        for _ in range(4):
            started = time.perf_counter()
            status, body = _post(app, request)
            timings.append(time.perf_counter() - started)
            assert status == 200 and "user_store_unavailable" in body["degraded_reasons"]
        assert timings[0] < 0.5 and max(timings[1:]) < 0.04  # one timeout, then resting
        assert json.loads(app.readyz()[2])["checks"]["user_store"]["breaker"] == "open"
        redis_server.resume()
        time.sleep(0.35)
        status, body = _post(app, request)
        assert "user_store_unavailable" not in body["degraded_reasons"] and not body["cold_start"]
    finally:
        redis_server.stop()


def test_socket_timeouts_are_added_to_redis_urls_only():
    from serving.sidecar.cli import with_socket_timeouts
    assert with_socket_timeouts("redis://h:6379/0", 50) == \
        "redis://h:6379/0?socket_timeout=0.05&socket_connect_timeout=0.05"
    assert with_socket_timeouts("redis://h/0?socket_timeout=2", 50) == \
        "redis://h/0?socket_timeout=2&socket_connect_timeout=0.05"
    assert with_socket_timeouts("embedded:/tmp/x", 50) == "embedded:/tmp/x"
