"""The release steps' logic, outside TFX: the safe push, the pruning of unreleased
versions, the catalogue snapshot and the publication (the pipeline runs them in
tests/test_release_cycle.py)."""
import os

import numpy as np
import pytest

from components import catalog_indexer, model_pusher
from components.release_publisher import publish_release
from serving.batch.embedded_store import EmbeddedStore
from stars import release as releases
from stars.data import contract, fingerprint


def _saved_model(directory):
    os.makedirs(os.path.join(directory, "variables"))
    os.makedirs(os.path.join(directory, "assets"))
    for name, text in (("saved_model.pb", "graph"), ("variables/variables.index", "index"),
                       ("assets/items.txt", "a\nb\n")):
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)
    return str(directory)


def test_a_push_appears_whole_under_a_new_version(tmp_path):
    model = _saved_model(tmp_path / "model")
    base = str(tmp_path / "serving" / "stars")
    first = model_pusher.push(model, base)
    second = model_pusher.push(model, base)  # the same second: one above the highest
    assert int(os.path.basename(second)) == int(os.path.basename(first)) + 1
    assert sorted(os.listdir(base)) == sorted([os.path.basename(first),
                                               os.path.basename(second)])  # no .incoming-*
    assert open(os.path.join(second, "assets", "items.txt")).read() == "a\nb\n"
    assert model_pusher.next_version(base, now=10 ** 10) == 10 ** 10


def test_versions_pushed_but_never_released_are_pruned(tmp_path):
    base, root = tmp_path / "serving", str(tmp_path / "releases")
    for version in (100, 200, 300, 400):
        _saved_model(base / str(version))
    assert model_pusher.prune_unreleased(str(base), root) == []  # no release: nothing known
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\na,A\n")
    manifest = {"source": "pipeline", "model": {"name": "stars", "version": "200"},
                "user_embeddings": {"store": "embedded:x", "model_version": "200"},
                "catalogue": {"items": 1}, "index_quality": {}}
    releases.publish(root, manifest, str(items))
    assert model_pusher.prune_unreleased(str(base), root) == [300, 400]
    assert sorted(os.listdir(base)) == ["100", "200"]


def test_the_snapshot_is_the_file_the_run_read(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.csv").write_text("item_id,title\na,A\nb,B\n")
    read = fingerprint.tables_fingerprint(data, (contract.ITEMS,))
    snap = catalog_indexer.snapshot_catalog(str(data), str(tmp_path / "snap"), read)
    assert snap["fingerprint"] == read
    assert open(snap["items_file"]).read() == "item_id,title\na,A\nb,B\n"
    (data / "items.csv").write_text("item_id,title\na,A\nb,B changed\n")  # edited meanwhile
    with pytest.raises(contract.ContractError, match="changed since the run read it"):
        catalog_indexer.snapshot_catalog(str(data), str(tmp_path / "snap2"), read)


def test_publishing_commits_the_generation_then_writes_the_manifest(tmp_path):
    store_dir = tmp_path / "store"
    store = EmbeddedStore(store_dir, grace_seconds=0)
    live = store.begin_refresh(model_version="1")
    live.put("u", np.ones(4), np.ones(4))
    live.commit()
    staged = store.begin_refresh(model_version="2")
    staged.put("u", np.full(4, 2.0), np.full(4, 2.0))
    staged.close()
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\na,A\n")
    root = str(tmp_path / "releases")
    quality = {"scann_recall_at_k": 0.97, "k": 10, "queries": 8,
               "query_source": "user_embeddings", "threshold": 0.95}
    release = publish_release(
        root, source="catalog-refresh", model_name="stars",
        pushed_destination=str(tmp_path / "serving" / "stars" / "2"),
        trained_model="/trainer/model", store=f"embedded:{store_dir}",
        generation=staged.generation, users=1, items_file=str(items), items=1,
        fingerprint="items.csv:1:sha256=x", quality=quality)
    assert releases.current(root).release_id == release.release_id
    assert release.manifest["user_embeddings"] == {
        "store": f"embedded:{store_dir}", "generation": staged.generation, "users": 1,
        "model_version": "2"}
    assert release.manifest["index_quality"] == quality
    assert store.version() == staged.generation and store.get("u")[2] == "2"
    with pytest.raises(Exception, match="holds 1 users, expected 5"):  # nothing published
        more = store.begin_refresh(model_version="3")
        more.put("u", np.ones(4), np.ones(4))
        more.close()
        publish_release(root, source="pipeline", model_name="stars",
                        pushed_destination=str(tmp_path / "serving" / "stars" / "3"),
                        trained_model="/t", store=f"embedded:{store_dir}",
                        generation=more.generation, users=5, items_file=str(items),
                        items=1, fingerprint="f", quality=quality)
    assert releases.current(root).release_id == release.release_id
