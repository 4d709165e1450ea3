"""Content-hash cache for item embeddings and tags.

Embedding a catalogue is the slow step of the data pipeline (hundreds of items
a second on CPU, or paid API calls), and most items do not change between
runs.  Entries are keyed by a hash of the encoder/tagger identity and the item
content, so a changed title or a new model misses the cache by construction.
Each run appends one shard per kind; shards are immutable, so a crashed run
never corrupts earlier ones.
"""
from __future__ import annotations

import io
import json
import uuid
from typing import Dict, Optional

import numpy as np

from stars import storage


class EnrichmentCache:
    """Embeddings and tag lists by content hash, persisted under ``directory``."""

    def __init__(self, directory: Optional[str]):
        self.directory = directory
        self._vectors: Dict[str, np.ndarray] = {}
        self._tags: Dict[str, list] = {}
        self._new_vectors: Dict[str, np.ndarray] = {}
        self._new_tags: Dict[str, list] = {}
        if directory and storage.isdir(directory):
            self._load(directory)

    def _load(self, directory: str) -> None:
        for name in sorted(storage.listdir(directory)):
            path = storage.join(directory, name)
            if name.startswith("embeddings-") and name.endswith(".npz"):
                with storage.binary_reader(path) as f, np.load(f) as shard:
                    for key, vector in zip(shard["keys"], shard["vectors"]):
                        self._vectors[str(key)] = vector
            elif name.startswith("tags-") and name.endswith(".jsonl"):
                with storage.open(path) as text:
                    for line in text:
                        record = json.loads(line)
                        self._tags[record["key"]] = record["tags"]

    def vector(self, key: str) -> Optional[np.ndarray]:
        return self._vectors.get(key)

    def tags(self, key: str) -> Optional[list]:
        return self._tags.get(key)

    def put_vector(self, key: str, vector: np.ndarray) -> None:
        self._vectors[key] = self._new_vectors[key] = np.asarray(vector, np.float32)

    def put_tags(self, key: str, tags: list) -> None:
        self._tags[key] = self._new_tags[key] = list(tags)

    def flush(self) -> None:
        """Writes this run's new entries as fresh shards: written under a hidden name,
        then renamed (atomic on a local disk; on an object store, readers skip the
        hidden name and the run id keeps two writers apart)."""
        if not self.directory or not (self._new_vectors or self._new_tags):
            return
        storage.makedirs(self.directory)
        run = uuid.uuid4().hex[:12]
        if self._new_vectors:
            keys = list(self._new_vectors)
            buffer = io.BytesIO()
            np.savez(buffer, keys=np.array(keys),
                     vectors=np.stack([self._new_vectors[k] for k in keys]))
            _publish(self.directory, f"embeddings-{run}.npz", buffer.getvalue())
        if self._new_tags:
            lines = "".join(json.dumps({"key": key, "tags": tags}) + "\n"
                            for key, tags in self._new_tags.items())
            _publish(self.directory, f"tags-{run}.jsonl", lines.encode())
        self._new_vectors.clear()
        self._new_tags.clear()


def _publish(directory: str, name: str, data: bytes) -> None:
    hidden = storage.join(directory, "." + name)
    storage.write_bytes(hidden, data)
    storage.rename(hidden, storage.join(directory, name))
