"""Pipeline configuration: everything the DSL needs, passed in (no globals)."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

PIPELINE_NAME = "stars"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    data_dir: str
    pipeline_root: str
    pipeline_name: str = PIPELINE_NAME
    metadata_path: Optional[str] = None       # MLMD SQLite; default under the root
    encoder: str = "minilm"                   # see stars.enrichment.encoders.make_encoder
    tagger: str = "keyword"                   # see stars.enrichment.taggers.make_tagger
    tag_vocabulary: str = ""                  # JSON file; empty = built-in vocabulary
    enrichment_cache_dir: Optional[str] = None  # default: <root>/enrichment_cache
    split_mode: str = "time"                  # time | leave_one_out
    eval_fraction: float = 0.1
    max_history: int = 200
    # Caching (pipeline.pipeline.create_pipeline): only with both fingerprints, which the
    # local runner computes at run time (stars.data.fingerprint); empty = not cached.
    enable_cache: bool = True
    catalog_fingerprint: str = ""             # CatalogExampleGen's tables, by content
    interactions_fingerprint: str = ""        # InteractionExampleGen's tables, by content
    beam_pipeline_args: Sequence[str] = ("--direct_running_mode=in_memory",
                                         "--direct_num_workers=1")
    # Model half: Trainer -> IndexBuilder -> Evaluator -> Pusher.
    train_model: bool = True                  # False: the data half only
    model_preset: str = "cpu"                 # models.config.PRESETS
    model_variant: str = "stars"              # models.config.ABLATIONS
    model_overrides: str = ""                 # JSON of ModelConfig fields
    top_k: int = 100                          # ids per answer (the sidecar over-fetches)
    serving_index: str = "scann"              # scann | brute_force: which export is pushed
    serving_model_dir: Optional[str] = None   # TF Serving model base path; default <root>/serving
    model_name: str = "stars"
    min_recall_vs_popularity: float = 1.0     # blessing: Recall@10 >= ratio x popularity
    max_regression: float = 0.02              # blessing: Recall@10 >= last blessed - this
    min_index_recall: float = 0.95            # blessing: served index recall@K vs brute force
    # Release (stars.release): after the Pusher, the user embeddings of the pushed version
    # and the catalogue snapshot (+ Elasticsearch index) are published with it as one.
    release_dir: Optional[str] = None         # default <root>/releases
    user_store: Optional[str] = None          # embedded:PATH | redis://...; default embedded
    es_hosts: str = ""                        # with hosts: the release swaps es_alias
    es_alias: str = "stars-items"

    @property
    def metadata(self) -> str:
        return self.metadata_path or os.path.join(self.pipeline_root, "metadata.sqlite")

    @property
    def serving_base(self) -> str:
        return self.serving_model_dir or os.path.join(self.pipeline_root, "serving")

    @property
    def releases(self) -> str:
        return self.release_dir or os.path.join(self.pipeline_root, "releases")

    @property
    def store(self) -> str:
        return self.user_store or f"embedded:{os.path.join(self.pipeline_root, 'user_store')}"

    @property
    def cache_dir(self) -> str:
        return self.enrichment_cache_dir or os.path.join(self.pipeline_root, "enrichment_cache")
