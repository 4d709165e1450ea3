"""The tag vocabulary V and the pluggable attribute taggers."""
import json
import socket

import pytest

from stars.enrichment.http_client import EndpointError, JsonEndpoint
from stars.enrichment.tag_vocabulary import DEFAULT, Tag, TagVocabulary
from stars.enrichment.taggers import ChatTagger, KeywordTagger, make_tagger, parse_reply
from tests.openai_test_double import OpenAITestDouble

# --- vocabulary -------------------------------------------------------------

@pytest.mark.parametrize("raw,name", [
    ("Gluten Free", "gluten_free"), ("gluten-free", "gluten_free"),
    ("GLUTENFREE", "gluten_free"), ("gluten_free", "gluten_free"), ("GF", "gluten_free"),
    ("Cruelty-Free", "cruelty_free"), ("not tested on animals", "cruelty_free"),
    ("Unscented", "fragrance_free"), ("eco-friendly", "eco_friendly"), ("ECO", "eco_friendly"),
    ("Hand-Made", "handmade"), ("Bluetooth", "wireless"), ("Kids'", "kids"),
    ("Travel Size", "travel_size"), (" vegan ", "vegan"), ("100% Natural", "natural"),
])
def test_normalise_variants(raw, name):
    assert DEFAULT.normalise(raw) == name


@pytest.mark.parametrize("raw", ["sparkly", "", "free", "gluten", "organically"])
def test_normalise_unknown_is_none(raw):
    assert DEFAULT.normalise(raw) is None


def test_vocabulary_round_trips_json_and_text(tmp_path):
    for name in ("v.json", "v.txt"):
        DEFAULT.save(tmp_path / name)
        loaded = TagVocabulary.load(tmp_path / name)
        assert loaded == DEFAULT and loaded.digest == DEFAULT.digest
    assert DEFAULT.index(DEFAULT.names[3]) == 3 and len(DEFAULT) == len(DEFAULT.names)


def test_vocabulary_from_hand_written_text(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("# my tags\nrefurbished | renewed, pre owned | used | second hand\n"
                    "\nsale  # trailing comment\n")
    vocab = TagVocabulary.load(path)
    assert vocab.names == ("refurbished", "sale")
    assert vocab.normalise("Pre-Owned") == "refurbished" and vocab.normalise("USED")
    tagger = KeywordTagger(vocab)
    assert tagger.tags_in_text("renewed phone, used case") == {"refurbished"}
    assert tagger.tags_in_text("On Sale: Refurbished laptop") == {"refurbished", "sale"}


def test_vocabulary_rejects_ambiguous_or_bad_entries(tmp_path):
    with pytest.raises(ValueError, match="'Eco' names both tag 'eco_friendly' and 'x'"):
        TagVocabulary([Tag("eco_friendly", ("eco",)), Tag("x", ("Eco",))])
    with pytest.raises(ValueError, match="lower_snake_case"):
        Tag("Gluten Free")
    (tmp_path / "bad.txt").write_text("ok\nBad Name | x\n")
    with pytest.raises(ValueError, match="line 2"):
        TagVocabulary.load(tmp_path / "bad.txt")


# --- keyword tagger ---------------------------------------------------------

@pytest.mark.parametrize("title,tags", [
    ("Organic Vegan Lip Balm, 2 pack", ["organic", "vegan"]),
    ("Gluten-Free Oat Bars, Family Size", ["gluten_free", "value_pack"]),
    ("Burt's Bees Baby Shampoo, Fragrance-Free, Not Tested on Animals",
     ["baby", "cruelty_free", "fragrance_free"]),
    ("Wireless Bluetooth Headphones for Kids, Waterproof",
     ["kids", "waterproof", "wireless"]),
    ("Eau de Parfum for Women", ["women"]),  # 'men' is not found inside 'women'
    ("Non-Organic cotton tee, not waterproof", []),  # negations cancel
    ("Kidney bean soup; Mengshan tea; Premiumness", []),  # word boundaries
    ("Ecotools brush, GF crackers, natural hair", []),  # aliases are never searched
    ("LUXURY Hand Crafted Soap Gift Set - Travel Size", [
        "gift_set", "handmade", "premium", "travel_size"]),
])
def test_keyword_tagger_titles(title, tags):
    assert KeywordTagger().tag([{"title": title}]) == [tags]


def test_keyword_tagger_reads_all_text_and_merges_merchant_tags():
    tagger = make_tagger("keyword")
    assert isinstance(tagger, KeywordTagger)
    out = tagger.tag([
        {"title": "Lip balm", "description": "Certified USDA organic beeswax.",
         "tags": ["Vegan", "GF", "shiny", "organic"]},
        {"title": "Mug", "tags": "eco|nonsense"},
        {"title": "Cup", "tags": None}])
    assert out == [["gluten_free", "organic", "vegan"], ["eco_friendly"], []]
    assert tagger.stats["unknown_merchant_tags"] == 2 and tagger.stats["items"] == 3
    assert tagger.unknown == {"shiny": 1, "nonsense": 1}


# --- chat tagger (against a local test double) ------------------------------

def _chat(url, **kw):
    """A chat tagger whose retry sleeps are recorded instead of slept."""
    sleeps = []
    endpoint = JsonEndpoint(url, max_retries=2, backoff_s=0.5, sleep=sleeps.append,
                            timeout_s=5.0)
    return ChatTagger("unused", model="llm-1", endpoint=endpoint, **kw), sleeps


def test_chat_tagger_normalises_variants_and_drops_unknown_tags():
    def chat(texts):  # answers as an LLM might: variants, an unknown tag, a code fence
        answer = {k: (["Gluten-Free", "VEGAN", "sparkly", "vegan"] if "Bars" in t else [])
                  for k, t in texts.items()}
        return "```json\n" + json.dumps(answer) + "\n```"

    with OpenAITestDouble(chat=chat) as api:
        tagger, _ = _chat(api.url)
        out = tagger.tag([{"title": "Oat Bars"}, {"title": "Mug", "tags": ["Handmade"]}])
        _, body, _ = api.requests[0]
    assert out == [["gluten_free", "vegan"], ["handmade"]]
    assert tagger.stats["unknown_tags"] == 1 and tagger.unknown == {"sparkly": 1}
    assert tagger.stats["fallback_items"] == 0
    assert body["model"] == "llm-1" and body["temperature"] == 0
    system = body["messages"][0]["content"]
    assert all(f"- {name}" in system for name in DEFAULT.names)


def test_chat_tagger_batches_items_with_ids():
    with OpenAITestDouble(chat=lambda texts: json.dumps(
            {k: ["organic"] if "Organic" in t else ["wireless"] for k, t in texts.items()})
            ) as api:
        tagger, _ = _chat(api.url, batch_size=2)
        titles = ["Organic tea", "Mouse", "Organic soap", "Keyboard", "Organic oil"]
        out = tagger.tag([{"title": t} for t in titles])
        sent = [json.loads(body["messages"][1]["content"]) for _, body, _ in api.requests]
    assert out == [["organic"], ["wireless"], ["organic"], ["wireless"], ["organic"]]
    assert sent == [{"1": "Organic tea", "2": "Mouse"}, {"1": "Organic soap", "2": "Keyboard"},
                    {"1": "Organic oil"}]
    assert tagger.stats["requests"] == 3 and tagger.stats["items"] == 5


def test_chat_tagger_unparseable_reply_falls_back_to_keywords():
    items = [{"title": "Vegan soap"}, {"title": "Waterproof watch"}]
    with OpenAITestDouble(chat=lambda texts: "Sorry, I cannot help with that.") as api:
        tagger, _ = _chat(api.url)
        assert tagger.tag(items) == [["vegan"], ["waterproof"]]
    assert tagger.stats["fallback_items"] == 2
    # Only the item without a usable answer falls back.
    with OpenAITestDouble(chat=lambda texts: json.dumps({"1": ["kids"], "2": {"x": 1}})) as api:
        tagger, _ = _chat(api.url)
        assert tagger.tag(items) == [["kids"], ["waterproof"]]
    assert tagger.stats["fallback_items"] == 1


def test_chat_tagger_retries_then_fails_naming_the_endpoint():
    with OpenAITestDouble(chat=lambda texts: json.dumps({"1": ["vegan"]})) as api:
        api.failures = [503]
        tagger, sleeps = _chat(api.url)
        assert tagger.tag([{"title": "x"}]) == [["vegan"]]
        assert sleeps == [0.5]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(EndpointError, match=f"{url}/chat/completions: endpoint unavailable"):
        _chat(url)[0].tag([{"title": "x"}])


def test_parse_reply_finds_the_object_in_chatter():
    assert parse_reply('Here you go: {"1": ["vegan"]} Hope it helps!') == {"1": ["vegan"]}
    assert parse_reply("[1, 2]") is None and parse_reply("") is None


def test_make_tagger_specs():
    vocab = TagVocabulary([Tag("sale", ("on sale",))])
    tagger = make_tagger("chat:http://llm:8080/v1?model=qwen&batch_size=4&api_key_env=K",
                         vocab)
    assert isinstance(tagger, ChatTagger) and tagger.url == "http://llm:8080/v1/chat/completions"
    assert (tagger.model, tagger.batch_size, tagger.endpoint.api_key_env) == ("qwen", 4, "K")
    assert tagger.vocabulary is vocab and tagger.name.startswith("chat:qwen:")
    with pytest.raises(ValueError, match="unknown tagger spec 'llm'.*keyword.*chat:"):
        make_tagger("llm")
