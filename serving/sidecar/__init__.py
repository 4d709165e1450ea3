"""The recommendation sidecar: an HTTP JSON API in front of TF Serving.

Modules, one concept each: ``model_client`` (gRPC/REST clients of the served model),
``filters`` (request filters, the backend protocol, the embedded backend),
``elasticsearch_backend`` (mapping, indexing with alias swap, the filter query),
``user_store`` (the batch embeddings' protocol), ``popularity`` (fallback rankings),
``recommender`` (the flow), ``api`` (HTTP server, validation, metrics), ``cli``
(``stars serve sidecar`` / ``stars index items``).  The contract is ``openapi.yaml``.
"""
