"""Pipeline configuration: everything the DSL needs, passed in (no globals)."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

PIPELINE_NAME = "stars"


@dataclasses.dataclass(frozen=True)
class VertexTraining:
    """The Trainer's training as a Vertex AI Training custom job (compiled pipelines only:
    ``stars pipeline compile --vertex-training-region ...``): ``replicas`` machines of
    ``machine_type``, each with ``accelerator_count`` x ``accelerator_type`` (Vertex's names,
    e.g. NVIDIA_TESLA_T4, NVIDIA_L4; none = CPUs only), running the pipeline image.  The
    Trainer picks its strategy from what the job gives it (``models.distribution``): the
    local GPUs of one machine, or TF_CONFIG's cluster when ``replicas`` > 1."""
    project: str
    region: str
    machine_type: str = "n1-standard-8"
    accelerator_type: str = ""
    accelerator_count: int = 0
    replicas: int = 1
    image: str = ""                           # the pipeline image; the compiler sets it

    def __post_init__(self):
        if not self.project or not self.region:
            raise ValueError("Vertex AI Training needs a project and a region "
                             "(--vertex-training-project, --vertex-training-region)")
        if self.replicas < 1:
            raise ValueError(f"--vertex-training-replicas must be >= 1, not {self.replicas}")
        if self.accelerator_count < 0 or bool(self.accelerator_type) != (
                self.accelerator_count > 0):
            raise ValueError("--vertex-training-accelerator-count needs "
                             "--vertex-training-accelerator-type, and a type a count >= 1")


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
    # Empty = Beam's defaults (DirectRunner, in memory, one worker). Any argument makes
    # every TFX Beam executor build a TFX sdist for remote workers unless a dependency
    # flag (--setup_file, --sdk_container_image, ...) is among them: 1.3 s and 52 MB of
    # /tmp per component run, never removed (tfx.utils.dependency_utils).
    beam_pipeline_args: Sequence[str] = ()
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
    # Compiled pipelines: the Trainer on Vertex AI Training (None: in its pipeline step).
    vertex_training: Optional[VertexTraining] = None

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
