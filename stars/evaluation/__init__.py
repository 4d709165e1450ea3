"""Offline evaluation of retrieval: numpy metrics over materialised top-K lists
(`retrieval_metrics`) and TensorFlow Model Analysis output, slicing and
blessing (`tfma_evaluation`, imported lazily because it pulls in TFMA/Beam)."""

from stars.evaluation.retrieval_metrics import (  # noqa: F401
    DEFAULT_KS,
    coverage_at_k,
    interleave_round_robin,
    per_example_metrics,
    summarise,
    top_k_from_scores,
)
