"""Pluggable item text encoders: item rows -> frozen unit vectors e_i (spec §4.1).

An encoder has a ``name`` (its identity in the enrichment cache key: model and
dimension, so switching either re-embeds), a ``dim`` and ``encode``.  Choose one
with :func:`make_encoder` from a spec string:

* ``minilm`` / ``minilm:/path/to/model``: all-MiniLM-L6-v2, offline (384-d).
* ``precomputed`` / ``precomputed:DIM``: the catalogue's own ``embedding`` column.
* ``http:http://host:port/v1?model=NAME&api_key_env=VAR``: an OpenAI-compatible
  embeddings endpoint (options: also ``batch_size``, ``timeout``, ``retries``, ``dim``).
* ``hashing`` / ``hashing:256``: hashed n-grams, for tests only.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np

from stars.enrichment.http_client import (
    ENDPOINT_OPTIONS,
    EndpointError,
    JsonEndpoint,
    parse_endpoint_url,
)
from stars.enrichment.item_text import item_text, precomputed_vector
from stars.enrichment.minilm import MiniLMEncoder


class ItemEncoder(Protocol):
    """For type checking only: ``dim`` and ``name`` may do work (an HTTP probe),
    so the protocol is not runtime-checkable."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, items: Sequence[Mapping]) -> np.ndarray:
        """float32 [len(items), dim], rows of unit L2 norm."""


def _item_id(item: Mapping, index: int) -> str:
    return repr(item.get("item_id", f"#{index}"))


def normalise_rows(vectors: np.ndarray, ids: Sequence[str], source: str) -> np.ndarray:
    """Rows scaled to unit norm; a zero or non-finite row is an error naming its item."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{source}: item {ids[i]} has a zero or non-finite embedding")
    return vectors / norms[:, None]


class PrecomputedEncoder:
    """The catalogue's ``embedding`` column; ``dim`` is fixed by the first item if not given.

    ``name`` leaves the dimension out so that it is known before any item is
    read: the content hash covers the vector itself, dimension included.
    """

    name = "precomputed:v1"

    def __init__(self, dim: Optional[int] = None):
        self._dim = dim

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise ValueError("precomputed encoder: dimension unknown until an item is "
                             "encoded (give it as 'precomputed:DIM')")
        return self._dim

    def encode(self, items: Sequence[Mapping]) -> np.ndarray:
        ids = [_item_id(item, i) for i, item in enumerate(items)]
        rows = []
        for item, item_id in zip(items, ids):
            vector = precomputed_vector(item)
            if vector is None:
                raise ValueError(f"precomputed encoder: item {item_id} has no "
                                 "'embedding' value")
            if self._dim is None:
                self._dim = int(vector.size)
            if vector.size != self._dim:
                raise ValueError(f"precomputed encoder: item {item_id} has an embedding "
                                 f"of dimension {vector.size}, expected {self._dim}")
            rows.append(vector)
        if not rows:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return normalise_rows(np.stack(rows), ids, "precomputed encoder")


_WORD = re.compile(r"[^\W_]+")


class HashingEncoder:
    """Signed hashed word unigrams + bigrams; for unit tests, not for quality.

    Hashes with blake2b, not Python's salted ``hash()``, so vectors are the same
    in every process.
    """

    def __init__(self, dim: int = 256):
        if dim < 2:
            raise ValueError(f"hashing encoder: dim must be >= 2, got {dim}")
        self.dim = int(dim)
        self.name = f"hashing:v1:d{self.dim}"

    def _features(self, text: str) -> list:
        words = _WORD.findall(text.lower())
        return words + [a + " " + b for a, b in zip(words, words[1:])] or ["<empty>"]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"),
                                                   digest_size=8).digest(), "little")
                out[row, (h >> 1) % self.dim] += 1.0 if h & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm == 0:  # features cancelled out: any fixed unit vector will do
                out[row, 0] = norm = 1.0
            out[row] /= norm
        return out

    def encode(self, items: Sequence[Mapping]) -> np.ndarray:
        return self.encode_texts([item_text(item) for item in items])


class HttpEmbeddingEncoder:
    """An OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

    Without ``dim`` the first call fixes it (``name`` needs it: accessing it
    first sends one probe request).
    """

    def __init__(self, base_url: str, model: Optional[str] = None,
                 api_key_env: Optional[str] = None, dim: Optional[int] = None,
                 batch_size: int = 64, timeout_s: float = 60.0, max_retries: int = 4,
                 endpoint: Optional[JsonEndpoint] = None):
        self.endpoint = endpoint or JsonEndpoint(base_url, api_key_env=api_key_env,
                                                 timeout_s=timeout_s,
                                                 max_retries=max_retries)
        self.model, self.batch_size, self._dim = model, int(batch_size), dim

    @property
    def url(self) -> str:
        return self.endpoint.base_url + "/embeddings"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self._embed(["dimension probe"]).shape[1]
        return self._dim

    @property
    def name(self) -> str:
        # The host is left out: the same model behind another URL gives the same vectors.
        return f"http:{self.model or 'default'}:d{self.dim}"

    def _embed(self, texts: list) -> np.ndarray:
        payload: dict[str, Any] = {"input": texts}
        if self.model:
            payload["model"] = self.model
        reply = self.endpoint.post("embeddings", payload)
        try:
            data = sorted(reply["data"], key=lambda d: d.get("index", 0))
            vectors = [np.asarray(d["embedding"], dtype=np.float32) for d in data]
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise EndpointError(f"POST {self.url}: unexpected reply shape ({e!r}): "
                                f"{str(reply)[:200]}") from e
        if len(vectors) != len(texts):
            raise EndpointError(f"POST {self.url}: {len(vectors)} embeddings for "
                                f"{len(texts)} inputs")
        sizes = {v.size for v in vectors}
        if len(sizes) != 1:
            raise EndpointError(f"POST {self.url}: embeddings of mixed dimensions "
                                f"{sorted(sizes)}")
        return np.stack(vectors)

    def encode(self, items: Sequence[Mapping]) -> np.ndarray:
        ids = [_item_id(item, i) for i, item in enumerate(items)]
        texts = [item_text(item) for item in items]
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            vectors = self._embed(texts[start:start + self.batch_size])
            if self._dim is None:
                self._dim = vectors.shape[1]
            if vectors.shape[1] != self._dim:
                raise ValueError(f"POST {self.url}: embeddings of dimension "
                                 f"{vectors.shape[1]}, expected {self._dim}")
            chunks.append(vectors)
        if not chunks:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return normalise_rows(np.concatenate(chunks), ids, self.url)


ENCODER_SPECS = ("minilm", "minilm:/path/to/model", "precomputed", "precomputed:DIM",
                 "hashing",
                 "hashing:DIM", "http:http://host:port/v1?model=NAME&api_key_env=VAR")


def make_encoder(spec: str) -> ItemEncoder:
    """The encoder a spec string names (see the module docstring)."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "minilm":
        return MiniLMEncoder(arg or None)
    if kind == "precomputed":
        try:
            return PrecomputedEncoder(int(arg) if arg else None)
        except ValueError:
            raise ValueError(
                f"bad encoder spec {spec!r}: precomputed:DIM needs an integer") from None
    if kind == "hashing":
        try:
            return HashingEncoder(int(arg) if arg else 256)
        except ValueError as e:  # also HashingEncoder's own dim check: keep it as the cause
            raise ValueError(f"bad encoder spec {spec!r}: hashing:DIM needs an integer") from e
    if kind == "http" and arg:
        base, options = parse_endpoint_url(arg, dict(ENDPOINT_OPTIONS, dim=int))
        return HttpEmbeddingEncoder(
            base, model=options.get("model"), api_key_env=options.get("api_key_env"),
            dim=options.get("dim"), batch_size=options.get("batch_size", 64),
            timeout_s=options.get("timeout", 60.0),
            max_retries=options.get("retries", 4))
    raise ValueError(f"unknown encoder spec {spec!r}; choose one of: "
                     f"{', '.join(ENCODER_SPECS)}")
