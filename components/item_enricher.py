"""ItemEnricher: catalogue Examples -> the same items with e_i and t_i attached.

Adds ``text_embedding`` (the frozen text embedding, STARS §4.1) and
``attribute_tags`` (canonical tags from the controlled vocabulary) to every
catalogue item.  Encoder and tagger are pluggable by spec string (see
:mod:`stars.enrichment.encoders` and :mod:`stars.enrichment.taggers`); results
are cached by content hash in ``cache_dir`` so unchanged items are not
re-embedded on the next run.
"""
from typing import Iterable, Optional

import apache_beam as beam
from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts

from components.examples_artifact import mark_examples
from stars import storage
from stars.enrichment import enrichment_job
from stars.enrichment.encoders import make_encoder
from stars.enrichment.tag_vocabulary import load_vocabulary
from stars.enrichment.taggers import make_tagger

TAG_VOCABULARY_FILE = "tag_vocabulary.json"


def enrich_examples(items_uri: str, out_uri: str, splits: Iterable[str], encoder_spec: str,
                    tagger_spec: str, vocabulary_path: str, cache_dir: str,
                    beam_pipeline: Optional[beam.Pipeline] = None) -> dict:
    """Enriches every split of ``items_uri`` into ``out_uri`` (a Beam job, in process
    without ``beam_pipeline``); returns the report."""
    vocabulary = load_vocabulary(vocabulary_path)
    # Built here too for their names (the cache identity in the report) and to fail on a
    # bad spec before any worker starts; the workers build their own in setup().
    names = {"encoder": make_encoder(encoder_spec).name,
             "tagger": make_tagger(tagger_spec, vocabulary).name}
    pipeline = beam_pipeline or beam.Pipeline()
    enrichment_job.build(pipeline, items_uri, out_uri, splits, encoder_spec, tagger_spec,
                         vocabulary_path, cache_dir)
    result = pipeline.run()
    result.wait_until_finish()
    vocabulary.save(storage.join(out_uri, TAG_VOCABULARY_FILE))
    return {**enrichment_job.report(result), **names}


@tfx.dsl.components.component(use_beam=True)
def ItemEnricher(
    items: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    enriched_items: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    encoder: tfx.dsl.components.Parameter[str] = "minilm",
    tagger: tfx.dsl.components.Parameter[str] = "keyword",
    tag_vocabulary: tfx.dsl.components.Parameter[str] = "",
    cache_dir: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
):
    """Embeds and tags the whole catalogue."""
    splits = artifact_utils.decode_split_names(items.split_names)
    report = enrich_examples(items.uri, enriched_items.uri, splits, encoder, tagger,
                             tag_vocabulary, cache_dir, beam_pipeline)
    mark_examples(enriched_items, splits)
    for key in ("items", "encoded", "embeddings_from_cache", "tagged", "items_with_tags",
                "embedding_dim"):
        enriched_items.set_int_custom_property(key, int(report[key]))
    enriched_items.set_string_custom_property("encoder", report["encoder"])
    enriched_items.set_string_custom_property("tagger", report["tagger"])
    storage.write_json(storage.join(enriched_items.uri, "enrichment_report.json"), report)
