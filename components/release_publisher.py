"""ReleasePublisher: the last step -- the pushed model version, the user embeddings it
computed and the catalogue it indexes become one release (``stars.release``).

Only a pushed (blessed) model is published, and the blessing already holds the index
quality gate (ScaNN recall@K against brute force on real user embeddings, see
``StarsEvaluator``); its figure and threshold go into the manifest.  Publishing order:
the user-embedding generation is committed (its embeddings are pinned to the new
version, which the model server already loads beside the old one), the Elasticsearch
alias is swapped to the staged index, and the manifest is written last, atomically --
the sidecar switches when it sees the manifest and the model server serves its version.
"""
import os

from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.artifacts import TRAINED_MODEL, CatalogIndex, Release, UserEmbeddings
from components.user_embedding_gen import was_pushed


def index_quality(served_model_uri: str, threshold: float) -> dict:
    """The served model's index report (written by the IndexBuilder or the catalogue
    refresh beside its SavedModel) with the gate's threshold."""
    from models.index_quality import read_report
    report = read_report(served_model_uri)
    return {"scann_recall_at_k": report.get("scann_recall_at_k"), "k": report.get("k"),
            "queries": report.get("queries"), "query_source": report.get("query_source"),
            "threshold": threshold}


def publish_release(release_dir: str, *, source: str, model_name: str, pushed_destination: str,
                    trained_model: str, store: str, generation: str, users: int,
                    items_file: str, items: int, fingerprint: str, quality: dict,
                    es_hosts: str = "", es_alias: str = "", es_index: str = ""):
    """Commits the embeddings, swaps the alias, writes the manifest (in that order)."""
    from serving.batch.stores import open_store
    from stars import release as releases
    version = os.path.basename(pushed_destination)
    target = open_store(store)
    try:
        target.resume_refresh(generation).commit(expected_count=users)
    finally:
        target.close()
    elasticsearch = None
    if es_index:
        from serving.sidecar.elasticsearch_backend import make_client, swap_alias
        swap_alias(make_client(es_hosts), es_alias, es_index)
        elasticsearch = {"alias": es_alias, "index": es_index}
    manifest = {
        "source": source,
        "model": {"name": model_name, "base_path": os.path.dirname(pushed_destination),
                  "version": version, "trained_model": trained_model},
        "user_embeddings": {"store": store, "generation": generation, "users": users,
                            "model_version": version},
        "catalogue": {"items": items, "fingerprint": fingerprint,
                      "elasticsearch": elasticsearch},
        "index_quality": quality}
    return releases.publish(release_dir, manifest, items_file)


@tfx.dsl.components.component
def ReleasePublisher(
    served_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    pushed_model: tfx.dsl.components.InputArtifact[standard_artifacts.PushedModel],
    user_embeddings: tfx.dsl.components.InputArtifact[UserEmbeddings],
    catalog_index: tfx.dsl.components.InputArtifact[CatalogIndex],
    release: tfx.dsl.components.OutputArtifact[Release],
    release_dir: tfx.dsl.components.Parameter[str],
    model_name: tfx.dsl.components.Parameter[str] = "stars",
    source: tfx.dsl.components.Parameter[str] = "pipeline",
    min_index_recall: tfx.dsl.components.Parameter[float] = 0.95,
    es_hosts: tfx.dsl.components.Parameter[str] = "",
):
    """Publishes the release of a pushed model (``published`` = 0 when nothing was pushed)."""
    if not was_pushed(pushed_model):
        release.set_int_custom_property("published", 0)
        return
    published = publish_release(
        release_dir, source=source, model_name=model_name,
        pushed_destination=pushed_model.get_string_custom_property("pushed_destination"),
        trained_model=served_model.get_string_custom_property(TRAINED_MODEL),
        store=user_embeddings.get_string_custom_property("store"),
        generation=user_embeddings.get_string_custom_property("generation"),
        users=int(user_embeddings.get_int_custom_property("users")),
        items_file=catalog_index.get_string_custom_property("items_file"),
        items=int(catalog_index.get_int_custom_property("items")),
        fingerprint=catalog_index.get_string_custom_property("fingerprint"),
        quality=index_quality(served_model.uri, min_index_recall),
        es_hosts=es_hosts, es_alias=catalog_index.get_string_custom_property("es_alias"),
        es_index=catalog_index.get_string_custom_property("es_index"))
    release.set_int_custom_property("published", 1)
    release.set_string_custom_property("release", published.release_id)
    release.set_string_custom_property("release_dir", release_dir)
    release.set_string_custom_property("model_version", published.model_version)
