"""Batch serving jobs: user embeddings precomputed into a key-value store.

* :mod:`serving.batch.store` — the store protocol (``UserEmbeddingStore``);
* :mod:`serving.batch.stores` — ``open_store``: the backend a spec names;
* :mod:`serving.batch.embedded_store` — the default, a directory of SQLite generations;
* :mod:`serving.batch.redis_store` — Redis;
* :mod:`serving.batch.job` — the Beam job behind ``stars batch user-embeddings``;
* :mod:`serving.batch.cli` — its command line (``add_batch_parser``).
"""
