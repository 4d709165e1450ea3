"""Sidecar filters: request parsing, the embedded backend's semantics, popularity."""

import pytest

from serving.sidecar.filters import EmbeddedFilterBackend, Filters, item_document, parse_filters
from serving.sidecar.popularity import Popularity, read_counts
from serving.sidecar.validation import RequestError
from tests.fixtures import write_small_dataset


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return write_small_dataset(tmp_path_factory.mktemp("sidecar_small"))


@pytest.fixture(scope="module")
def catalog(small_dir):
    return EmbeddedFilterBackend.from_catalog(small_dir)


ALL = ["i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9"]


def test_item_document_marks_everywhere_and_stock():
    doc = item_document({"item_id": ["x"], "category_path": ["A > B>C"], "subclass": ["a/b"],
                         "brand": ["Z"], "price": [], "stock": [], "regions": [], "tags": []})
    assert doc == {"item_id": "x", "categories": ["A", "A > B", "A > B > C"], "subclass": "a/b",
                   "brand": "Z", "regions": ["*"], "in_stock": True}
    doc = item_document({"item_id": ["y"], "category_path": [""], "subclass": ["s"],
                         "price": [2.5], "stock": [0], "regions": ["us", "eu"]})
    assert doc["in_stock"] is False and doc["stock"] == 0 and doc["price"] == 2.5
    assert doc["regions"] == ["us", "eu"] and doc["categories"] == []


@pytest.mark.parametrize("filters, expected", [
    (Filters(), ALL),
    (Filters(region="eu"), ["i1", "i3", "i4", "i5", "i6"]),   # i3: regions empty = everywhere
    (Filters(region="uk"), ["i3", "i6"]),
    (Filters(region="mars"), ["i3"]),
    (Filters(in_stock=True), ["i1", "i3", "i4", "i5", "i6", "i7", "i8", "i9"]),  # i5: unknown
    (Filters(categories=("Grocery",)), ["i1", "i2", "i3", "i4", "i5", "i8", "i9"]),
    (Filters(categories=("Grocery > Tea",)), ["i1", "i2", "i3", "i9"]),
    (Filters(categories=("Tea",)), []),                            # prefixes only
    (Filters(subclasses=("grocery/coffee", "electronics/audio")), ["i4", "i5", "i6", "i7"]),
    (Filters(price_min=5.0, price_max=15.0), ["i2", "i3", "i4", "i8"]),  # inclusive; i5 no price
    (Filters(price_max=4.5), ["i1"]),
    (Filters(exclude_ids=frozenset({"i1", "i9"})), ALL[1:8]),
    (Filters(region="us", in_stock=True, categories=("Grocery > Tea",), price_max=10.0),
     ["i1", "i3"]),
])
def test_embedded_semantics(catalog, filters, expected):
    assert catalog.filter(ALL, filters) == expected


def test_embedded_keeps_input_order_dedupes_and_drops_unknown(catalog):
    got = catalog.filter(["i9", "nope", "i1", "i9", "i3", "i1"], Filters(region="us"))
    assert got == ["i9", "i1", "i3"]
    assert catalog.filter([], Filters(region="us")) == []


def test_parse_filters_normalises_and_validates():
    f = parse_filters({"region": "us", "categories": ["Grocery>Tea", "Grocery > Tea"],
                       "price": {"min": 1, "max": 9.5}, "in_stock": True,
                       "exclude_ids": ["a", "b"], "subclasses": ["x"]})
    assert f == Filters(region="us", categories=("Grocery > Tea",), subclasses=("x",),
                        exclude_ids=frozenset({"a", "b"}), price_min=1.0, price_max=9.5,
                        in_stock=True)
    assert parse_filters(None) == Filters() and not Filters().has_catalog_constraints
    assert not Filters(exclude_ids=frozenset({"a"})).has_catalog_constraints


@pytest.mark.parametrize("value, field, words", [
    ({"colour": "red"}, "filters.colour", "unknown field"),
    ({"region": 3}, "filters.region", "must be a string"),
    ({"region": ""}, "filters.region", "must not be empty"),
    ({"categories": "Tea"}, "filters.categories", "array of strings"),
    ({"categories": [" > "]}, "filters.categories[0]", "no category level"),
    ({"exclude_ids": ["x"] * 1001}, "filters.exclude_ids", "at most 1000"),
    ({"price": {"min": 5, "max": 1}}, "filters.price", "greater than"),
    ({"price": {"min": -1}}, "filters.price.min", ">= 0, got -1"),
    ({"price": {"max": "10"}}, "filters.price.max", "must be a number"),
    ({"price": {"low": 1}}, "filters.price.low", "unknown field"),
    ({"in_stock": "yes"}, "filters.in_stock", "true or false"),
    ([], "filters", "must be an object"),
])
def test_parse_filters_rejects_with_field_and_message(value, field, words):
    with pytest.raises(RequestError) as e:
        parse_filters(value)
    assert e.value.field == field and words in e.value.message and e.value.status == 400


def test_popularity_by_region_with_counts(catalog, tmp_path):
    vocab = tmp_path / "item_popularity"
    vocab.write_text("12 i6\n9 i3\n7 i5\n5 i1\n1 ghost\n")
    counts = read_counts(vocab)
    assert counts["i6"] == 12.0 and counts["ghost"] == 1.0
    pop = Popularity(catalog, counts)
    assert [i for i, _ in pop.top(3)] == ["i6", "i3", "i5"]
    assert [i for i, _ in pop.top(4, Filters(region="eu"))] == ["i6", "i3", "i5", "i1"]
    assert [i for i, _ in pop.top(2, Filters(region="uk"))] == ["i6", "i3"]
    assert [i for i, _ in pop.top(3, Filters(region="nowhere"))] == ["i3"]  # everywhere only
    top = pop.top(3, Filters(region="us", categories=("Grocery > Tea",), in_stock=True))
    assert top == [("i3", 9.0), ("i1", 5.0), ("i9", 0.0)]  # zero counts in catalogue order
    csv_counts = tmp_path / "counts.csv"
    csv_counts.write_text("item_id,count\ni2,3\ni7,4\n")
    assert [i for i, _ in Popularity.load(catalog, str(csv_counts)).top(3)] == ["i7", "i2", "i1"]


def test_read_counts_rejects_garbage(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("lots i1\n")
    with pytest.raises(ValueError, match="expected 'COUNT ITEM'"):
        read_counts(bad)
