"""Parity with the BabyLM 2025 evaluation pipeline by running its own code (issue 23): `bbl eval --pair-scoring
pipeline` and the pipeline's `sentence_zero_shot.run` / `reading.run` on the same random model and the same real
rows, every predictions.json equal item by item (benchmarks/pipeline_parity.py).

The pipeline is not on PyPI, so CI (package registries only) cannot fetch it: the test runs where
BBL_EVAL_PIPELINE names a checkout of github.com/babylm/evaluation-pipeline-2025 and pandas and statsmodels are
installed, and is skipped otherwise. BLiMP's scoring is also checked in CI against lm-eval (test_harness.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REAL_DATA, save_random_model

PIPELINE = os.environ.get("BBL_EVAL_PIPELINE")
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PIPELINE, reason="BBL_EVAL_PIPELINE (a checkout of babylm/evaluation-pipeline-"
                                                      "2025) not set; it is not on PyPI"),
              pytest.mark.skipif(not (REAL_DATA / "entity_tracking").is_dir(), reason="no ../shared/data")]


def test_bbl_eval_predicts_what_the_official_pipeline_predicts_item_by_item(prepared, tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("statsmodels")
    # 128 positions: the tiny tokenizer makes entity-tracking prompts longer, which a rotary model scores whole
    model = save_random_model("llama-tiny", prepared, tmp_path / "random-llama", seed=3)
    done = subprocess.run([sys.executable, "benchmarks/pipeline_parity.py", "scores", str(model), "--pipeline",
                           PIPELINE, "--items", "5", "--data", str(REAL_DATA)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    rows = {r[0].strip(): (int(r[1]), int(r[2])) for r in rows[1:]}
    assert set(rows) == {"blimp_fast", "supplement_fast", "ewok_fast", "entity_tracking", "wug_adj_nominalization",
                         "reading"}
    assert all(n > 0 and same == n for n, same in rows.values()), rows
