"""ItemEnricher logic: embeddings and tags for every item, cached by content hash."""
import apache_beam as beam
import numpy as np
import pytest

from components.catalog_example_gen import CATALOG_SPLIT, write_catalog_examples
from components.item_enricher import enrich_examples
from stars.data import tf_example
from tests.fixtures import ITEMS, write_small_dataset


def _enriched(uri):
    return {f["item_id"][0].decode(): f for f in
            map(tf_example.from_example, tf_example.read_split(uri, CATALOG_SPLIT))}


def test_every_item_gets_an_embedding_and_canonical_tags(tmp_path):
    data = write_small_dataset(tmp_path / "data")
    write_catalog_examples(str(data), str(tmp_path / "items"))
    report = enrich_examples(str(tmp_path / "items"), str(tmp_path / "out"), [CATALOG_SPLIT],
                             "hashing:32", "keyword", "", str(tmp_path / "cache"))
    items = _enriched(str(tmp_path / "out"))
    assert len(items) == len(ITEMS) == report["items"] == report["encoded"]
    for features in items.values():
        vector = np.array(features["text_embedding"])
        assert vector.shape == (32,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert b"organic" in items["i1"]["attribute_tags"]
    assert b"gluten_free" in items["i1"]["attribute_tags"]  # "Gluten-free" in the text
    assert b"vegan" in items["i2"]["attribute_tags"]        # merchant tag, normalised
    assert {b"wireless", b"waterproof"} <= set(items["i6"]["attribute_tags"])
    assert (tmp_path / "out" / "tag_vocabulary.json").is_file()


def test_unchanged_items_are_not_re_embedded(tmp_path):
    data = write_small_dataset(tmp_path / "data")
    write_catalog_examples(str(data), str(tmp_path / "items"))
    args = ([CATALOG_SPLIT], "hashing:32", "keyword", "", str(tmp_path / "cache"))
    first = enrich_examples(str(tmp_path / "items"), str(tmp_path / "run1"), *args)
    second = enrich_examples(str(tmp_path / "items"), str(tmp_path / "run2"), *args)
    assert first["encoded"] == len(ITEMS) and second["encoded"] == 0
    assert second["embeddings_from_cache"] == len(ITEMS) and second["tagged"] == 0
    assert _enriched(str(tmp_path / "run1")) == _enriched(str(tmp_path / "run2"))

    items_csv = data / "items.csv"
    items_csv.write_text(items_csv.read_text().replace("Earl Grey Tea Tin", "Earl Grey Tea Caddy"))
    write_catalog_examples(str(data), str(tmp_path / "items2"))
    third = enrich_examples(str(tmp_path / "items2"), str(tmp_path / "run3"), *args)
    assert third["encoded"] == 1 and third["tagged"] == 1  # only the changed title

    other_model = enrich_examples(str(tmp_path / "items2"), str(tmp_path / "run4"),
                                  [CATALOG_SPLIT], "hashing:16", "keyword", "",
                                  str(tmp_path / "cache"))
    assert other_model["encoded"] == len(ITEMS)  # a new encoder misses the cache


@pytest.mark.e2e
def test_two_beam_workers_enrich_as_one(tmp_path):
    """The ItemEnricher is a Beam job: under the DirectRunner with two worker processes the
    items, their vectors and tags and the report equal the in-process run's; each worker
    loaded its own encoder and wrote its own cache shards."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from stars.data import synth
    synth.generate(tmp_path / "data", "tiny", seed=2)  # 150 items: several encoder batches
    write_catalog_examples(str(tmp_path / "data"), str(tmp_path / "items"))
    args = ([CATALOG_SPLIT], "hashing:32", "keyword", "")
    one = enrich_examples(str(tmp_path / "items"), str(tmp_path / "one"), *args,
                          str(tmp_path / "cache1"))
    two = enrich_examples(str(tmp_path / "items"), str(tmp_path / "two"), *args,
                          str(tmp_path / "cache2"), beam.Pipeline(options=PipelineOptions([
                              "--direct_running_mode=multi_processing",
                              "--direct_num_workers=2"])))
    assert one == two and one["items"] == one["encoded"] == 150
    first, second = _enriched(str(tmp_path / "one")), _enriched(str(tmp_path / "two"))
    assert sorted(first) == sorted(second)
    for item, features in first.items():
        np.testing.assert_allclose(features["text_embedding"], second[item]["text_embedding"],
                                   rtol=0, atol=1e-7)
        assert features["attribute_tags"] == second[item]["attribute_tags"]
    shards = sorted((tmp_path / "cache2").glob("embeddings-*.npz"))
    sizes = [len(np.load(shard)["keys"]) for shard in shards]
    assert len(sizes) >= 2 and sum(sizes) == 150, sizes  # the work was spread
    again = enrich_examples(str(tmp_path / "items"), str(tmp_path / "three"), *args,
                            str(tmp_path / "cache2"))
    assert again["encoded"] == 0  # the workers' shards together hold every item
