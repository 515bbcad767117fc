# bbl — the commands a newcomer needs. `make install && make demo`, then `make test`.
PY ?= python3
# Real BabyLM data: the official release dir holding babylm_10M/ and babylm_dev/ (default: the dev copy beside
# this repo, if it exists).
DATA ?= $(firstword $(wildcard ../shared/data) data)
WORKDIR ?= runs/demo

.PHONY: install install-dev pip-base pipeline-env test test-slow test-all lint demo study

# What `make demo` and `make test` need: the package (editable), pytest, ruff and Optuna (`bbl sweep`).
install: pip-base
	$(PY) -m pip install -q -e ".[test]"

# What `make test-slow` adds: s3fs and a local moto server, the real lm-evaluation-harness, pyarrow, and what the
# BabyLM pipeline's vendored code imports (pandas, scipy, statsmodels) for the parity and collation tests.
install-dev: pip-base
	$(PY) -m pip install -q -e ".[dev]"

# The BabyLM pipeline's own environment for the slow tier's parity tests: a venv of its requirements.txt pins
# (transformers 4.51.3; torch: the one installed here) under ~/.cache/bbl (BBL_CACHE_DIR), built once (~1.5 min).
pipeline-env:
	$(PY) benchmarks/pipeline_env.py

pip-base:
	@# zarr 3 (the cache's format) needs Python >= 3.11: say so in one line instead of a resolver error.
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: bbl needs Python >= 3.11 (zarr 3); $(PY) is $$($(PY) -V 2>&1); make install PY=python3.11"; exit 1; }
	@# The pip that ships with Python (23.x) backtracks over the dev extras for 15+ min (aiobotocore's botocore pin vs
	@# boto3's) or into the yanked fsspec 2025.3.1; pip 26.3 resolves them directly: upgrade it first.
	$(PY) -m pip install -q -U pip
	@# CPU machines get the CPU build of torch first, so the GPU range in pyproject.toml pulls nothing more.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi

test:  # the fast tier: everything not marked slow
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" --durations=15

test-slow:  # the end-to-end tier (pytest exits 5 if it collects none: that is a failure here)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow --durations=15

test-all:  # both tiers in one run
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15

lint:
	$(PY) -m ruff check .

demo:
	HF_HUB_OFFLINE=1 $(PY) -m bbl pipeline --preset cpu --corpus $(DATA) --workdir $(WORKDIR)

study:  # the paper's comparison at CPU scale over 3 seeds (`bbl study`; ~2 h on 2 cores, see README)
	HF_HUB_OFFLINE=1 $(PY) -m bbl pipeline --preset cpu-study --corpus $(DATA) --workdir runs/study
