"""Caching keyed on the data's content: fingerprints, the compiled switches, and the
local runner's reruns of the data half on unchanged and edited data."""
import hashlib
import io
import os
import shutil

import pytest

from pipeline.configs import PipelineConfig
from pipeline.pipeline import create_pipeline
from pipeline.runners import local
from stars.data import contract, fingerprint, synth

CATALOGUE_HALF = ("CatalogExampleGen", "ItemEnricher", "CatalogStatisticsGen",
                  "CatalogSchemaGen", "CatalogExampleValidator", "CatalogTransform")
INTERACTION_HALF = ("InteractionExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                    "Transform")
DATA_HALF = CATALOGUE_HALF + INTERACTION_HALF
TABLES = (contract.INTERACTIONS, contract.IMPRESSIONS, contract.USERS)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "data"
    synth.generate(path, "tiny", seed=7)
    return path


def _edit_line(path, line_no, old, new):
    """Replaces ``old`` by ``new`` in one line of a table, every other byte as it was."""
    lines = path.read_bytes().splitlines(keepends=True)
    old, new = old.encode(), new.encode()
    assert old in lines[line_no], lines[line_no]
    lines[line_no] = lines[line_no].replace(old, new, 1)
    path.write_bytes(b"".join(lines))


def test_fingerprint_follows_content_not_place_or_time(data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    os.utime(copy / "interactions.csv", (0, 0))
    assert (fingerprint.tables_fingerprint(copy, TABLES)
            == fingerprint.tables_fingerprint(data, TABLES))
    before = fingerprint.tables_fingerprint(copy, (contract.ITEMS,))
    title = (copy / "items.csv").read_text().splitlines()[5].split(",")[1]
    _edit_line(copy / "items.csv", 5, title, title[:-1] + chr(ord(title[-1]) ^ 1))  # same size
    after = fingerprint.tables_fingerprint(copy, (contract.ITEMS,))
    assert after != before and after.split(":")[:2] == before.split(":")[:2]
    with pytest.raises(contract.ContractError, match="changed while the pipeline ran"):
        fingerprint.check_unchanged(copy, (contract.ITEMS,), before)
    fingerprint.check_unchanged(copy, (contract.ITEMS,), after)


def test_fingerprint_names_each_table_present(data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    with_users = fingerprint.tables_fingerprint(copy, TABLES)
    assert [p.split(":")[0] for p in with_users.split(";")] == [
        "interactions.csv", "impressions.csv", "users.csv"]
    (copy / "users.csv").unlink()   # an optional table gone: a different input
    assert fingerprint.tables_fingerprint(copy, TABLES) == with_users.rsplit(";", 1)[0]
    (copy / "interactions.csv").unlink()
    with pytest.raises(contract.ContractError, match="required table 'interactions'"):
        fingerprint.tables_fingerprint(copy, TABLES)


def test_files_are_hashed_in_chunks(data, monkeypatch):
    monkeypatch.setattr(fingerprint, "CHUNK_BYTES", 1000)   # many reads, one digest
    path = data / "interactions.csv"
    assert os.path.getsize(path) > 10 * 1000
    assert fingerprint.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_only_the_data_half_is_cached_and_only_with_fingerprints(data, tmp_path):
    config = PipelineConfig(data_dir=str(data), pipeline_root=str(tmp_path / "root"),
                            encoder="hashing:64")
    assert not create_pipeline(config).enable_cache        # no fingerprints: no caching
    printed = local.fingerprinted(config)
    assert printed.catalog_fingerprint.startswith("items.csv:")
    assert printed.interactions_fingerprint.startswith("interactions.csv:")
    assert create_pipeline(printed).enable_cache
    ir = local.compile_with_data_half_cached(printed)
    cached = {n.pipeline_node.node_info.id: n.pipeline_node.execution_options.caching_options
              .enable_cache for n in ir.nodes}
    assert {node for node, on in cached.items() if on} == set(DATA_HALF)
    assert {"StarsTrainer", "IndexBuilder", "StarsEvaluator", "Pusher"} <= set(cached)
    gen = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}["CatalogExampleGen"]
    assert (gen.parameters.parameters["data_fingerprint"].field_value.string_value
            == printed.catalog_fingerprint)                # in the cache key
    off = local.fingerprinted(PipelineConfig(data_dir=str(data), pipeline_root="r",
                                             enable_cache=False))
    assert off.catalog_fingerprint == "" and not create_pipeline(off).enable_cache


def _latest_states(config):
    """Node id -> state (COMPLETE, CACHED, ...) of its newest execution in MLMD."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata
    store = metadata_store.MetadataStore(connection)
    states = {}
    for node in store.get_contexts_by_type("node"):
        newest = max(store.get_executions_by_context(node.id), key=lambda e: e.id)
        states[node.name.split(".", 1)[1]] = metadata_store_pb2.Execution.State.Name(
            newest.last_known_state)
    return states, store


@pytest.mark.e2e
def test_reruns_skip_exactly_the_work_whose_data_did_not_change(data, tmp_path):
    data = shutil.copytree(data, tmp_path / "data")   # edited below
    config = PipelineConfig(data_dir=str(data), pipeline_root=str(tmp_path / "root"),
                            encoder="hashing:64", train_model=False)

    def run():
        out = io.StringIO()
        local.run(config, out=out)
        words = [line.split("]", 1)[1].split() for line in out.getvalue().splitlines()]
        printed = {w[0]: w[-1] for w in words}          # "[ 3/11] Transform   cached"
        states, store = _latest_states(config)
        assert set(states) == set(DATA_HALF) == set(printed)
        for node, state in states.items():   # the console says what MLMD recorded
            assert (printed[node] == "cached") == (state == "CACHED"), (node, state, printed)
        return {node for node, state in states.items() if state == "CACHED"}, store

    assert run()[0] == set()                               # first run: everything runs
    assert run()[0] == set(DATA_HALF)                      # unchanged data: all cached

    # One event's type in the log: the catalogue half is still valid.
    _edit_line(data / "interactions.csv", 1, ",view,", ",purchase,")
    assert run()[0] == set(CATALOGUE_HALF)

    # One item's title: the catalogue half reruns, and so does the interaction half --
    # the InteractionExampleGen takes the catalogue as an input artifact.
    title = (data / "items.csv").read_text().splitlines()[3].split(",")[1]
    _edit_line(data / "items.csv", 3, title, title + " Deluxe")
    cached, store = run()
    assert cached == set()
    recorded = [a.custom_properties["data_fingerprint"].string_value for a in sorted(
        store.get_artifacts_by_type("Examples"), key=lambda a: a.id)
        if "/CatalogExampleGen/" in a.uri]   # one per real execution: first run, this one
    assert len(recorded) == 2 and recorded[0] != recorded[1]
    assert recorded[1] == fingerprint.tables_fingerprint(data, (contract.ITEMS,))

    # The edit undone: the key is the content, so the earlier executions are reused.
    _edit_line(data / "items.csv", 3, title + " Deluxe", title)
    assert run()[0] == set(DATA_HALF)
