"""Item enrichment as a Beam job, so Dataflow, Flink or Spark spread the encoder's work.

Each worker loads the encoder, the tagger and the content-hash cache once (``setup``:
MiniLM's weights, an HTTP client), enriches batches of catalogue Examples, and writes the
cache entries it computed as its own shards at the end of each bundle (immutable,
run-unique names: two workers never write the same file). The report is Beam counters,
summed over workers by the runner.
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from stars import storage
from stars.data import tf_example
from stars.enrichment.enricher import EnrichmentReport, enrich_batch

NAMESPACE = "stars.enrichment"
COUNTED = ("items", "encoded", "embeddings_from_cache", "tagged", "tags_from_cache",
           "items_with_tags")
BATCH_SIZE = 256  # items per encoder call


class _EnrichBatches(beam.DoFn):
    def __init__(self, encoder_spec: str, tagger_spec: str, vocabulary_path: str,
                 cache_dir: str):
        self._specs = (encoder_spec, tagger_spec, vocabulary_path, cache_dir)

    def setup(self):
        from stars.enrichment.cache import EnrichmentCache
        from stars.enrichment.encoders import make_encoder
        from stars.enrichment.tag_vocabulary import load_vocabulary
        from stars.enrichment.taggers import make_tagger
        encoder_spec, tagger_spec, vocabulary_path, cache_dir = self._specs
        self._encoder = make_encoder(encoder_spec)
        self._tagger = make_tagger(tagger_spec, load_vocabulary(vocabulary_path))
        self._cache = EnrichmentCache(cache_dir or None)
        self._counters = {name: Metrics.counter(NAMESPACE, name) for name in COUNTED}
        self._dim = Metrics.distribution(NAMESPACE, "embedding_dim")

    def process(self, batch: Sequence[bytes]) -> Iterator[bytes]:
        import tensorflow as tf
        report = EnrichmentReport()
        items = [tf_example.from_example(tf.train.Example.FromString(record))
                 for record in batch]
        for enriched in enrich_batch(items, self._encoder, self._tagger, self._cache, report):
            yield tf_example.to_example(enriched).SerializeToString()
        for name in COUNTED:
            self._counters[name].inc(getattr(report, name))
        self._dim.update(report.embedding_dim)

    def finish_bundle(self):
        self._cache.flush()


def build(pipeline: beam.Pipeline, items_uri: str, out_uri: str, splits: Iterable[str],
          encoder_spec: str, tagger_spec: str, vocabulary_path: str, cache_dir: str) -> None:
    """Adds the enrichment of every split of ``items_uri`` (into ``out_uri``) to ``pipeline``."""
    enrich = _EnrichBatches(encoder_spec, tagger_spec, vocabulary_path, cache_dir)
    for split in splits:
        _ = (pipeline
             | f"Read{split}" >> beam.io.ReadFromTFRecord(
                 storage.join(tf_example.split_dir(items_uri, split), "*.gz"))
             # A catalogue is a few gzip files, which a runner cannot split: without the
             # reshuffle one worker would read, and so enrich, each file whole.
             | f"Spread{split}" >> beam.Reshuffle()
             | f"Batch{split}" >> beam.BatchElements(min_batch_size=BATCH_SIZE,
                                                    max_batch_size=BATCH_SIZE)
             | f"Enrich{split}" >> beam.ParDo(enrich)
             | f"Write{split}" >> beam.io.WriteToTFRecord(
                 storage.join(tf_example.split_dir(out_uri, split), "data_tfrecord"),
                 file_name_suffix=".gz"))


def report(result: beam.runners.runner.PipelineResult) -> Dict[str, int]:
    """The job's counters, summed over workers (``EnrichmentReport``'s fields)."""
    metrics = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    out = {name: 0 for name in COUNTED}
    out["embedding_dim"] = 0
    for counter in metrics["counters"]:
        out[counter.key.metric.name] += int(counter.committed or 0)
    for distribution in metrics["distributions"]:
        committed = distribution.committed
        if committed is not None and committed.count:
            out["embedding_dim"] = max(out["embedding_dim"], int(committed.max))
    return out
