"""The sidecar's HTTP API over a real socket (model: ModelClientTestDouble): answers,
4xx for every kind of bad input (never a 500), limits, health/readiness, Prometheus
metrics, and the OpenAPI spec checked against examples and against the parser."""

import http.client
import json
import os
import random
import socket
import threading
import time

import jsonschema
import pytest
import yaml

from serving.sidecar.api import OPENAPI_PATH, ROUTES, ApiConfig, SidecarApp, parse_request
from serving.sidecar.model_client import ModelUnavailable
from serving.sidecar.popularity import Popularity
from serving.sidecar.recommender import Recommender, RecommenderConfig
from serving.sidecar.server import HttpConfig, make_server
from serving.sidecar.user_store import InMemoryUserEmbeddingStore
from serving.sidecar.validation import RequestError
from tests.test_sidecar_doubles import (
    ModelClientTestDouble,
    RecordingFilterBackend,
    T,
    catalog_backend,
)

SPEC = yaml.safe_load(open(OPENAPI_PATH))


def schema(name):
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]})


class Sidecar:
    def __init__(self, api_config=ApiConfig(), http=HttpConfig(), **config):
        catalog = catalog_backend()
        self.model = ModelClientTestDouble()
        self.backend = RecordingFilterBackend(catalog)
        store = InMemoryUserEmbeddingStore()
        store.put("known", [1, 0, 0, 0], [0, 1, 0, 0], "7")
        recommender = Recommender(self.model, self.backend,
                                  Popularity(catalog, {"it7": 5.0}), store,
                                  RecommenderConfig(**config))
        self.app = SidecarApp(recommender, api_config, clock=lambda: T)
        self.server = make_server(self.app, "127.0.0.1", 0, http)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def call(self, method, path, body=None, headers=None, raw=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = raw if raw is not None else (None if body is None else
                                                json.dumps(body).encode())
            hdrs = {"Content-Type": "application/json"} if data is not None else {}
            hdrs.update(headers or {})
            conn.request(method, path, body=data, headers=hdrs)
            response = conn.getresponse()
            payload = response.read()
            ctype = response.getheader("Content-Type", "")
            parsed = json.loads(payload) if ctype.startswith("application/json") else payload
            return response.status, parsed, response
        finally:
            conn.close()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def sidecar():
    s = Sidecar()
    yield s
    s.stop()


GOOD = {"user_id": "known", "k": 5, "mode": "rr",
        "filters": {"region": "us", "in_stock": True, "price": {"min": 1, "max": 150},
                    "exclude_ids": ["it1"]},
        "context": {"timestamp": T, "signals": {"promotion": True, "weather": 0.5}}}


def test_recommendations_answer(sidecar):
    status, body, response = sidecar.call("POST", "/v1/recommendations", GOOD)
    assert status == 200, body
    schema("RecommendationResponse").validate(body)
    assert len(body["items"]) == 5 and body["user_embedding"] == "stored"
    assert body["model_version"] == "7" and body["filter_status"] == "ok"
    assert "it1" not in [i["item_id"] for i in body["items"]]
    assert {"parse", "user_store", "context_offset", "model", "filter", "total"} <= set(
        body["latency_ms"])
    signals = sidecar.model.calls[0][1]
    assert signals["timestamp"] == T
    status, body, _ = sidecar.call("POST", "/v1/recommendations",
                                   {"events": [{"item_id": "it3", "event_type": "cart",
                                                "timestamp": "2023-11-14T22:00:00"},
                                               {"item_id": "it4"}], "k": 3})
    assert status == 200 and body["user_embedding"] == "encoded" and body["cold_start"]
    events = sidecar.model.calls[-1][1]["events"]
    assert [(e.item_id, e.event_type, e.timestamp) for e in events] == [
        ("it3", "add_to_cart", 1699999200), ("it4", "view", T)]  # sorted, defaults filled
    status, body, _ = sidecar.call("POST", "/v1/recommendations?x=1", {"events": []})
    assert status == 200 and body["items"][0] == {"item_id": "it7", "score": 5.0,
                                                  "source": "popularity"}


def test_keep_alive_connection_serves_several_requests(sidecar):
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=10)
    for _ in range(3):
        conn.request("POST", "/v1/recommendations", body=json.dumps(GOOD),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["items"]
    conn.request("POST", "/v1/recommendations", body=b"{", headers={})
    response = conn.getresponse()
    assert response.status == 400 and response.read()
    conn.close()


BAD = [
    (b"{", 400, "malformed_json", None, "not valid JSON: Expecting property name"),
    (b'{"user_id": "u", "k": NaN}', 400, "malformed_json", None, "NaN is not valid JSON"),
    (b"\xff\xfe", 400, "malformed_json", None, "not valid UTF-8"),
    (b"[" * 5000 + b"]" * 5000, 400, "malformed_json", None, "not valid JSON"),
    (b"[1, 2]", 400, "invalid_request", None, "must be a JSON object, got array"),
    ({"user_id": "u", "colour": "red"}, 400, "invalid_request", "colour", "unknown field"),
    ({"k": 5}, 400, "invalid_request", "user_id", "give 'user_id' and/or 'events'"),
    ({"user_id": "u", "k": 0}, 400, "invalid_request", "k", "between 1 and 200, got 0"),
    ({"user_id": "u", "k": 201}, 400, "invalid_request", "k", "between 1 and 200"),
    ({"user_id": "u", "k": "5"}, 400, "invalid_request", "k", "must be an integer"),
    ({"user_id": "u", "k": 2.5}, 400, "invalid_request", "k", "must be an integer"),
    ({"user_id": "u", "k": True}, 400, "invalid_request", "k", "must be an integer"),
    ({"user_id": 7}, 400, "invalid_request", "user_id", "must be a string"),
    ({"user_id": "u", "mode": "best"}, 400, "invalid_request", "mode", "next, general, rr"),
    ({"events": {"item_id": "x"}}, 400, "invalid_request", "events", "must be an array"),
    ({"events": [{"item_id": "x"}] * 201}, 400, "invalid_request", "events", "at most 200"),
    ({"events": [{"item": "x"}]}, 400, "invalid_request", "events[0].item", "unknown field"),
    ({"events": [{}]}, 400, "invalid_request", "events[0].item_id", "is required"),
    ({"events": [{"item_id": "x", "event_type": "like"}]}, 400, "invalid_request",
     "events[0].event_type", "view, add_to_cart, purchase"),
    ({"events": [{"item_id": "x", "timestamp": "yesterday"}]}, 400, "invalid_request",
     "events[0].timestamp", "ISO-8601"),
    ({"events": [{"item_id": "x", "timestamp": -5}]}, 400, "invalid_request",
     "events[0].timestamp", "between"),
    ({"user_id": "u", "context": {"signals": {"rain": 1}}}, 400, "invalid_request",
     "context.signals.rain", "unknown field"),
    ({"user_id": "u", "context": {"signals": {"weather": "hot"}}}, 400, "invalid_request",
     "context.signals.weather", "must be a number"),
    ({"user_id": "u", "context": []}, 400, "invalid_request", "context", "must be an object"),
    ({"user_id": "u", "context": {"time": 5}}, 400, "invalid_request", "context.time",
     "unknown field"),
    ({"user_id": "u", "filters": {"colour": "red"}}, 400, "invalid_request", "filters.colour",
     "unknown field"),
    ({"user_id": "u", "filters": {"price": {"min": 9, "max": 1}}}, 400, "invalid_request",
     "filters.price", "greater than"),
    ({"user_id": "u", "user_features": {"age": [1]}}, 400, "invalid_request",
     "user_features.age", "number or a string"),
    # numbers Python parses but no model input can hold: never a 500 or NaN scores
    (b'{"user_id": "u", "user_features": {"age": ' + b"9" * 400 + b"}}", 400,
     "invalid_request", "user_features.age", "integer of 400 digits"),
    (b'{"user_id": "u", "user_features": {"age": 1e999}}', 400, "invalid_request",
     "user_features.age", "finite number"),
    ({"user_id": "u", "user_features": {"age": 2e9}}, 400, "invalid_request",
     "user_features.age", "between -1e+09 and 1e+09"),
    (b'{"user_id": "u", "k": 1e999}', 400, "invalid_request", "k", "integer"),
    (b'{"user_id": "u", "context": {"signals": {"event": -1e999}}}', 400, "invalid_request",
     "context.signals.event", "number"),
]


@pytest.mark.parametrize("body, status, code, field, words", BAD)
def test_bad_requests_are_4xx_with_clear_messages(sidecar, body, status, code, field, words):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, answer, _ = sidecar.call("POST", "/v1/recommendations", raw=raw)
    assert got == status, answer
    schema("Error").validate(answer)
    assert answer["error"]["code"] == code and words in answer["error"]["message"]
    assert answer["error"].get("field") == field


def _raw_exchange(port, data: bytes, timeout=5.0, shut_write=False) -> str:
    """Sends raw bytes on a new connection; everything answered until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and not shut_write:
                head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
    return b"".join(chunks).decode(errors="replace")


def test_transport_level_errors(sidecar):
    small = Sidecar(ApiConfig(max_body_bytes=1024))
    try:
        big = json.dumps({"user_id": "u", "filters": {"exclude_ids": ["x" * 100] * 20}})
        status, body, response = small.call("POST", "/v1/recommendations", raw=big.encode())
        assert status == 413 and body["error"]["code"] == "payload_too_large"
        assert "at most 1024" in body["error"]["message"]
        assert response.getheader("Connection") == "close"  # not read: not reusable
        # a chunked body is counted while it streams
        chunk = b"{" + b" " * 700 + b"\n"
        answer = _raw_exchange(small.port, b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/json\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n"
                               + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2
                               + b"1\r\n}\r\n0\r\n\r\n")
        assert answer.startswith("HTTP/1.1 413") and "more than 1024 bytes" in answer
    finally:
        small.stop()
    status, body, _ = sidecar.call("POST", "/v1/recommendations", raw=b'{"user_id": "u"}',
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and "application/json" in body["error"]["message"]
    assert "curl" in body["error"]["message"]
    status, body, response = sidecar.call("GET", "/v1/recommendations")
    assert status == 405 and response.getheader("Allow") == "POST"
    status, body, _ = sidecar.call("GET", "/v2/anything")
    assert status == 404 and body["error"]["code"] == "not_found"
    good = json.dumps(GOOD).encode()
    answer = _raw_exchange(sidecar.port, b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n"
                           + b"%x\r\n" % len(good) + good + b"\r\n0\r\n\r\n")
    assert answer.startswith("HTTP/1.1 200") and '"items"' in answer  # chunked is fine
    answer = _raw_exchange(sidecar.port, b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith("HTTP/1.1 411") and "Content-Length" in answer
    # a client that gives up half-way gets no answer, and the server counts it, no 500
    answer = _raw_exchange(sidecar.port, b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 100\r\n\r\n{\"user_id\": ", shut_write=True)
    assert answer == ""
    assert sidecar.call("GET", "/healthz")[0] == 200
    assert 'status="500"' not in sidecar.call("GET", "/metrics")[1].decode()


def test_slow_clients_are_cut_off():
    """A client that trickles its headers (slowloris) is disconnected after the head
    deadline; one that trickles its body gets 408 after the body deadline.  Neither
    holds the server: a normal request is answered meanwhile."""
    s = Sidecar(ApiConfig(body_timeout_s=0.4), HttpConfig(head_timeout_s=0.4))
    try:
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as head, \
                socket.create_connection(("127.0.0.1", s.port), timeout=5) as body:
            head.sendall(b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\n")
            body.sendall(b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
            assert s.call("POST", "/v1/recommendations", GOOD)[0] == 200
            started = time.monotonic()
            head.sendall(b"X-Slow: 1\r\n")  # a byte now and then does not extend it
            assert head.recv(65536) == b""  # closed, nothing answered
            assert time.monotonic() - started < 1.0
            answer = body.recv(65536).decode()
            assert answer.startswith("HTTP/1.1 408") and "within 0.4 s" in answer
    finally:
        s.stop()


def test_overload_is_shed_with_429_and_retry_after():
    """Beyond ``max_inflight`` recommendations in progress, the next is refused at once."""
    s = Sidecar(ApiConfig(max_inflight=2, threads=2), budget_s=5.0, model_timeout_s=5.0)
    s.model.delay_s = 0.5
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            s.call("POST", "/v1/recommendations", GOOD))) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # both in progress
        started = time.monotonic()
        status, body, response = s.call("POST", "/v1/recommendations", GOOD)
        assert status == 429 and response.getheader("Retry-After") == "1"
        assert body["error"]["code"] == "overloaded" and time.monotonic() - started < 0.2
        for t in threads:
            t.join()
        assert sorted(r[0] for r in results) == [200, 200]
        assert "stars_sidecar_shed_total 1.0" in s.call("GET", "/metrics")[1].decode()
    finally:
        s.stop()


def test_budget_counts_from_arrival():
    """A request that waited for a thread past its budget gets the cheap answer at once
    (popularity, ``budget_exhausted``), not a full flow after its deadline."""
    s = Sidecar(ApiConfig(threads=1), budget_s=0.3)
    store = s.app.recommender.user_store

    class SlowStore:  # holds the only thread past the second request's budget
        def get(self, user_id):
            time.sleep(0.45 if user_id == "slow" else 0.0)
            return store.get(user_id)
    s.app.recommender.user_store = SlowStore()
    try:
        results = []
        first = threading.Thread(target=lambda: results.append(
            s.call("POST", "/v1/recommendations", {**GOOD, "user_id": "slow"})))
        first.start()
        time.sleep(0.05)
        started = time.monotonic()
        status, body, _ = s.call("POST", "/v1/recommendations", GOOD)
        waited = time.monotonic() - started
        first.join()
        assert status == 200 and body["degraded_reasons"] == ["budget_exhausted"]
        assert [i["source"] for i in body["items"]] == ["popularity"] * 5
        assert waited < 0.3 + 0.45 + 0.1
    finally:
        s.stop()


def test_fuzzed_requests_never_give_500(sidecar):
    rng = random.Random(11)
    values = [None, 0, -1, 3, 10 ** 12, 2.5, float("1e308"), "", "x", "us", True, [], [1],
              ["a", 2], {}, {"a": 1}, {"item_id": "it1"}, [{"item_id": 3}]]
    keys = ["user_id", "events", "k", "mode", "filters", "context", "user_features", "junk"]
    sub = {"filters": ["region", "categories", "subclasses", "exclude_ids", "price", "in_stock",
                       "x"],
           "context": ["timestamp", "signals", "x"], "events": ["item_id", "event_type",
                                                                "timestamp", "x"]}
    statuses = set()
    for _ in range(300):
        body = json.loads(json.dumps(GOOD))
        for _ in range(rng.randint(1, 2)):  # mutate a valid request
            key = rng.choice(keys)
            if key in sub and rng.random() < 0.6:
                inner = {f: rng.choice(values) for f in rng.sample(sub[key], 2)}
                body[key] = [inner] if key == "events" else inner
            elif rng.random() < 0.2:
                body.pop(key, None)
            else:
                body[key] = rng.choice(values)
        status, answer, _ = sidecar.call("POST", "/v1/recommendations", body)
        assert status in (200, 400), (body, answer)
        statuses.add(status)
    assert statuses == {200, 400}
    assert 'status="500"' not in sidecar.call("GET", "/metrics")[1].decode()


def test_health_readiness_and_degraded_answers(sidecar):
    assert sidecar.call("GET", "/healthz")[:2] == (200, {"status": "ok", "pid": os.getpid()})
    status, body, _ = sidecar.call("GET", "/readyz")
    assert status == 200 and body["checks"]["model"] == {"ok": True, "version": "7"}
    schema("Readiness").validate(body)
    sidecar.model.fail = ModelUnavailable("UNAVAILABLE: down")
    status, body, _ = sidecar.call("GET", "/readyz")
    assert status == 503 and body["status"] == "not_ready"
    assert "down" in body["checks"]["model"]["error"]
    sidecar.model.model_version = lambda timeout_s=None: None  # no AVAILABLE version
    assert sidecar.call("GET", "/readyz")[0] == 503
    status, body, _ = sidecar.call("POST", "/v1/recommendations", GOOD)
    assert status == 200 and body["degraded"] and body["degraded_reasons"] == ["model_unavailable"]
    assert [i["source"] for i in body["items"]] == ["popularity"] * 5
    strict = Sidecar(ApiConfig(require_filter_ready=True))
    try:
        assert strict.call("GET", "/readyz")[0] == 200
        strict.backend.down = True
        status, body, _ = strict.call("GET", "/readyz")
        assert status == 503 and body["checks"]["filter"]["ok"] is False
        status, body, _ = strict.call("POST", "/v1/recommendations", GOOD)
        assert status == 200 and body["filter_status"] == "snapshot" and not body["degraded"]
    finally:
        strict.stop()


def test_metrics_expose_counters_and_latency_histograms(sidecar):
    sidecar.call("POST", "/v1/recommendations", GOOD)
    sidecar.call("POST", "/v1/recommendations", raw=b"{")
    sidecar.model.fail = ModelUnavailable("down")
    sidecar.call("POST", "/v1/recommendations", GOOD)
    status, text, response = sidecar.call("GET", "/metrics")
    text = text.decode()
    assert status == 200 and response.getheader("Content-Type").startswith("text/plain")
    assert 'stars_sidecar_requests_total{endpoint="recommendations",status="200"} 2.0' in text
    assert 'stars_sidecar_requests_total{endpoint="recommendations",status="400"} 1.0' in text
    assert 'stars_sidecar_request_latency_seconds_bucket{endpoint="recommendations",le="0.025"}' \
        in text
    assert 'stars_sidecar_request_latency_seconds_count{endpoint="recommendations"} 3.0' in text
    for hop in ("model", "filter", "context_offset", "popularity"):
        assert f'stars_sidecar_hop_latency_seconds_count{{hop="{hop}"}}' in text
    assert 'stars_sidecar_degraded_total{reason="model_unavailable"} 1.0' in text
    assert ('stars_sidecar_recommendations_total{degraded="false",filter_status="ok",'
            'user_embedding="stored"} 1.0') in text
    assert "stars_sidecar_fetch_rounds_total 1.0" in text


# ----------------------------------------------------------------- the OpenAPI spec

def test_spec_examples_validate():
    operation = SPEC["paths"]["/v1/recommendations"]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert len(examples) >= 3
    for example in examples.values():
        schema("RecommendationRequest").validate(example["value"])
        parse_request(example["value"], now=T)  # and the server accepts them
    for example in operation["responses"]["200"]["content"]["application/json"][
            "examples"].values():
        schema("RecommendationResponse").validate(example["value"])
    bad = SPEC["components"]["responses"]["BadRequest"]["content"]["application/json"]
    for example in bad["examples"].values():
        schema("Error").validate(example["value"])
    assert {path for path in ROUTES} <= set(SPEC["paths"])
    signals = SPEC["components"]["schemas"]["Context"]["properties"]["signals"]["properties"]
    assert tuple(signals) == ApiConfig().signal_names


SPEC_CASES = [
    ({"user_id": "u"}, True),
    ({"events": []}, True),
    ({"user_id": "u", "k": 200, "mode": "next"}, True),
    ({"user_id": "u", "filters": {"categories": ["A"], "price": {"max": 3}}}, True),
    ({"events": [{"item_id": "a", "timestamp": "2023-11-14T22:00:00"}]}, True),
    ({"user_id": "u", "context": {"signals": {"event": True, "extra": 2}}}, True),
    ({"user_id": "u", "user_features": {"age": 3, "domain": "x", "gone": None}}, True),
    ({}, False),
    ({"k": 3}, False),
    ({"user_id": "u", "x": 1}, False),
    ({"user_id": "u", "k": 0}, False),
    ({"user_id": "u", "k": 201}, False),
    ({"user_id": "u", "k": 1.5}, False),
    ({"user_id": ""}, False),
    ({"user_id": "u", "mode": "all"}, False),
    ({"events": [{"timestamp": 1}]}, False),
    ({"events": [{"item_id": "a", "x": 1}]}, False),
    ({"user_id": "u", "filters": {"price": {"min": -1}}}, False),
    ({"user_id": "u", "filters": {"in_stock": "yes"}}, False),
    ({"user_id": "u", "filters": {"exclude_ids": [""]}}, False),
    ({"user_id": "u", "context": {"signals": {"snow": 1}}}, False),
    ({"user_id": "u", "context": {"timestamp": -1}}, False),
    ({"user_id": "u", "user_features": {"age": True}}, False),
]


@pytest.mark.parametrize("body, valid", SPEC_CASES)
def test_spec_and_parser_agree(body, valid):
    spec_ok = schema("RecommendationRequest").is_valid(body)
    try:
        parse_request(body, now=T)
        parser_ok = True
    except RequestError:
        parser_ok = False
    assert spec_ok == parser_ok == valid


def test_openapi_document_is_served(sidecar):
    status, text, response = sidecar.call("GET", "/openapi.yaml")
    assert status == 200 and yaml.safe_load(text)["openapi"].startswith("3.")
