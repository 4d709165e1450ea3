"""The product text that gets embedded and tagged, and the cache key over it.

Every encoder and tagger reads an item through :func:`item_text`, so they all
see the same text; :func:`content_hash` covers that text and every other input
enrichment reads (merchant tags, a precomputed vector), so an item whose hash is
unchanged never needs re-embedding or re-tagging.
"""
from __future__ import annotations

import hashlib
import html
import math
import re
from typing import Mapping

import numpy as np

# (column, label): labels give a sentence encoder the field's meaning.
_FIELDS = (("title", ""), ("brand", "Brand: "), ("category_path", "Category: "),
           ("description", ""))
_SPACE = re.compile(r"\s+")


def _clean(value) -> str:
    """A cell as one line of text; None, NaN and blanks are empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    # Catalogue text is often HTML-escaped ("Crabtree &amp; Evelyn").
    return _SPACE.sub(" ", html.unescape(str(value))).strip()


def item_text(item: Mapping) -> str:
    """Title, brand, category path and description, one per line, empty ones skipped."""
    lines = []
    for column, label in _FIELDS:
        value = _clean(item.get(column))
        if value:
            lines.append(label + value)
    return "\n".join(lines)


def merchant_tags(item: Mapping) -> list:
    """The item's ``tags`` cell as a list of non-empty strings (list, array or 'a|b')."""
    raw = item.get("tags")
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return []
    if isinstance(raw, str):
        raw = raw.split("|")
    return [t for t in (_clean(v) for v in raw) if t]


def precomputed_vector(item: Mapping):
    """The item's ``embedding`` cell as float32, or None when it has none."""
    raw = item.get("embedding")
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    if isinstance(raw, str):
        raw = [v for v in re.split(r"[\s,|]+", raw.strip("[] ")) if v]
    vector = np.asarray(raw, dtype=np.float32).reshape(-1)
    return vector if vector.size else None


def content_hash(item: Mapping, encoder_name: str) -> str:
    """sha256 over the encoder identity and everything enrichment reads from the item.

    The merchant tags and the precomputed vector are included for every encoder:
    hashing more than one encoder needs costs a rare needless recompute, hashing
    less would cost a stale cache hit.
    """
    h = hashlib.sha256()
    for part in (encoder_name, item_text(item), "\x1f".join(merchant_tags(item))):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    vector = precomputed_vector(item)
    if vector is not None:
        h.update(vector.astype("<f4").tobytes())
    return h.hexdigest()
