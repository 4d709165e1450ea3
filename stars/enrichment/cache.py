"""Content-hash cache for item embeddings and tags.

Embedding a catalogue is the slow step of the data pipeline (hundreds of items
a second on CPU, or paid API calls), and most items do not change between
runs.  Entries are keyed by a hash of the encoder/tagger identity and the item
content, so a changed title or a new model misses the cache by construction.
Each run appends one shard per kind; shards are immutable, so a crashed run
never corrupts earlier ones.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Dict, Optional

import numpy as np


class EnrichmentCache:
    """Embeddings and tag lists by content hash, persisted under ``directory``."""

    def __init__(self, directory: Optional[str]):
        self.directory = directory
        self._vectors: Dict[str, np.ndarray] = {}
        self._tags: Dict[str, list] = {}
        self._new_vectors: Dict[str, np.ndarray] = {}
        self._new_tags: Dict[str, list] = {}
        if directory and os.path.isdir(directory):
            self._load(directory)

    def _load(self, directory: str) -> None:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.startswith("embeddings-") and name.endswith(".npz"):
                with np.load(path) as shard:
                    for key, vector in zip(shard["keys"], shard["vectors"]):
                        self._vectors[str(key)] = vector
            elif name.startswith("tags-") and name.endswith(".jsonl"):
                with open(path) as f:
                    for line in f:
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
        """Writes this run's new entries as fresh shards (atomic rename)."""
        if not self.directory or not (self._new_vectors or self._new_tags):
            return
        os.makedirs(self.directory, exist_ok=True)
        run = uuid.uuid4().hex[:12]
        if self._new_vectors:
            keys = list(self._new_vectors)
            tmp = os.path.join(self.directory, f".embeddings-{run}.npz")
            np.savez(tmp, keys=np.array(keys),
                     vectors=np.stack([self._new_vectors[k] for k in keys]))
            os.replace(tmp, os.path.join(self.directory, f"embeddings-{run}.npz"))
        if self._new_tags:
            tmp = os.path.join(self.directory, f".tags-{run}.jsonl")
            with open(tmp, "w") as f:
                for key, tags in self._new_tags.items():
                    f.write(json.dumps({"key": key, "tags": tags}) + "\n")
            os.replace(tmp, os.path.join(self.directory, f"tags-{run}.jsonl"))
        self._new_vectors.clear()
        self._new_tags.clear()
