"""End to end: the data half of the TFX pipeline on tiny synthetic data.

Runs every data component once under LocalDagRunner with an MLMD SQLite store,
with the real MiniLM encoder (as the demo does), then checks the artifacts:
schemas, vocabularies, popularity counts, item embeddings and tags, rejects.
"""
import collections
import csv
import glob
import json
import os

import numpy as np
import pytest
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.utils import io_utils

from models import features as F
from pipeline.configs import PipelineConfig
from pipeline.runners import local
from stars.data import contract, synth, tf_example
from stars.data.catalog import category_levels

pytestmark = pytest.mark.e2e


def _artifact(root, component, output):
    uris = sorted(glob.glob(os.path.join(root, component, output, "*")), key=os.path.getmtime)
    assert uris, f"{component}.{output} was not produced"
    return uris[-1]


def _schema(uri):
    return io_utils.parse_pbtxt_file(os.path.join(uri, "schema.pbtxt"), schema_pb2.Schema())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    data = base / "data"
    synth.generate(data, "tiny", seed=3)
    with open(data / "interactions.csv") as f:
        header = next(csv.reader(f))
    with open(data / "interactions.csv", "a", newline="") as f:  # one event on an unknown item
        csv.DictWriter(f, header, restval="").writerow(
            {"user_id": "ghost-user", "item_id": "no-such-item", "timestamp": 1700000000,
             "event_type": "view"})
    config = PipelineConfig(data_dir=str(data), pipeline_root=str(base / "root"),
                            encoder="minilm", tagger="keyword", train_model=False)
    local.run(config)
    return config


def test_metadata_store_records_every_component(run):
    assert os.path.isfile(run.metadata)
    for component in ("CatalogExampleGen", "ItemEnricher", "CatalogStatisticsGen",
                      "CatalogSchemaGen", "CatalogExampleValidator", "CatalogTransform",
                      "InteractionExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                      "Transform"):
        assert os.path.isdir(os.path.join(run.pipeline_root, component)), component


def test_schemas_describe_sequences_and_enriched_items(run):
    names = {f.name for f in _schema(_artifact(run.pipeline_root, "SchemaGen", "schema")).feature}
    assert {"user_id", "item_id", "timestamp", "event_type", "page_item_id", "target_item_id",
            "target_timestamp", "user_num_age", "user_cat_email_domain"} <= names
    catalog = {f.name: f for f in
               _schema(_artifact(run.pipeline_root, "CatalogSchemaGen", "schema")).feature}
    assert {"item_id", "title", "subclass", "text_embedding", "attribute_tags"} <= set(catalog)
    dims = catalog["text_embedding"].shape.dim
    assert [d.size for d in dims] == [384] or catalog["text_embedding"].value_count.min == 384


def test_catalogue_vocabulary_covers_every_item_including_cold_start(run):
    output = tft.TFTransformOutput(
        _artifact(run.pipeline_root, "CatalogTransform", "transform_graph"))
    vocab = {v.decode() for v in output.vocabulary_by_name(F.ITEM_VOCAB)}
    items = contract.read_whole_table(os.path.join(run.data_dir, "items.csv"), contract.ITEMS)
    assert vocab == set(items["item_id"])
    truth = json.load(open(os.path.join(run.data_dir, "synth_truth.json")))
    subclasses = {v.decode() for v in output.vocabulary_by_name(F.SUBCLASS_VOCAB)}
    assert subclasses == set(items["subclass"])
    tags = {v.decode() for v in output.vocabulary_by_name(F.TAG_VOCAB)}
    assert tags & {"organic", "vegan", "gluten_free"}, tags
    # t_i also holds the merchant's taxonomy nodes and brands (models.catalog_preprocessing).
    nodes = {n for path in items["category_path"] for n in category_levels(str(path))}
    assert nodes and {f"taxonomy:{n}" for n in nodes} <= tags
    brands = {b.strip() for b in items["brand"] if isinstance(b, str) and b.strip()}
    assert brands and {f"brand:{b}" for b in brands} <= tags
    assert truth  # the generator's ground truth travels with the data


def test_popularity_counts_come_from_the_training_split_only(run):
    examples = _artifact(run.pipeline_root, "InteractionExampleGen", "examples")
    expected = collections.Counter()
    for example in tf_example.read_split(examples, "train"):
        f = tf_example.from_example(example)
        expected.update(v.decode() for v in f["item_id"] + f["target_item_id"])
    output = tft.TFTransformOutput(_artifact(run.pipeline_root, "Transform", "transform_graph"))
    path = output.vocabulary_file_by_name(F.POPULARITY_VOCAB)
    counts = {}
    for line in open(path, "rb"):
        count, item = line.decode().rstrip("\n").split(" ", 1)
        counts[item] = int(count)
    assert counts == dict(expected)
    events = {v.decode() for v in output.vocabulary_by_name(F.EVENT_TYPE_VOCAB)}
    assert events == {"view", "add_to_cart", "purchase"}
    assert output.vocabulary_by_name("user_cat_email_domain")


def test_item_embeddings_and_tags(run):
    enriched = _artifact(run.pipeline_root, "ItemEnricher", "enriched_items")
    items = [tf_example.from_example(e) for e in tf_example.read_split(enriched, "catalog")]
    vectors = np.array([f["text_embedding"] for f in items])
    assert vectors.shape[1] == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    tagged = [f for f in items if f["attribute_tags"]]
    assert len(tagged) > len(items) // 10
    report = json.load(open(os.path.join(enriched, "enrichment_report.json")))
    assert report["items"] == len(items) and report["encoder"].startswith("minilm")


def test_transformed_splits_and_rejects(run):
    transformed = _artifact(run.pipeline_root, "Transform", "transformed_examples")
    for split in ("train", "eval"):
        assert glob.glob(os.path.join(transformed, f"Split-{split}", "*.gz")), split
    rejects = _artifact(run.pipeline_root, "InteractionExampleGen", "rejects")
    report = json.load(open(os.path.join(rejects, "report.json")))
    assert report["rejects"]["interactions"] == {"unknown item_id": 1}
    assert "no-such-item" in open(os.path.join(rejects, "interactions.csv")).read()
    assert report["examples"]["train"] > 0 and report["examples"]["eval"] > 0
