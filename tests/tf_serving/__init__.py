"""TF Serving conformance: test SavedModels (``models``) and REST cases (``rest_cases.json``)
ported from TensorFlow Serving's own tests, run by ``tests/test_tf_serving_conformance.py``."""
