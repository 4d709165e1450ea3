"""CatalogIndexer: the catalogue a release filters with -- the exact file the run's
CatalogExampleGen read (checked by its fingerprint) as the embedded backend's snapshot,
and, with Elasticsearch, a new index generation that nothing reads until the release
is published (``ReleasePublisher`` swaps the alias to it).
"""
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.artifacts import CatalogIndex
from components.user_embedding_gen import was_pushed
from stars import storage
from stars.data import contract, fingerprint


def snapshot_catalog(data_dir: str, out_dir: str, expected_fingerprint: str = "") -> dict:
    """Copies the catalogue table into ``out_dir``; raises when it is not the file the
    run read (``expected_fingerprint``).  Returns ``items_file`` and ``fingerprint``."""
    source = contract.find_table_file(data_dir, contract.ITEMS)
    assert source is not None  # a required table: find_table_file raises when it is missing
    target = storage.join(out_dir, storage.basename(source))
    storage.makedirs(out_dir)
    storage.copy(source, target)
    snapshot = fingerprint.tables_fingerprint(out_dir, (contract.ITEMS,))
    if expected_fingerprint and snapshot != expected_fingerprint:
        raise contract.ContractError(
            data_dir, f"the catalogue changed since the run read it ({expected_fingerprint!r}"
            f", now {snapshot!r}); run again once it is complete")
    return {"items_file": target, "fingerprint": snapshot}


def stage_elasticsearch(items_dir: str, es_hosts: str, es_alias: str) -> str:
    """A new index generation of ``es_alias`` from the snapshot; its name."""
    from serving.sidecar.elasticsearch_backend import make_client, stage_index
    from serving.sidecar.filters import catalog_documents
    return stage_index(make_client(es_hosts), catalog_documents(items_dir), es_alias)["index"]


@tfx.dsl.components.component
def CatalogIndexer(
    catalog: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    pushed_model: tfx.dsl.components.InputArtifact[standard_artifacts.PushedModel],
    catalog_index: tfx.dsl.components.OutputArtifact[CatalogIndex],
    data_dir: tfx.dsl.components.Parameter[str],
    es_hosts: tfx.dsl.components.Parameter[str] = "",
    es_alias: tfx.dsl.components.Parameter[str] = "stars-items",
):
    """Snapshots the catalogue (and stages its Elasticsearch index) for a pushed model
    (``written`` = 0 when nothing was pushed)."""
    if not was_pushed(pushed_model):
        catalog_index.set_int_custom_property("written", 0)
        return
    catalog_index.set_int_custom_property("written", 1)
    expected = catalog.get_string_custom_property("data_fingerprint") \
        if catalog.has_custom_property("data_fingerprint") else ""
    snapshot = snapshot_catalog(data_dir, catalog_index.uri, expected)
    catalog_index.set_string_custom_property("items_file", snapshot["items_file"])
    catalog_index.set_string_custom_property("fingerprint", snapshot["fingerprint"])
    catalog_index.set_int_custom_property(
        "items", int(catalog.get_int_custom_property("num_items")))
    catalog_index.set_string_custom_property("es_alias", es_alias if es_hosts else "")
    catalog_index.set_string_custom_property(
        "es_index", stage_elasticsearch(catalog_index.uri, es_hosts, es_alias)
        if es_hosts else "")
