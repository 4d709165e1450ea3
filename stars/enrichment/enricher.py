"""Item enrichment: catalogue item -> frozen text embedding e_i and attribute tags t_i.

Enriches the catalogue batch by batch (``stars.enrichment.enrichment_job`` runs it on
Beam) and asks the encoder and the tagger only for items the content-hash cache does not
already hold.  Taggers merge merchant-supplied tags themselves (normalised to the
vocabulary).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping

import numpy as np

from stars.enrichment.cache import EnrichmentCache
from stars.enrichment.item_text import content_hash

TEXT_FIELDS = ("item_id", "title", "description", "brand", "category_path", "subclass")


@dataclasses.dataclass
class EnrichmentReport:
    items: int = 0
    encoded: int = 0
    embeddings_from_cache: int = 0
    tagged: int = 0
    tags_from_cache: int = 0
    items_with_tags: int = 0
    embedding_dim: int = 0


def item_record(features: Mapping) -> dict:
    """A catalogue Example's features -> the item mapping encoders and taggers read."""
    def text(name):
        values = features.get(name) or [b""]
        return values[0].decode() if isinstance(values[0], bytes) else str(values[0])
    record = {name: text(name) for name in TEXT_FIELDS}
    record["tags"] = [t.decode() if isinstance(t, bytes) else t for t in features.get("tags", [])]
    record["embedding"] = list(features.get("embedding", []))
    return record


def enrich_batch(batch, encoder, tagger, cache: EnrichmentCache,
                 report: EnrichmentReport) -> Iterator[dict]:
    """One batch: the encoder and the tagger see only what the cache does not hold."""
    records = [item_record(f) for f in batch]
    emb_keys = [content_hash(r, encoder.name) for r in records]
    tag_keys = [content_hash(r, tagger.name) for r in records]
    missing = [i for i, k in enumerate(emb_keys) if cache.vector(k) is None]
    if missing:
        vectors = np.asarray(encoder.encode([records[i] for i in missing]), np.float32)
        for i, vector in zip(missing, vectors):
            cache.put_vector(emb_keys[i], vector)
    untagged = [i for i, k in enumerate(tag_keys) if cache.tags(k) is None]
    if untagged:
        for i, tags in zip(untagged, tagger.tag([records[i] for i in untagged])):
            cache.put_tags(tag_keys[i], tags)
    report.items += len(batch)
    report.encoded += len(missing)
    report.embeddings_from_cache += len(batch) - len(missing)
    report.tagged += len(untagged)
    report.tags_from_cache += len(batch) - len(untagged)
    for features, ek, tk in zip(batch, emb_keys, tag_keys):
        vector, tags = cache.vector(ek), cache.tags(tk)
        assert vector is not None and tags is not None  # both put above when missing
        report.embedding_dim = int(vector.shape[0])
        report.items_with_tags += bool(tags)
        yield {**features, "text_embedding": vector.tolist(), "attribute_tags": list(tags)}
