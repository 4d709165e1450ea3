"""User-embedding store semantics, for both backends (embedded SQLite and a real Redis).

Redis tests start their own ``redis-server`` on loopback (see ``redis_url``); when the
binary is missing they FAIL (CI installs it) unless STARS_ALLOW_NO_REDIS=1.
"""

import threading
import time

import numpy as np
import pytest

from serving.batch.embedded_store import EmbeddedStore
from serving.batch.store import StoreError, UserEmbeddingReader, UserEmbeddingStore, decode, encode
from serving.batch.stores import open_store
from tests.redis_server import start_or_skip

DIM = 4


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throw-away redis-server on 127.0.0.1 (no persistence); its URL."""
    server = start_or_skip(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(params=["embedded", "redis"])
def make_store(request, tmp_path):
    """A factory of store instances sharing one backing store (as separate processes would)."""
    opened = []
    if request.param == "embedded":
        def make(grace=0.0):
            s = EmbeddedStore(tmp_path / "store", grace_seconds=grace)
            opened.append(s)
            return s
    else:
        url = request.getfixturevalue("redis_url")
        namespace = f"test:{request.node.name}:{time.time_ns()}"
        from serving.batch.redis_store import RedisStore

        def make(grace=0.0):
            s = RedisStore.from_url(url, namespace=namespace, grace_seconds=grace)
            opened.append(s)
            return s
    make.backend = request.param
    yield make
    for s in opened:
        s.close()


def vec(*values, dim=DIM):
    return np.full(dim, values[0], np.float32) if len(values) == 1 else np.array(values, np.float32)


def fill(store, users, value, dim=DIM, model_version=None):
    writer = store.begin_refresh(model_version=model_version)
    for i, user in enumerate(users):
        writer.put(user, vec(value + i, dim=dim), vec(-(value + i), dim=dim))
    return writer


def test_protocols_and_empty_store(make_store):
    s = make_store()
    assert isinstance(s, UserEmbeddingReader) and isinstance(s, UserEmbeddingStore)
    assert s.version() is None
    assert s.get("u1") is None
    assert s.get_many(["u1", "u2"]) == [None, None]
    assert s.get_many([]) == []


def test_put_commit_get(make_store):
    s = make_store()
    writer = s.begin_refresh(model_version="17")
    writer.put("u1", [1, 2, 3, 4], np.array([5, 6, 7, 8], np.float64))
    writer.put_many([("u:2/ü *?", vec(0.5), vec(-0.5))])
    assert s.version() is None and s.get("u1") is None   # not visible before commit
    version = writer.commit()
    assert version == writer.generation == s.version()
    h_gen, h_next, model_version, latest = s.get("u1")
    assert model_version == "17" and h_gen.dtype == np.float32 and h_next.dtype == np.float32
    assert latest == ()
    np.testing.assert_array_equal(h_gen, [1, 2, 3, 4])
    np.testing.assert_array_equal(h_next, [5, 6, 7, 8])
    many = s.get_many(["nobody", "u:2/ü *?", "u1"])
    assert many[0] is None
    np.testing.assert_array_equal(many[1][0], vec(0.5))
    assert [m[2] for m in many[1:]] == ["17", "17"]
    # a reader opened elsewhere (another process/instance) sees the same
    other = make_store()
    np.testing.assert_array_equal(other.get("u1")[1], [5, 6, 7, 8])
    assert other.stats() == {"version": version, "count": 2, "dim": 4, "model_version": "17"}
    assert fill(s, ["u1"], 1).commit() == s.version() != version   # no model version given
    assert other.get("u1")[2] == "" and other.get("u1")[0][0] == 1


def test_latest_items_are_stored_beside_the_embeddings(make_store):
    """The batch job's latest item ids come back with the vectors, in order; a row without
    them (the older three-value layout) reads as no items."""
    s = make_store()
    writer = s.begin_refresh(model_version="3")
    writer.put("u1", vec(1.0), vec(2.0), ("p1", "p:2 ü", "p1"))
    writer.put_many([("u2", vec(3.0), vec(4.0), []), ("u3", vec(5.0), vec(6.0))])
    writer.commit()
    u1, u2, u3 = s.get_many(["u1", "u2", "u3"])
    assert u1[2:] == ("3", ("p1", "p:2 ü", "p1")) and u2[3] == () and u3[3] == ()
    np.testing.assert_array_equal(u1[1], vec(2.0))
    np.testing.assert_array_equal(u3[0], vec(5.0))
    bad = s.begin_refresh()
    with pytest.raises(StoreError, match="non-empty strings"):
        bad.put("u4", vec(1.0), vec(1.0), ("p1", ""))
    with pytest.raises(StoreError, match="finite"):
        bad.put("u5", vec(float("nan")), vec(1.0))
    with pytest.raises(StoreError, match="user_id, h_gen, h_next"):
        bad.put_many([("u6", vec(1.0))])
    bad.abort()


def test_both_value_layouts_decode():
    g, n = np.arange(3, dtype=np.float32), -np.arange(3, dtype=np.float32)
    old = np.concatenate([g, n]).astype("<f4").tobytes()   # written before latest items
    assert encode(g, n) == old
    for blob, items in ((old, ()), (encode(g, n, ["a", "b"]), ("a", "b"))):
        got_g, got_n, got_items = decode(blob)
        np.testing.assert_array_equal(got_g, g)
        np.testing.assert_array_equal(got_n, n)
        assert got_items == items
    with pytest.raises(StoreError, match="corrupt"):
        decode(encode(g, n, ["a"])[:-3])


def test_refresh_switches_atomically_and_cleans_up(make_store):
    s = make_store()
    users = [f"u{i}" for i in range(50)]
    first = fill(s, users, 100, model_version="1").commit()
    writer = fill(s, users[:30], 200, model_version="2")   # a refresh in progress ...
    writer.put("new-user", vec(7.0), vec(8.0))
    reader = make_store()
    for answer in reader.get_many(users + ["new-user"]):   # ... is invisible
        assert answer is None or answer[2] == "1"
    assert reader.get("u3")[0][0] == 103 and reader.get("new-user") is None
    assert sorted(s.generations()) == sorted([first, writer.generation])
    second = writer.commit()
    assert second != first and reader.version() == second
    answers = reader.get_many(users + ["new-user"])
    assert all(a is None for a in answers[30:50])       # the new generation lacks them
    assert answers[3][0][0] == 203 and answers[-1][0][0] == 7.0
    assert {a[2] for a in answers if a is not None} == {"2"}
    # the previous generation is kept: a reader pinned to the last release still reads it
    assert s.generations() == [first, second]
    assert reader.get("u40", first)[0][0] == 140 and reader.get("u40", first)[2] == "1"
    assert reader.get("u40") is None
    third = fill(s, users[:5], 300, model_version="3").commit()
    assert s.generations() == [second, third]           # older ones are removed
    with pytest.raises(StoreError, match="not"):
        make_store().get("u3", first)  # (an open reader keeps what it has open)
    assert reader.get("u3", second)[0][0] == 203 and reader.get("u3")[0][0] == 303
    if make_store.backend == "redis":
        keys = list(s.client.scan_iter(match=s.keys.prefix + "*", count=1000))
        assert not [k for k in keys if first.encode() in k], "old generation keys left"
        raw = s.client.get(s.keys.user(second, "u3"))
        assert raw == np.concatenate([vec(203.0), vec(-203.0)]).astype("<f4").tobytes()
        assert s.client.get(s.keys.pointer) == third.encode()


def test_abort_keeps_the_old_generation(make_store):
    s = make_store()
    first = fill(s, ["a", "b"], 1).commit()
    writer = fill(s, ["a", "b", "c"], 50)
    writer.abort()
    assert s.version() == first and s.get("c") is None and s.get("a")[0][0] == 1
    assert s.generations() == [first]
    with pytest.raises(StoreError):
        s.shard_writer(writer.generation)                # aborted: nothing to write into
    if make_store.backend == "redis":
        assert not list(s.client.scan_iter(match=s.keys.pattern(writer.generation)))


def test_a_generation_written_in_one_process_is_committed_from_another(make_store):
    """A release writes the user embeddings first (the batch job, uncommitted) and commits
    them when it is published: another store instance resumes the generation by id."""
    writer_side, publisher_side = make_store(), make_store()
    live = fill(writer_side, ["a"], 1, model_version="7").commit()
    staged = fill(writer_side, ["a", "b"], 50, model_version="8")
    staged.close()
    assert publisher_side.version() == live and publisher_side.get("b") is None
    resumed = publisher_side.resume_refresh(staged.generation)
    with pytest.raises(StoreError, match="holds 2 users"):
        publisher_side.resume_refresh(staged.generation).commit(expected_count=3)
    with pytest.raises(StoreError, match="no refresh in progress"):
        publisher_side.resume_refresh(staged.generation)  # the refused commit aborted it
    staged = fill(writer_side, ["a", "b"], 50, model_version="8")
    staged.close()
    resumed = publisher_side.resume_refresh(staged.generation)
    assert resumed.commit(expected_count=2) == staged.generation == writer_side.version()
    assert writer_side.get("b")[0][0] == 51 and writer_side.get("b")[2] == "8"
    with pytest.raises(StoreError, match="no refresh in progress"):
        publisher_side.resume_refresh(staged.generation)  # committed: nothing to resume


def test_context_manager_commits_or_aborts(make_store):
    s = make_store()
    with s.begin_refresh() as writer:
        writer.put("a", vec(1.0), vec(2.0))
    assert s.version() == writer.generation
    with pytest.raises(RuntimeError):
        with s.begin_refresh() as failing:
            failing.put("a", vec(9.0), vec(9.0))
            raise RuntimeError("job failed")
    assert s.version() == writer.generation and s.get("a")[0][0] == 1.0
    assert s.generations() == [writer.generation]
    assert failing.generation not in s.generations()


def test_shard_writers_expected_count_and_dimension(make_store):
    s = make_store()
    old = fill(s, ["x"], 1).commit()
    writer = s.begin_refresh()
    workers = [make_store().shard_writer(writer.generation) for _ in range(3)]
    for w, worker in enumerate(workers):
        worker.put_many((f"w{w}-{i}", vec(w), vec(i)) for i in range(10))
        worker.close()
    writer.put("driver", vec(5.0), vec(5.0))
    with pytest.raises(StoreError, match="dimension"):
        writer.put("bad", vec(1.0, dim=3), vec(1.0, dim=3))
    assert writer.count() == 31
    with pytest.raises(StoreError, match="expected 40"):
        writer.commit(expected_count=40)                  # refused and aborted
    assert s.version() == old and s.generations() == [old]
    writer = s.begin_refresh()
    worker = make_store().shard_writer(writer.generation)
    worker.put_many((f"u{i}", vec(i), vec(i)) for i in range(5))
    worker.close()
    assert writer.commit(expected_count=5) == s.version()
    assert s.get("u4")[0][0] == 4 and s.get("x") is None
    with pytest.raises(StoreError):
        writer.commit()


def test_readers_only_ever_see_complete_generations(make_store):
    """Reader threads hammer get_many while refreshes are written in slices and committed:
    every answer is one whole generation (all users, all values of that generation)."""
    users = [f"user-{i}" for i in range(120)]
    writer_store = make_store(grace=0.05)
    fill(writer_store, users, 0, model_version="v0").commit()
    value_of = {"v0": 0}
    stop = threading.Event()
    seen, errors = [], []

    def hammer():
        reader = make_store()
        try:
            while not stop.is_set():
                answers = reader.get_many(users)
                versions = {a[2] if a else None for a in answers}
                if None in versions or len(versions) != 1:
                    errors.append(f"mixed or partial answer: {versions}")
                    return
                version = versions.pop()
                bases = {float(a[0][0]) - i for i, a in enumerate(answers)}
                nexts = {float(a[1][0]) + i for i, a in enumerate(answers)}
                if len(bases) != 1 or nexts != {-b for b in bases}:
                    errors.append(f"values from several generations in {version}")
                    return
                seen.append((version, bases.pop()))
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for k in range(1, 4):
            writer = writer_store.begin_refresh(model_version=f"v{k}")
            for start in range(0, len(users), 30):
                writer.put_many((u, vec(1000 * k + start + i), vec(-(1000 * k + start + i)))
                                for i, u in enumerate(users[start:start + 30]))
                time.sleep(0.02)
            if k == 2:
                writer.abort()
                continue
            writer.commit()
            value_of[f"v{k}"] = 1000 * k
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors[:3]
    assert seen, "readers read nothing"
    for version, base in seen:
        assert value_of[version] == base, "a version answered another generation's values"
    order = [value_of[v] for v, _ in seen]
    assert set(order) >= {0, 3000} and 2000 not in order
    assert len(writer_store.generations()) == 2  # the live one and the previous one


def test_embedded_reader_survives_removal_of_its_generation(tmp_path):
    """A reader that resolved a generation keeps answering from it (unlinked files stay
    readable) and moves to the new one on its next call."""
    root = tmp_path / "store"
    writer_store = EmbeddedStore(root, grace_seconds=0)
    first = fill(writer_store, ["a"], 1, model_version="1").commit()
    reader = EmbeddedStore(root)
    assert reader.get("a")[2] == "1" and reader.version() == first
    second = fill(writer_store, ["a"], 2, model_version="2").commit()
    third = fill(writer_store, ["a"], 3, model_version="3").commit()
    assert not (root / f"{first}.sqlite").exists()  # (the previous one, second, is kept)
    assert reader._conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0] == 1
    assert reader.get("a")[0][0] == 3 and reader.get("a")[2] == "3"
    assert reader.version() == third
    assert {p.name for p in root.iterdir()} == {"CURRENT", f"{second}.sqlite",
                                                 f"{third}.sqlite"}


def test_grace_period_delays_cleanup(tmp_path):
    s = EmbeddedStore(tmp_path / "store", grace_seconds=1.0)
    first = fill(s, ["a"], 1).commit()
    writer = fill(s, ["a"], 2)
    done = threading.Thread(target=writer.commit)
    done.start()
    deadline = time.time() + 10
    while s.version() != writer.generation and time.time() < deadline:
        time.sleep(0.01)
    assert s.version() == writer.generation
    assert first in s.generations()                       # switched, not yet removed
    done.join()
    assert s.generations() == [first, writer.generation]  # the previous one is kept
    third = fill(s, ["a"], 3)
    third.commit()
    assert s.generations() == [writer.generation, third.generation]


def test_open_store_specs(tmp_path, redis_url):
    embedded = open_store(f"embedded:{tmp_path / 'e'}", grace_seconds=0)
    assert isinstance(embedded, EmbeddedStore) and embedded.grace_seconds == 0
    redis_store = open_store(redis_url)
    assert redis_store.version() is None or isinstance(redis_store.version(), str)
    redis_store.close()
    for bad in ("sqlite:/x", "embedded:", "/tmp/x"):
        with pytest.raises(ValueError):
            open_store(bad)
