"""Offline evaluation of retrieval: the engine of ``stars eval`` (``offline``) and the
pipeline Evaluator's support (``requests``, ``tfma_evaluation``, imported lazily because
it pulls in TFMA/Beam).  The ranking metrics it shares with the Trainer and the sidecar
live below it, in ``stars.retrieval_metrics`` and ``stars.interleaving``."""
