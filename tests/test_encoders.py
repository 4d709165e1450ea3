"""Item text, content hash and the pluggable item encoders."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from stars.enrichment.encoders import (
    HashingEncoder,
    HttpEmbeddingEncoder,
    PrecomputedEncoder,
    make_encoder,
)
from stars.enrichment.http_client import EndpointError, JsonEndpoint
from stars.enrichment.item_text import content_hash, item_text
from stars.enrichment.minilm import MiniLMEncoder
from tests.openai_test_double import OpenAITestDouble

ITEM = {"item_id": "p1", "title": "Organic Lip Balm", "brand": "Burt&#39;s Bees",
        "category_path": "Beauty > Lips", "description": "  Soothing\n balm. ",
        "price": 3.5, "tags": ["vegan"], "embedding": None}


# --- item text and cache key ------------------------------------------------

def test_item_text_orders_fields_skips_empty_and_unescapes():
    assert item_text(ITEM) == ("Organic Lip Balm\nBrand: Burt's Bees\n"
                               "Category: Beauty > Lips\nSoothing balm.")
    assert item_text({"title": "Mug", "brand": float("nan"), "description": ""}) == "Mug"


def test_content_hash_tracks_every_enrichment_input_only():
    base = content_hash(ITEM, "enc-a")
    assert base == content_hash(dict(ITEM), "enc-a")
    assert base == content_hash({**ITEM, "price": 9.0, "stock": 1}, "enc-a")
    for changed in ({**ITEM, "title": "Organic Lip Balm 2"}, {**ITEM, "tags": ["vegan", "x"]},
                    {**ITEM, "embedding": [0.1, 0.2]}):
        assert content_hash(changed, "enc-a") != base
    assert content_hash(ITEM, "enc-b") != base


# --- MiniLM (the real model; ~10-20 s) --------------------------------------

@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder(batch_size=8)


def test_minilm_reproduces_sentence_transformers(minilm):
    v = minilm.encode_texts(["A man is eating food.", "A man is eating a piece of bread.",
                             "The weather is lovely today.", "It's so sunny outside!",
                             "He drove to the stadium."])
    assert v[0] @ v[1] == pytest.approx(0.755, abs=0.01)
    # The sentence-transformers README's similarity matrix for this model.
    sims = v[2:] @ v[2:].T
    assert sims[0, 1] == pytest.approx(0.6660, abs=0.01)
    assert sims[0, 2] == pytest.approx(0.1046, abs=0.01)
    assert sims[1, 2] == pytest.approx(0.1411, abs=0.01)
    assert minilm.dim == 384
    assert minilm.name.startswith("minilm:") and "d384" in minilm.name


def test_minilm_ranks_paraphrase_above_unrelated_unit_norm_deterministic(minilm):
    items = [{"item_id": i, "title": t} for i, t in enumerate([
        "Organic vegan lip balm, 2 pack", "Vegan organic lip balm twin pack",
        "Wireless gaming mouse"])]
    v = minilm.encode(items)
    assert v.dtype == np.float32 and v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    np.testing.assert_array_equal(minilm.encode(items), v)


def test_minilm_padding_does_not_change_a_vector(minilm):
    short = "Organic vegan lip balm, 2 pack"
    long = " ".join(["Long product description with many many words."] * 60)  # > 256 tokens
    alone = minilm.encode_texts([short])
    mixed = minilm.encode_texts([long, short, "Mug"] + [short + " x"] * 9)
    np.testing.assert_allclose(mixed[1], alone[0], atol=1e-5)
    assert minilm.encode_texts([]).shape == (0, 384)


def test_minilm_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        make_encoder(f"minilm:{tmp_path}")


# --- hashing ----------------------------------------------------------------

def test_hashing_encoder_is_stable_across_processes():
    texts = ["Organic vegan lip balm", "Wireless gaming mouse"]
    here = HashingEncoder(64).encode_texts(texts)
    code = ("import json, stars; from stars.enrichment.encoders import HashingEncoder; "
            f"print(json.dumps(HashingEncoder(64).encode_texts({texts!r}).tolist()))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    np.testing.assert_array_equal(np.asarray(json.loads(out), dtype=np.float32), here)


def test_hashing_encoder_similar_texts_closer_unit_norm():
    enc = make_encoder("hashing:128")
    assert enc.dim == 128 and enc.name == "hashing:v1:d128"
    v = enc.encode([{"title": "Organic vegan lip balm 2 pack"},
                    {"title": "Organic vegan lip balm twin pack"},
                    {"title": "Wireless gaming mouse"}, {"title": ""}])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


# --- precomputed ------------------------------------------------------------

def test_precomputed_encoder_normalises_and_checks():
    enc = make_encoder("precomputed")
    v = enc.encode([{"item_id": "a", "embedding": [3.0, 4.0]},
                    {"item_id": "b", "embedding": np.array([0.0, 2.0])}])
    np.testing.assert_allclose(v, [[0.6, 0.8], [0.0, 1.0]], atol=1e-6)
    assert enc.dim == 2 and enc.name == "precomputed:v1"
    with pytest.raises(ValueError, match="item 'c' has no 'embedding'"):
        enc.encode([{"item_id": "c", "embedding": None}])
    with pytest.raises(ValueError, match="item 'd' has an embedding of dimension 3, expected 2"):
        enc.encode([{"item_id": "d", "embedding": [1.0, 2.0, 3.0]}])
    with pytest.raises(ValueError, match="item 'e' has a zero"):
        enc.encode([{"item_id": "e", "embedding": [0.0, 0.0]}])
    with pytest.raises(ValueError, match="item 'f' has an embedding of dimension 3, expected 4"):
        make_encoder("precomputed:4").encode([{"item_id": "f", "embedding": "1|2|3"}])
    with pytest.raises(ValueError, match="dimension unknown"):
        _ = PrecomputedEncoder().dim


# --- HTTP embeddings endpoint (against a local test double) -----------------

@pytest.fixture
def api():
    with OpenAITestDouble() as double:
        yield double


def _http(url, **kw):
    """An HTTP encoder whose retry sleeps are recorded instead of slept."""
    sleeps = []
    endpoint = JsonEndpoint(url,
                            max_retries=kw.pop("max_retries", 2), backoff_s=0.5,
                            sleep=sleeps.append, timeout_s=kw.pop("timeout_s", 5.0))
    return HttpEmbeddingEncoder("unused", model="emb-1", endpoint=endpoint, **kw), sleeps


def test_http_encoder_happy_path_batches_and_normalises(api):
    enc, _ = _http(api.url, batch_size=2)
    items = [{"item_id": i, "title": "t" * (i + 1)} for i in range(5)]
    v = enc.encode(items)
    assert api.paths() == ["/v1/embeddings"] * 3
    assert [len(body["input"]) for _, body, _ in api.requests] == [2, 2, 1]
    assert api.requests[0][1]["model"] == "emb-1"
    expected = np.array([[1.0, i + 1, 0.5] for i in range(5)])
    np.testing.assert_allclose(v, expected / np.linalg.norm(expected, axis=1)[:, None],
                               rtol=1e-6)
    assert enc.dim == 3 and enc.name == "http:emb-1:d3"


def test_http_encoder_probes_dimension_for_its_name(api):
    enc, _ = _http(api.url)
    assert enc.name == "http:emb-1:d3" and len(api.requests) == 1


def test_http_encoder_retries_after_503(api):
    api.failures = [503, 429]
    enc, sleeps = _http(api.url)
    assert enc.encode([{"item_id": "a", "title": "x"}]).shape == (1, 3)
    assert len(api.requests) == 3 and sleeps == [0.5, 1.0]


def test_http_encoder_gives_up_naming_the_endpoint(api):
    api.failures = [500, 502, 503]
    enc, sleeps = _http(api.url)
    with pytest.raises(EndpointError, match=f"{api.url}/embeddings.*after 3 attempts.*503"):
        enc.encode([{"title": "x"}])
    assert len(sleeps) == 2


def test_http_encoder_does_not_retry_client_errors(api):
    api.failures = [400]
    enc, sleeps = _http(api.url)
    with pytest.raises(EndpointError, match="HTTP 400"):
        enc.encode([{"title": "x"}])
    assert len(api.requests) == 1 and not sleeps


def test_http_encoder_endpoint_down_is_a_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    enc, sleeps = _http(url)
    with pytest.raises(EndpointError, match=f"{url}/embeddings: endpoint unavailable"):
        enc.encode([{"title": "x"}])
    assert len(sleeps) == 2


def test_http_encoder_timeout_is_retried(api):
    api.delay_s = 0.3
    enc, sleeps = _http(api.url, timeout_s=0.05, max_retries=1)
    with pytest.raises(EndpointError, match="Timeout"):
        enc.encode([{"title": "x"}])
    assert len(sleeps) == 1


def test_http_encoder_wrong_dimension_is_a_clear_error(api):
    enc, _ = _http(api.url, dim=384)
    with pytest.raises(ValueError, match=f"{api.url}/embeddings: embeddings of dimension "
                                         "3, expected 384"):
        enc.encode([{"title": "x"}])
    api.embed = lambda texts: [[1.0] * (2 + i) for i, _ in enumerate(texts)]
    with pytest.raises(EndpointError, match="mixed dimensions"):
        _http(api.url)[0].encode([{"title": "x"}, {"title": "y"}])


def test_http_encoder_sends_bearer_key_from_env(api, monkeypatch):
    enc = make_encoder(f"http:{api.url}?model=m&api_key_env=STARS_TEST_KEY&retries=0")
    with pytest.raises(EndpointError, match="STARS_TEST_KEY"):
        enc.encode([{"title": "x"}])
    monkeypatch.setenv("STARS_TEST_KEY", "sekret")
    enc.encode([{"title": "x"}])
    assert api.requests[-1][2]["Authorization"] == "Bearer sekret"


# --- specs ------------------------------------------------------------------

def test_make_encoder_specs():
    enc = make_encoder("http:http://h:8000/v1/?model=text-embedding-3-small&batch_size=16"
                       "&timeout=5&retries=1&dim=1536")
    assert isinstance(enc, HttpEmbeddingEncoder) and enc.endpoint.base_url == "http://h:8000/v1"
    assert (enc.model, enc.batch_size, enc.dim) == ("text-embedding-3-small", 16, 1536)
    assert (enc.endpoint.timeout_s, enc.endpoint.max_retries) == (5.0, 1)
    assert isinstance(make_encoder("hashing"), HashingEncoder)
    with pytest.raises(ValueError, match="unknown encoder spec 'bert'.*minilm.*precomputed"):
        make_encoder("bert")
    with pytest.raises(ValueError, match="unknown option 'modle'"):
        make_encoder("http:http://h/v1?modle=x")
    with pytest.raises(ValueError, match="hashing:DIM"):
        make_encoder("hashing:big")
