"""Releases: the manifest and its atomic publication (stars.release), and the sidecar
following the live release (serving.sidecar.release) -- switching only once the model
server serves the new release's version, keeping the previous release until then."""
import json
import os

import pytest

from serving.sidecar.recommender import Recommender, RecommenderConfig
from serving.sidecar.release import ReleaseFollower
from stars import atomic_files
from stars import release as releases
from tests.test_sidecar_doubles import ModelClientTestDouble


def _catalog_file(directory, item_ids):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "items.csv")
    with open(path, "w") as f:
        f.write("item_id,title,category_path,subclass,stock,regions\n")
        for i in item_ids:
            f.write(f"{i},Item {i},A>B,s,5,us\n")
    return path


def _manifest(version, items=3, recall=0.99):
    return {"source": "pipeline",
            "model": {"name": "stars", "base_path": "/models/stars", "version": str(version),
                      "trained_model": "/root/StarsTrainer/model/1/Format-Serving"},
            "user_embeddings": {"store": "embedded:/tmp/s", "generation": "g1", "users": 10,
                                "model_version": str(version)},
            "catalogue": {"items": items, "fingerprint": "items.csv:1:sha256=ab",
                          "elasticsearch": None},
            "index_quality": {"scann_recall_at_k": recall, "k": 10, "queries": 20,
                              "query_source": "user_embeddings", "threshold": 0.95}}


def test_publish_makes_a_complete_release_live(tmp_path):
    root = str(tmp_path / "releases")
    assert releases.current(root) is None
    first = releases.publish(root, _manifest(7), _catalog_file(tmp_path / "c1", ["a", "b"]),
                             release_id="r1")
    assert releases.current_id(root) == "r1"
    live = releases.current(root)
    assert live.model_version == "7" and live.manifest["previous"] is None
    assert os.listdir(live.catalog_dir) == ["items.csv"]
    assert live.trained_model.endswith("Format-Serving")
    second = releases.publish(root, _manifest(8), _catalog_file(tmp_path / "c2", ["a"]),
                              release_id="r2")
    assert releases.current(root).release_id == "r2"
    assert second.manifest["previous"] == "r1"
    # the previous release stays readable (rollback: write its id into CURRENT)
    assert releases.load(root, first.release_id).model_version == "7"
    # nothing but releases and the pointer: staging directories were renamed away
    assert sorted(os.listdir(root)) == ["CURRENT", "r1", "r2"]


def test_publish_refuses_an_incomplete_manifest_and_leaves_the_live_release(tmp_path):
    root = str(tmp_path / "releases")
    items = _catalog_file(tmp_path / "c", ["a"])
    releases.publish(root, _manifest(7), items, release_id="r1")
    broken = _manifest(8)
    del broken["user_embeddings"]["model_version"]
    with pytest.raises(releases.ReleaseError, match="user_embeddings.model_version"):
        releases.publish(root, broken, items, release_id="r2")
    not_a_version = _manifest("latest")
    with pytest.raises(releases.ReleaseError, match="integer"):
        releases.publish(root, not_a_version, items, release_id="r3")
    assert releases.current_id(root) == "r1"
    assert sorted(os.listdir(root)) == ["CURRENT", "r1"]
    with pytest.raises(releases.ReleaseError, match="already exists"):
        releases.publish(root, _manifest(9), items, release_id="r1")


def test_write_atomically_replaces_whole_files(tmp_path):
    path = str(tmp_path / "CURRENT")
    atomic_files.write_atomically(path, b"one\n")
    atomic_files.write_atomically(path, b"two\n")
    assert open(path).read() == "two\n"
    assert os.listdir(tmp_path) == ["CURRENT"]  # no temporary file left behind


def test_a_corrupt_manifest_is_an_error_naming_the_release(tmp_path):
    root = tmp_path / "releases"
    (root / "r1").mkdir(parents=True)
    (root / "r1" / "manifest.json").write_text("{not json")
    (root / "CURRENT").write_text("r1\n")
    with pytest.raises(releases.ReleaseError, match="r1"):
        releases.current(str(root))


# ---------------------------------------------------------------------- the sidecar side
def _follower(tmp_path, model):
    from serving.sidecar.filters import EmbeddedFilterBackend
    from serving.sidecar.popularity import Popularity
    root = str(tmp_path / "releases")
    releases.publish(root, _manifest(7), _catalog_file(tmp_path / "c1", ["a", "b", "gone"]),
                     release_id="r1")
    start = EmbeddedFilterBackend([])
    recommender = Recommender(model, start, Popularity(start), None, RecommenderConfig())
    follower = ReleaseFollower(recommender, model, root, refresh_s=0.05, timeout_s=1.0)
    return root, recommender, follower


def test_the_first_release_is_served_at_start(tmp_path):
    model = ModelClientTestDouble(versions=("7",))
    _, recommender, follower = _follower(tmp_path, model)
    follower.load_first()
    assert model.release_version == "7"
    assert set(recommender.snapshot.ids) == {"a", "b", "gone"}
    assert recommender.filter_backend is recommender.snapshot  # embedded filters follow
    assert follower.refresh()  # then the release model's own ranking replaces file order
    assert recommender.popularity.source == "release r1 (model version 7)"


def test_a_new_release_waits_for_its_model_version_then_switches_whole(tmp_path):
    model = ModelClientTestDouble(versions=("7",))
    root, recommender, follower = _follower(tmp_path, model)
    follower.load_first()
    assert follower.refresh()
    releases.publish(root, _manifest(8), _catalog_file(tmp_path / "c2", ["a", "b", "new"]),
                     release_id="r2")
    # version 8 is not served yet: release 1 keeps answering, every part of it
    assert not follower.refresh()
    assert "8" in follower.error
    assert model.release_version == "7" and "gone" in recommender.snapshot.ids
    assert follower.status()["release"] == "r1" and follower.status()["live"] == "r2"
    model.versions.add("8")  # the model server has loaded it
    assert follower.refresh()
    assert model.release_version == "8"
    assert set(recommender.snapshot.ids) == {"a", "b", "new"}
    assert recommender.filter_backend is recommender.snapshot
    assert recommender.popularity.source == "release r2 (model version 8)"
    assert follower.status() == {"release": "r2", "model_version": "8", "live": "r2",
                                 "error": None}


def test_an_unreadable_new_release_keeps_the_served_one(tmp_path):
    model = ModelClientTestDouble(versions=("7", "8"))
    root, recommender, follower = _follower(tmp_path, model)
    follower.load_first()
    os.makedirs(os.path.join(root, "r2"))
    atomic_files.write_atomically(os.path.join(root, "CURRENT"), b"r2\n")
    assert not follower.refresh()
    assert model.release_version == "7" and follower.served.release_id == "r1"


def test_the_sidecar_cli_serves_a_release_directory(tmp_path):
    import argparse

    from serving.sidecar.cli import add_serve_sidecar_parser, build_app
    root = str(tmp_path / "releases")
    releases.publish(root, _manifest(7), _catalog_file(tmp_path / "c1", ["a", "b"]),
                     release_id="r1")
    parser = argparse.ArgumentParser()
    add_serve_sidecar_parser(parser.add_subparsers())
    args = parser.parse_args(["sidecar", "--release-dir", root, "--model-url",
                              "http://127.0.0.1:9", "--release-poll-ms", "60000"])
    app = build_app(args)
    try:
        assert app.recommender.model.release_version == "7"
        assert set(app.recommender.snapshot.ids) == {"a", "b"}
        ready = json.loads(app.readyz()[2])
        assert ready["checks"]["release"]["release"] == "r1"
        assert ready["status"] == "not_ready"  # no model server on port 9
    finally:
        app.popularity_source.stop()
    with pytest.raises(ValueError, match="no release yet"):
        build_app(parser.parse_args(["sidecar", "--release-dir", str(tmp_path / "none")]))
    with pytest.raises(ValueError, match="--release-dir or --data-dir|give --release-dir"):
        build_app(parser.parse_args(["sidecar"]))
