"""Pluggable attribute taggers: item rows -> tags from the vocabulary V (spec §4.1).

Every tagger returns, per item, canonical tag names from V, sorted and without
duplicates, and merges the merchant's own ``tags`` (normalised to V).  Tags
outside V are dropped and counted in ``stats`` (the raw strings in ``unknown``)
so the vocabulary can be curated.  Choose one with :func:`make_tagger`:

* ``keyword``: offline rules, V's names and synonyms found in the product text.
* ``chat:http://host:port/v1?model=NAME&api_key_env=VAR``: an OpenAI-compatible
  chat endpoint (options: also ``batch_size``, ``timeout``, ``retries``); items it
  answers unparseably are tagged by the keyword rules instead, and counted.
"""
from __future__ import annotations

import collections
import json
import re
from typing import Mapping, Optional, Protocol, Sequence

from stars.enrichment.http_client import (
    ENDPOINT_OPTIONS,
    EndpointError,
    JsonEndpoint,
    parse_endpoint_url,
)
from stars.enrichment.item_text import item_text, merchant_tags
from stars.enrichment.tag_vocabulary import DEFAULT, TagVocabulary, normalise_key


class ItemTagger(Protocol):
    name: str
    stats: collections.Counter

    def tag(self, items: Sequence[Mapping]) -> list:
        """Per item, a sorted list of distinct canonical tag names from V."""


class _CountingTagger:
    """Normalisation to V with counts, shared by every tagger."""

    def __init__(self, vocabulary: TagVocabulary):
        self.vocabulary = vocabulary
        self.stats: collections.Counter[str] = collections.Counter()
        self.unknown: collections.Counter[str] = collections.Counter()  # raw tag -> times dropped

    def _normalise(self, raws, counter: str) -> set:
        tags = set()
        for raw in raws:
            name = self.vocabulary.normalise(raw)
            if name is None:
                self.stats[counter] += 1
                self.unknown[str(raw)] += 1
            else:
                tags.add(name)
        return tags

    def _merchant(self, item: Mapping) -> set:
        return self._normalise(merchant_tags(item), "unknown_merchant_tags")


_NOT_ALNUM = r"[\W_]"
# A negation just before a synonym ("non-organic", "not waterproof") cancels it.
_NEGATED = "".join(f"(?<!{re.escape(n)})" for n in ("non-", "non ", "not ", "no "))


def _synonym_pattern(synonym: str) -> str:
    """Words of the synonym with up to 3 separators between: 'gluten-free', 'glutenfree'."""
    words = re.findall(r"[^\W_]+", synonym.lower())
    return f"{_NOT_ALNUM}{{0,3}}".join(re.escape(w) for w in words)


def _searched_forms(tag) -> list:
    """The name ("gluten_free" as "gluten free") and synonyms, less the aliases."""
    aliases = {normalise_key(a) for a in tag.aliases}
    return [f for f in (tag.name.replace("_", " "), *tag.synonyms)
            if normalise_key(f) not in aliases]


class KeywordTagger(_CountingTagger):
    """V's names and synonyms found in the product text on word boundaries, plus
    merchant tags.

    Aliases are never searched: they are the forms too ambiguous for free text
    ("GF", "eco"); a name listed as an alias is not searched either ("natural").
    """

    def __init__(self, vocabulary: TagVocabulary = DEFAULT, merchant: bool = True):
        super().__init__(vocabulary)
        self.merchant = merchant
        self.name = f"keyword:v1:{vocabulary.digest}"
        phrases = {s for tag in vocabulary for s in _searched_forms(tag)}
        alternatives = sorted((_synonym_pattern(s) for s in phrases), key=len, reverse=True)
        self._pattern = re.compile(
            f"(?<![^\\W_]){_NEGATED}(?:{'|'.join(alternatives) or '(?!)'})(?![^\\W_])")

    def tags_in_text(self, text: str) -> set:
        """Canonical tags whose names or synonyms occur in ``text``."""
        found = set()
        for match in self._pattern.finditer(text.lower()):
            name = self.vocabulary.normalise(match.group(0))
            if name is not None:
                found.add(name)
        return found

    def tag(self, items: Sequence[Mapping]) -> list:
        out = []
        for item in items:
            tags = self.tags_in_text(item_text(item))
            if self.merchant:
                tags |= self._merchant(item)
            self.stats["items"] += 1
            out.append(sorted(tags))
        return out


PROMPT_VERSION = 1


def _system_prompt(vocabulary: TagVocabulary) -> str:
    lines = [f"- {t.name}: {t.description}" if t.description else f"- {t.name}"
             for t in vocabulary]
    return ("You tag e-commerce products with attributes from a fixed vocabulary.\n"
            "Allowed tags:\n" + "\n".join(lines) + "\n"
            "Use a tag only when the product text clearly supports it. You get a "
            "JSON object mapping product ids to product texts. Reply with only a "
            "JSON object mapping every product id to a JSON array of allowed tags "
            '(an empty array when none apply), e.g. {"1": ["vegan", "organic"], "2": []}.')


def parse_reply(content: str) -> Optional[dict]:
    """The JSON object in a chat reply (code fences and chatter around it allowed)."""
    content = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", content.strip())
    for candidate in (content, content[content.find("{"):content.rfind("}") + 1]):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


class ChatTagger(_CountingTagger):
    """Tags from an OpenAI-compatible ``POST {base_url}/chat/completions``.

    Several items go in one request, keyed by short ids; temperature 0 keeps
    answers repeatable.  The endpoint being down is an error (after retries);
    an answer that cannot be read for an item falls back to ``fallback``.
    """

    def __init__(self, base_url: str, model: Optional[str] = None,
                 vocabulary: TagVocabulary = DEFAULT, api_key_env: Optional[str] = None,
                 batch_size: int = 8, timeout_s: float = 120.0, max_retries: int = 4,
                 max_chars: int = 1500, endpoint: Optional[JsonEndpoint] = None,
                 fallback: Optional[KeywordTagger] = None):
        super().__init__(vocabulary)
        self.endpoint = endpoint or JsonEndpoint(base_url, api_key_env=api_key_env,
                                                 timeout_s=timeout_s,
                                                 max_retries=max_retries)
        self.model, self.batch_size, self.max_chars = model, int(batch_size), max_chars
        self.fallback = fallback or KeywordTagger(vocabulary, merchant=False)
        self.name = f"chat:{model or 'default'}:p{PROMPT_VERSION}:{vocabulary.digest}"
        self._system = _system_prompt(vocabulary)

    @property
    def url(self) -> str:
        return self.endpoint.base_url + "/chat/completions"

    def _ask(self, texts: dict) -> Optional[dict]:
        payload = {"temperature": 0, "messages": [
            {"role": "system", "content": self._system},
            {"role": "user", "content": json.dumps(texts, ensure_ascii=False)}]}
        if self.model:
            payload["model"] = self.model
        reply = self.endpoint.post("chat/completions", payload)
        self.stats["requests"] += 1
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise EndpointError(f"POST {self.url}: not a chat completion reply: "
                                f"{str(reply)[:200]}") from e
        return parse_reply(content or "")

    def _tags_for(self, answer: Optional[dict], key: str, text: str) -> set:
        raw = answer.get(key) if answer is not None else None
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
            self.stats["fallback_items"] += 1
            return self.fallback.tags_in_text(text)
        return self._normalise(raw, "unknown_tags")

    def tag(self, items: Sequence[Mapping]) -> list:
        out = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            texts = {str(i + 1): item_text(item)[:self.max_chars]
                     for i, item in enumerate(batch)}
            answer = self._ask(texts)
            for (key, text), item in zip(texts.items(), batch):
                tags = self._tags_for(answer, key, text) | self._merchant(item)
                self.stats["items"] += 1
                out.append(sorted(tags))
        return out


TAGGER_SPECS = ("keyword", "chat:http://host:port/v1?model=NAME&api_key_env=VAR")


def make_tagger(spec: str, vocabulary: TagVocabulary = DEFAULT) -> ItemTagger:
    """The tagger a spec string names (see the module docstring)."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "keyword" and not arg:
        return KeywordTagger(vocabulary)
    if kind == "chat" and arg:
        base, options = parse_endpoint_url(arg, ENDPOINT_OPTIONS)
        return ChatTagger(base, model=options.get("model"), vocabulary=vocabulary,
                          api_key_env=options.get("api_key_env"),
                          batch_size=options.get("batch_size", 8),
                          timeout_s=options.get("timeout", 120.0),
                          max_retries=options.get("retries", 4))
    raise ValueError(f"unknown tagger spec {spec!r}; choose one of: "
                     f"{', '.join(TAGGER_SPECS)}")
