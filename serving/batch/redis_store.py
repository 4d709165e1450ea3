"""User-embedding store on Redis.

Keys (``stars:ue`` is the default namespace)::

    stars:ue:current              the live generation id (switched with one SET in MULTI/EXEC)
    stars:ue:<gen>:<user_id>      h_gen ++ h_next as little-endian float32 bytes
    stars:ue:meta:<gen>           hash: state (writing | committed), model_version, dim,
                                  count, times
    stars:ue:generations          sorted set of every generation not yet removed

Writers put with pipelines (``SET`` in batches); commit counts the generation
(SCAN), then sets the pointer — the one atomic step readers observe — and, after the
grace period, removes older generations with SCAN + UNLINK in batches.

Readers resolve the pointer and fetch the values in one Lua script (``EVALSHA``), which
Redis runs atomically: a ``get_many`` can never mix generations, nor look up a
generation that was removed between two round trips.
"""
from __future__ import annotations

import threading
import time
from typing import Iterable, List, Optional, Sequence, overload

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
from stars.batching import batches

NAMESPACE = "stars:ue"
WRITE_BATCH = 1000
DELETE_BATCH = 500

# KEYS[1] = pointer key; ARGV[1] = key prefix ("stars:ue:"), ARGV[2] = a generation to
# read ("" = the live one), ARGV[3..] = user ids.  Returns false (no live generation),
# "missing" (the named generation is not committed) or
# {generation, model_version, value_or_false, ...}.
_GET_MANY = """
local gen = ARGV[2]
if gen == '' then
  gen = redis.call('GET', KEYS[1])
  if not gen then return false end
elseif redis.call('HGET', ARGV[1] .. 'meta:' .. gen, 'state') ~= 'committed' then
  return 'missing'
end
local model_version = redis.call('HGET', ARGV[1] .. 'meta:' .. gen, 'model_version') or ''
local prefix = ARGV[1] .. gen .. ':'
local out = {gen, model_version}
local n = #ARGV
local i = 3
while i <= n do
  local keys = {}
  local j = i
  while j <= n and j < i + 500 do
    keys[#keys + 1] = prefix .. ARGV[j]
    j = j + 1
  end
  local values = redis.call('MGET', unpack(keys))
  for k = 1, #keys do out[#out + 1] = values[k] end
  i = j
end
return out
"""


@overload
def _text(value: None) -> None: ...
@overload
def _text(value: bytes | str) -> str: ...
def _text(value) -> Optional[str]:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class _Keys:
    def __init__(self, namespace: str):
        self.namespace = namespace.rstrip(":")
        self.prefix = self.namespace + ":"
        self.pointer = self.prefix + "current"
        self.generations = self.prefix + "generations"

    def user(self, generation: str, user_id: str) -> str:
        return f"{self.prefix}{generation}:{user_id}"

    def pattern(self, generation: str) -> str:
        """SCAN MATCH pattern of a generation's user keys (glob characters escaped)."""
        literal = "".join("\\" + c if c in "*?[]\\^-" else c
                          for c in f"{self.prefix}{generation}:")
        return literal + "*"

    def meta(self, generation: str) -> str:
        return f"{self.prefix}meta:{generation}"


class RedisShardWriter:
    """Pipelined SETs into a begun generation (one per worker/bundle)."""

    def __init__(self, store: "RedisStore", generation: str, check: bool = True):
        self.store = store
        self.generation = check_generation(generation)
        if check and (_text(store.client.hget(store.keys.meta(self.generation), "state"))
                      != "writing"):
            raise StoreError(f"no refresh in progress for generation {generation!r} "
                             f"(never begun, committed or aborted)")
        self._pending: list = []
        self._dim: Optional[int] = None
        self._lock = threading.Lock()
        self.written = 0

    def put(self, user_id: str, h_gen, h_next, latest_items=()) -> None:
        self.put_many([(user_id, h_gen, h_next, latest_items)])

    def put_many(self, rows: Iterable[tuple]) -> int:
        n = 0
        with self._lock:
            for row in rows:
                user_id, g, h, items = row_parts(row)
                if self._dim is None:
                    self._dim = g.size
                elif g.size != self._dim:
                    raise StoreError(f"user {user_id!r}: dimension {g.size}, expected {self._dim}")
                self._pending.append((self.store.keys.user(self.generation, user_id),
                                      encode(g, h, items)))
                n += 1
                if len(self._pending) >= WRITE_BATCH:
                    self._flush()
        return n

    def _flush(self) -> None:
        if not self._pending:
            return
        pipe = self.store.client.pipeline(transaction=False)
        for key, value in self._pending:
            pipe.set(key, value)
        if self._dim is not None:
            pipe.hsetnx(self.store.keys.meta(self.generation), "dim", self._dim)
        pipe.execute()
        self.written += len(self._pending)
        self._pending = []

    def close(self) -> None:
        with self._lock:
            self._flush()


class RedisRefresh(RedisShardWriter, RefreshContext):
    def __init__(self, store: "RedisStore", generation: str):
        super().__init__(store, generation, check=False)
        self._done = False

    def count(self) -> int:
        self.close()
        return sum(len(batch) for batch in self.store._scan_batches(self.generation))

    def commit(self, expected_count: Optional[int] = None) -> str:
        if self._done:
            raise StoreError(f"generation {self.generation!r} already committed or aborted")
        client, keys = self.store.client, self.store.keys
        try:
            self.close()
            live = self.store.version()
            if live is not None and live > self.generation:
                raise StoreError(f"a newer generation {live!r} is already live; refusing to "
                                 f"switch back to {self.generation!r}")
            if _text(client.hget(keys.meta(self.generation), "state")) != "writing":
                raise StoreError(f"generation {self.generation!r} is no longer being written "
                                 f"(aborted or removed)")
            count = self.count()
            if expected_count is not None and count != expected_count:
                raise StoreError(f"generation {self.generation!r} holds {count} users, "
                                 f"expected {expected_count}; not committed")
            pipe = client.pipeline(transaction=True)   # MULTI ... EXEC
            pipe.set(keys.pointer, self.generation)    # the atomic switch
            pipe.hset(keys.meta(self.generation),
                      mapping={"state": "committed", "count": count,
                               "committed_at": time.time()})
            pipe.execute()
        except BaseException:
            self.abort()
            raise
        self._done = True
        self.store._collect(self.generation)
        return self.generation

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with self._lock:
            self._pending = []
        if self.store.version() != self.generation:
            self.store._delete_generation(self.generation)


class RedisStore:
    """See the module docstring.  Thread-safe (redis-py clients are)."""

    def __init__(self, client, namespace: str = NAMESPACE,
                 grace_seconds: float = DEFAULT_GRACE_SECONDS, url: Optional[str] = None):
        self.client = client
        self.keys = _Keys(namespace)
        self.grace_seconds = float(grace_seconds)
        self.url = url
        self._get_many = client.register_script(_GET_MANY)

    @classmethod
    def from_url(cls, url: str, namespace: str = NAMESPACE,
                 grace_seconds: float = DEFAULT_GRACE_SECONDS, **client_kwargs) -> "RedisStore":
        import redis
        client = redis.Redis.from_url(url, decode_responses=False, **client_kwargs)
        return cls(client, namespace=namespace, grace_seconds=grace_seconds, url=url)

    def __repr__(self) -> str:
        return f"RedisStore({self.url or self.client!r}, namespace={self.keys.namespace!r})"

    # -- reading -----------------------------------------------------------------------
    def version(self) -> Optional[str]:
        return _text(self.client.get(self.keys.pointer))

    def get(self, user_id: str, generation: Optional[str] = None) -> Optional[Entry]:
        return self.get_many([user_id], generation)[0]

    def get_many(self, user_ids: Sequence[str],
                 generation: Optional[str] = None) -> List[Optional[Entry]]:
        ids = [str(u) for u in user_ids]
        pinned = check_generation(generation) if generation else ""
        answer = self._get_many(keys=[self.keys.pointer],
                                args=[self.keys.prefix, pinned, *ids])
        if answer in (b"missing", "missing"):
            raise StoreError(f"generation {generation!r} is not committed in "
                             f"{self.keys.namespace!r} (never committed, or collected)")
        if not ids:
            return []
        if not answer:
            return [None] * len(ids)
        model_version = _text(answer[1]) or ""
        values = answer[2:]
        if len(values) != len(ids):
            raise StoreError(f"Redis answered {len(values)} values for {len(ids)} ids")
        return [None if v is None else read_entry(v, model_version) for v in values]

    def stats(self) -> dict:
        generation = self.version()
        if generation is None:
            return {"version": None, "count": 0, "dim": None, "model_version": None}
        meta = {_text(k): _text(v)
                for k, v in self.client.hgetall(self.keys.meta(generation)).items()}
        dim = meta.get("dim")
        return {"version": generation, "count": int(meta.get("count") or 0),
                "dim": int(dim) if dim else None, "model_version": meta.get("model_version") or ""}

    # -- writing -----------------------------------------------------------------------
    def begin_refresh(self, model_version: Optional[str] = None) -> RedisRefresh:
        generation = new_generation()
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(self.keys.generations, {generation: time.time()})
        pipe.hset(self.keys.meta(generation), mapping={
            "state": "writing", "started_at": time.time(),
            "model_version": str(model_version or "")})
        pipe.execute()
        return RedisRefresh(self, generation)

    def resume_refresh(self, generation: str) -> RedisRefresh:
        state = _text(self.client.hget(self.keys.meta(check_generation(generation)), "state"))
        if state != "writing":
            raise StoreError(f"no refresh in progress for generation {generation!r} "
                             f"(state {state!r})")
        return RedisRefresh(self, generation)

    def shard_writer(self, generation: str) -> RedisShardWriter:
        return RedisShardWriter(self, generation)

    def generations(self) -> List[str]:
        return sorted(_text(g) for g in self.client.zrange(self.keys.generations, 0, -1))

    def _scan_batches(self, generation: str):
        return batches(self.client.scan_iter(match=self.keys.pattern(generation), count=1000),
                       DELETE_BATCH)

    def _delete_generation(self, generation: str) -> int:
        removed = 0
        for batch in self._scan_batches(generation):
            removed += self.client.unlink(*batch)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.meta(generation))
        pipe.zrem(self.keys.generations, generation)
        pipe.execute()
        return removed

    def _collect(self, committed: str) -> None:
        """After the grace period: remove generations older than ``committed``."""
        if self.grace_seconds > 0:
            time.sleep(self.grace_seconds)
        live = self.version()
        older = [g for g in self.generations() if g < committed and _text(
            self.client.hget(self.keys.meta(g), "state")) == "committed"]
        previous = max(older) if older else None  # a release switching back still reads it
        for generation in self.generations():
            if generation < committed and generation not in (live, previous):
                self._delete_generation(generation)

    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
