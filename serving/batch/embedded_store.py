"""The default user-embedding store: a local directory, no server.

Layout of ``PATH``::

    CURRENT                 the live generation id (replaced by an atomic rename)
    <gen>.sqlite            one immutable SQLite file per committed generation:
                            emb(user_id TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID,
                            value = h_gen ++ h_next as float32; meta(key, value)
    <gen>.partial/          a refresh in progress: one SQLite shard per writer
                            (``shard-*.tmp`` while open, ``shard-*.sqlite`` once closed)

Commit merges the closed shards into ``<gen>.sqlite`` (written as a temporary file and
renamed), then renames a new pointer file over ``CURRENT`` — the one atomic step readers
observe.  Readers read ``CURRENT`` on every call and reopen when it changed; each call
answers from the one connection it resolved, so never from two generations.  Superseded
files are unlinked after the grace period; a reader still holding one keeps reading it
(POSIX keeps an unlinked open file alive) until its next call moves it on.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from serving.batch.store import (
    DEFAULT_GRACE_SECONDS,
    Entry,
    RefreshContext,
    StoreError,
    check_generation,
    encode,
    new_generation,
    read_entry,
    row_parts,
)
from stars.atomic_files import fsync_dir, fsync_file, write_atomically

POINTER = "CURRENT"
SUFFIX = ".sqlite"
PARTIAL = ".partial"
MODEL_VERSION_FILE = "model_version"  # in a partial generation's directory
_QUERY_CHUNK = 500
_SCHEMA = ("CREATE TABLE IF NOT EXISTS emb (user_id TEXT PRIMARY KEY, value BLOB NOT NULL) "
           "WITHOUT ROWID; CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")


def _open_readonly(path: Path) -> sqlite3.Connection:
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()  # opens the file now
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _open_writable(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(_SCHEMA)
    return conn


class EmbeddedShardWriter:
    """Writes one shard of a begun generation (a Beam bundle, a thread, ...)."""

    def __init__(self, root: Path, generation: str):
        self.root = Path(root)
        self.generation = check_generation(generation)
        self.partial_dir = self.root / f"{self.generation}{PARTIAL}"
        if not self.partial_dir.is_dir():
            raise StoreError(f"no refresh in progress for generation {generation!r} in "
                             f"{self.root} (never begun, committed or aborted)")
        self._name = f"shard-{uuid.uuid4().hex}"
        self._conn: Optional[sqlite3.Connection] = None
        self._dim: Optional[int] = None
        self._lock = threading.Lock()
        self.written = 0

    def put(self, user_id: str, h_gen, h_next, latest_items=()) -> None:
        self.put_many([(user_id, h_gen, h_next, latest_items)])

    def put_many(self, rows: Iterable[tuple]) -> int:
        encoded = []
        for row in rows:
            user_id, g, n, items = row_parts(row)
            if self._dim is None:
                self._dim = g.size
            elif g.size != self._dim:
                raise StoreError(f"user {user_id!r}: dimension {g.size}, expected {self._dim}")
            encoded.append((user_id, encode(g, n, items)))
        if not encoded:
            return 0
        with self._lock:
            if self._conn is None:
                if not self.partial_dir.is_dir():
                    raise StoreError(f"generation {self.generation!r} was aborted or committed")
                self._conn = _open_writable(self.partial_dir / f"{self._name}.tmp")
            self._conn.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)", encoded)
            self.written += len(encoded)
        return len(encoded)

    def close(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            conn, self._conn = self._conn, None
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(self._dim),))
            conn.commit()
            conn.close()
            tmp = self.partial_dir / f"{self._name}.tmp"
            os.replace(tmp, self.partial_dir / f"{self._name}{SUFFIX}")


class EmbeddedRefresh(EmbeddedShardWriter, RefreshContext):
    """The driver's refresh: its own shard plus commit/abort of the whole generation."""

    def __init__(self, store: "EmbeddedStore", generation: str, model_version: str = ""):
        self.store = store
        super().__init__(store.root, generation)
        self.model_version = model_version
        self._done = False

    def _shards(self) -> List[Path]:
        return sorted(self.partial_dir.glob(f"shard-*{SUFFIX}"))

    def count(self) -> int:
        total = 0
        for shard in self._shards():
            conn = _open_readonly(shard)
            try:
                total += conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
            finally:
                conn.close()
        return total + (self.written if self._conn is not None else 0)

    def _merge(self, target: Path) -> Tuple[int, Optional[int]]:
        conn = sqlite3.connect(str(target))
        try:
            conn.execute("PRAGMA journal_mode=OFF")
            conn.executescript(_SCHEMA)
            dim = None
            for shard in self._shards():
                conn.execute("ATTACH DATABASE ? AS s", (str(shard),))
                row = conn.execute("SELECT value FROM s.meta WHERE key = 'dim'").fetchone()
                shard_dim = int(row[0]) if row and row[0] not in (None, "None") else None
                if shard_dim is not None:
                    if dim is not None and shard_dim != dim:
                        raise StoreError(f"shards disagree on the dimension: {dim} vs {shard_dim}")
                    dim = shard_dim
                conn.execute("INSERT OR REPLACE INTO emb SELECT user_id, value FROM s.emb")
                conn.commit()
                conn.execute("DETACH DATABASE s")
            count = conn.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("generation", self.generation), ("dim", str(dim)), ("count", str(count)),
                ("model_version", self.model_version), ("committed_at", str(time.time()))])
            conn.commit()
        finally:
            conn.close()
        return count, dim

    def commit(self, expected_count: Optional[int] = None) -> str:
        if self._done:
            raise StoreError(f"generation {self.generation!r} already committed or aborted")
        self.close()
        try:
            live = self.store.version()
            if live is not None and live > self.generation:
                raise StoreError(f"a newer generation {live!r} is already live; refusing to "
                                 f"switch back to {self.generation!r}")
            merged = self.partial_dir / "merged.tmp"
            count, _ = self._merge(merged)
            if expected_count is not None and count != expected_count:
                raise StoreError(f"generation {self.generation!r} holds {count} users, "
                                 f"expected {expected_count}; not committed")
            fsync_file(merged)
            final = self.root / f"{self.generation}{SUFFIX}"
            os.replace(merged, final)
            fsync_dir(self.root)
            write_atomically(self.root / POINTER, (self.generation + "\n").encode())  # switch
        except BaseException:
            self.abort()
            raise
        self._done = True
        shutil.rmtree(self.partial_dir, ignore_errors=True)
        self.store._collect(self.generation)
        return self.generation

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        shutil.rmtree(self.partial_dir, ignore_errors=True)


class EmbeddedStore:
    """See the module docstring.  Thread-safe; one instance per process is enough."""

    def __init__(self, path, grace_seconds: float = DEFAULT_GRACE_SECONDS, create: bool = True):
        self.root = Path(path)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise StoreError(f"embedded store {self.root} does not exist")
        self.grace_seconds = float(grace_seconds)
        self._lock = threading.Lock()
        self._generation: Optional[str] = None
        self._model_version = ""
        self._conn: Optional[sqlite3.Connection] = None
        self._pinned_conn: Optional[Tuple[str, sqlite3.Connection, str]] = None

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.root)!r})"

    # -- reading -----------------------------------------------------------------------
    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._generation = None, None

    def _current(self):
        """(generation, connection) of the live generation; call with the lock held.

        The pointer is read on every call (one small read): a rename-replaced file
        cannot be told apart reliably by its stat alone (inode reuse, coarse mtimes)."""
        pointer = self.root / POINTER
        for _ in range(20):
            try:
                with open(pointer) as f:
                    generation = f.read().strip()
            except FileNotFoundError:
                self._drop()
                return None, None
            if self._conn is not None and generation == self._generation:
                return self._generation, self._conn
            try:
                conn = _open_readonly(self.root / f"{generation}{SUFFIX}")
            except (FileNotFoundError, sqlite3.Error):
                time.sleep(0.005)  # the pointer moved on while we looked: look again
                continue
            row = conn.execute("SELECT value FROM meta WHERE key = 'model_version'").fetchone()
            self._drop()
            self._conn, self._generation = conn, generation
            self._model_version = str(row[0]) if row and row[0] is not None else ""
            return generation, conn
        raise StoreError(f"cannot open the live generation of {self.root}")

    def version(self) -> Optional[str]:
        with self._lock:
            return self._current()[0]

    def _pinned(self, generation: str):
        """(generation, connection, model version) of a named committed generation; call
        with the lock held.  One pinned connection is kept (a release reads one)."""
        cached = self._pinned_conn
        if cached is not None and cached[0] == generation:
            return cached
        path = self.root / f"{check_generation(generation)}{SUFFIX}"
        try:
            conn = _open_readonly(path)
        except (FileNotFoundError, sqlite3.Error) as e:
            raise StoreError(f"generation {generation!r} is not in {self.root} (never "
                             f"committed, or collected): {e}") from e
        row = conn.execute("SELECT value FROM meta WHERE key = 'model_version'").fetchone()
        if cached is not None:
            cached[1].close()
        self._pinned_conn = (generation, conn, str(row[0]) if row and row[0] else "")
        return self._pinned_conn

    def get(self, user_id: str, generation: Optional[str] = None) -> Optional[Entry]:
        return self.get_many([user_id], generation)[0]

    def get_many(self, user_ids: Sequence[str],
                 generation: Optional[str] = None) -> List[Optional[Entry]]:
        ids = [str(u) for u in user_ids]
        with self._lock:
            if generation:
                generation, conn, model_version = self._pinned(generation)
            else:
                generation, conn = self._current()
                model_version = self._model_version
            if conn is None:
                return [None] * len(ids)
            found = {}
            for start in range(0, len(ids), _QUERY_CHUNK):
                chunk = ids[start:start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(conn.execute(
                    f"SELECT user_id, value FROM emb WHERE user_id IN ({marks})", chunk))
        out = []
        for user_id in ids:
            blob = found.get(user_id)
            out.append(None if blob is None else read_entry(blob, model_version))
        return out

    def stats(self) -> dict:
        with self._lock:
            generation, conn = self._current()
            if conn is None:
                return {"version": None, "count": 0, "dim": None, "model_version": None}
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        dim = meta.get("dim")
        return {"version": generation, "count": int(meta.get("count", 0)),
                "dim": int(dim) if dim not in (None, "None") else None,
                "model_version": meta.get("model_version") or ""}

    # -- writing -----------------------------------------------------------------------
    def begin_refresh(self, model_version: Optional[str] = None) -> EmbeddedRefresh:
        generation = new_generation()
        partial = self.root / f"{generation}{PARTIAL}"
        partial.mkdir(parents=True)
        # Kept with the shards, so another process can commit it (``resume_refresh``).
        (partial / MODEL_VERSION_FILE).write_text(str(model_version or ""))
        return EmbeddedRefresh(self, generation, str(model_version or ""))

    def resume_refresh(self, generation: str) -> EmbeddedRefresh:
        partial = self.root / f"{check_generation(generation)}{PARTIAL}"
        if not partial.is_dir():
            raise StoreError(f"no refresh in progress for generation {generation!r} in "
                             f"{self.root} (never begun, committed or aborted)")
        version_file = partial / MODEL_VERSION_FILE
        return EmbeddedRefresh(self, generation,
                               version_file.read_text() if version_file.is_file() else "")

    def shard_writer(self, generation: str) -> EmbeddedShardWriter:
        return EmbeddedShardWriter(self.root, generation)

    def generations(self) -> List[str]:
        names = set()
        for entry in self.root.iterdir():
            if entry.name.endswith(SUFFIX) and entry.is_file():
                names.add(entry.name[:-len(SUFFIX)])
            elif entry.name.endswith(PARTIAL) and entry.is_dir():
                names.add(entry.name[:-len(PARTIAL)])
        return sorted(names)

    def _collect(self, committed: str) -> None:
        """After the grace period: drop generations older than ``committed`` (superseded
        ones and abandoned refreshes), never the live one."""
        if self.grace_seconds > 0:
            time.sleep(self.grace_seconds)
        live = self.version()
        older = [g for g in self.generations()
                 if g < committed and (self.root / f"{g}{SUFFIX}").is_file()]
        previous = max(older) if older else None  # a release switching back still reads it
        for generation in self.generations():
            if generation >= committed or generation in (live, previous):
                continue
            (self.root / f"{generation}{SUFFIX}").unlink(missing_ok=True)
            shutil.rmtree(self.root / f"{generation}{PARTIAL}", ignore_errors=True)
        for stale in self.root.glob(f".{POINTER}.*.tmp"):
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
