# bbl — the commands a newcomer needs. `make install && make demo`, then `make test`.
PY ?= python3
# Real BabyLM data: the official release dir holding babylm_10M/ and babylm_dev/ (default: the dev copy beside
# this repo, if it exists).
DATA ?= $(firstword $(wildcard ../shared/data) data)
WORKDIR ?= runs/demo

.PHONY: install test lint demo study

install:
	@# CPU machines get the CPU build of torch first, so the GPU range in pyproject.toml pulls nothing more.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e ".[dev]"

test:
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint:
	$(PY) -m ruff check .

demo:
	HF_HUB_OFFLINE=1 $(PY) -m bbl pipeline --preset cpu --data $(DATA) --workdir $(WORKDIR)

study:  # the paper's comparison at CPU scale over 3 seeds (`bbl study`; ~2 h on 2 cores, see README)
	HF_HUB_OFFLINE=1 $(PY) -m bbl pipeline --preset cpu-study --data $(DATA) --workdir runs/study
