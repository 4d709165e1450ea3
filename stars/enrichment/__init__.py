"""Item enrichment: frozen text embeddings e_i and attribute tags t_i (spec §4.1).

Encoders and taggers are pluggable and chosen by spec strings
(:func:`make_encoder`, :func:`make_tagger`); :func:`content_hash` keys the cache
that spares unchanged items.  Importing this package does not import TensorFlow.
"""
from stars.enrichment.encoders import (
                                       HashingEncoder,
                                       HttpEmbeddingEncoder,
                                       ItemEncoder,
                                       MiniLMEncoder,
                                       PrecomputedEncoder,
                                       make_encoder,
)
from stars.enrichment.http_client import EndpointError
from stars.enrichment.item_text import content_hash, item_text
from stars.enrichment.tag_vocabulary import DEFAULT as DEFAULT_VOCABULARY
from stars.enrichment.tag_vocabulary import Tag, TagVocabulary
from stars.enrichment.taggers import ChatTagger, ItemTagger, KeywordTagger, make_tagger

__all__ = [
    "ChatTagger", "DEFAULT_VOCABULARY", "EndpointError", "HashingEncoder",
    "HttpEmbeddingEncoder", "ItemEncoder", "ItemTagger", "KeywordTagger", "MiniLMEncoder",
    "PrecomputedEncoder", "Tag", "TagVocabulary", "content_hash", "item_text",
    "make_encoder", "make_tagger",
]
