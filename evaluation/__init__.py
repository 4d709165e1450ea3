"""Offline evaluation: the engine of ``stars eval`` (``offline``, over ``protocol``,
``splits``, ``ranking``, ``training``, ``baselines``, ``results``, ``report``) and the review
notebook's helpers (``review``).  It trains and scores ``models``, so it sits above them;
what the pipeline's Evaluator and the serving jobs share with it lives below:
``components.tfma_evaluation``, ``stars.serving_requests``, ``stars.retrieval_metrics``,
``stars.interleaving``."""
