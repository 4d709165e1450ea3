"""Artefact storage on a local disk (the gs:// path is proven end to end in
test_pipeline_gcs_e2e): the same answers as Python's own file API."""
import gzip
import io
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stars import storage
from stars.data import contract


def test_binary_reader_reads_and_seeks_like_a_local_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    path = tmp_path / "blob"
    path.write_bytes(data)
    rng = np.random.default_rng(1)
    with storage.binary_reader(path) as ours, open(path, "rb") as python:
        assert ours.seekable() and not ours.closed
        for _ in range(50):
            whence = int(rng.integers(0, 3))
            offset = int(rng.integers(0, len(data))) - (len(data) if whence == 2 else 0)
            if whence == 1:
                offset = int(rng.integers(-python.tell(), len(data) - python.tell()))
            assert ours.seek(offset, whence) == python.seek(offset, whence)
            n = int(rng.integers(0, 2_000_000))
            assert ours.read(n) == python.read(n)
            assert ours.tell() == python.tell()
    assert ours.closed


def test_pyarrow_and_numpy_read_through_it(tmp_path):
    table = pa.table({"a": list(range(10_000)), "b": [str(i) for i in range(10_000)]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
    with storage.binary_reader(tmp_path / "t.parquet") as f:
        assert pq.ParquetFile(f).read().equals(table)
    buffer = io.BytesIO()
    np.savez(buffer, x=np.arange(5))
    storage.write_bytes(tmp_path / "x.npz", buffer.getvalue())
    with storage.binary_reader(tmp_path / "x.npz") as f, np.load(f) as loaded:
        np.testing.assert_array_equal(loaded["x"], np.arange(5))


def test_directories_text_and_json(tmp_path):
    target = tmp_path / "a" / "b" / "report.json"
    storage.write_json(target, {"z": 1, "a": [1.5]})
    assert storage.read_json(target) == {"z": 1, "a": [1.5]}
    assert storage.isfile(target) and storage.isdir(tmp_path / "a")
    assert not storage.isfile(tmp_path / "a")
    assert storage.listdir(tmp_path / "a") == ["b"]
    assert storage.size(target) == os.path.getsize(target)
    storage.write_text(tmp_path / "a" / "old.txt", "old")
    storage.write_text(tmp_path / "a" / "new.txt", "new")
    storage.rename(tmp_path / "a" / "new.txt", tmp_path / "a" / "old.txt")  # overwrites
    assert storage.read_text(tmp_path / "a" / "old.txt") == "new"
    assert storage.glob(tmp_path / "a" / "*.txt") == [str(tmp_path / "a" / "old.txt")]
    storage.rmtree(tmp_path / "a")
    storage.rmtree(tmp_path / "a")  # absent: nothing to do
    assert not storage.exists(tmp_path / "a")


def test_urls_and_local_paths():
    assert storage.is_remote("gs://bucket/x") and not storage.is_remote("/tmp/x")
    assert storage.join("gs://bucket/root", "Split-train", "a.gz") == (
        "gs://bucket/root/Split-train/a.gz")
    assert storage.basename("gs://bucket/root/items.csv") == "items.csv"
    assert storage.basename("gs://bucket/root/dir/") == "dir"


@pytest.mark.parametrize("name", ["interactions.csv", "interactions.csv.gz",
                                  "interactions.parquet"])
def test_tables_read_through_storage_in_every_format(tmp_path, name):
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"],
                          "event_type": ["view", "purchase"],
                          "timestamp": [1700000000, 1700000100]})
    contract.write_table(frame, tmp_path / name, contract.INTERACTIONS)
    if name.endswith(".gz"):
        assert gzip.decompress((tmp_path / name).read_bytes()).startswith(b"user_id")
    assert contract.find_table_file(tmp_path, contract.INTERACTIONS) == str(tmp_path / name)
    read = contract.read_whole_table(tmp_path / name, contract.INTERACTIONS)
    assert read["item_id"].tolist() == ["i1", "i2"]
    assert read["timestamp"].tolist() == [1700000000, 1700000100]
