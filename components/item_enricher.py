"""ItemEnricher: catalogue Examples -> the same items with e_i and t_i attached.

Adds ``text_embedding`` (the frozen text embedding, STARS §4.1) and
``attribute_tags`` (canonical tags from the controlled vocabulary) to every
catalogue item.  Encoder and tagger are pluggable by spec string (see
:mod:`stars.enrichment.encoders` and :mod:`stars.enrichment.taggers`); results
are cached by content hash in ``cache_dir`` so unchanged items are not
re-embedded on the next run.
"""
import json
import os

from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts

from components.examples_artifact import mark_examples
from stars.data import tf_example
from stars.enrichment import enricher
from stars.enrichment.cache import EnrichmentCache
from stars.enrichment.encoders import make_encoder
from stars.enrichment.tag_vocabulary import DEFAULT as DEFAULT_VOCABULARY
from stars.enrichment.tag_vocabulary import TagVocabulary
from stars.enrichment.taggers import make_tagger

TAG_VOCABULARY_FILE = "tag_vocabulary.json"


def load_vocabulary(path: str) -> TagVocabulary:
    return TagVocabulary.load(path) if path else DEFAULT_VOCABULARY


def enrich_examples(items_uri: str, out_uri: str, splits, encoder_spec: str,
                    tagger_spec: str, vocabulary_path: str, cache_dir: str) -> dict:
    """Enriches every split of ``items_uri`` into ``out_uri``; returns the report."""
    encoder = make_encoder(encoder_spec)
    vocabulary = load_vocabulary(vocabulary_path)
    tagger = make_tagger(tagger_spec, vocabulary)
    cache = EnrichmentCache(cache_dir or None)
    report = enricher.EnrichmentReport()
    for split in splits:
        stream = (tf_example.from_example(e) for e in tf_example.read_split(items_uri, split))
        enriched = enricher.enrich(stream, encoder, tagger, cache, report)
        tf_example.write_split(out_uri, split, (tf_example.to_example(f) for f in enriched))
        cache.flush()
    vocabulary.save(os.path.join(out_uri, TAG_VOCABULARY_FILE))
    return {**vars(report), "encoder": encoder.name, "tagger": tagger.name}


@tfx.dsl.components.component
def ItemEnricher(
    items: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    enriched_items: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    encoder: tfx.dsl.components.Parameter[str] = "minilm",
    tagger: tfx.dsl.components.Parameter[str] = "keyword",
    tag_vocabulary: tfx.dsl.components.Parameter[str] = "",
    cache_dir: tfx.dsl.components.Parameter[str] = "",
):
    """Embeds and tags the whole catalogue."""
    splits = artifact_utils.decode_split_names(items.split_names)
    report = enrich_examples(items.uri, enriched_items.uri, splits, encoder, tagger,
                             tag_vocabulary, cache_dir)
    mark_examples(enriched_items, splits)
    for key in ("items", "encoded", "embeddings_from_cache", "tagged", "items_with_tags",
                "embedding_dim"):
        enriched_items.set_int_custom_property(key, int(report[key]))
    enriched_items.set_string_custom_property("encoder", report["encoder"])
    enriched_items.set_string_custom_property("tagger", report["tagger"])
    with open(os.path.join(enriched_items.uri, "enrichment_report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
