"""Parity with the BabyLM 2025 evaluation pipeline by running its own code (issue 23): `bbl eval --pair-scoring
pipeline` and the pipeline's `sentence_zero_shot.run` / `reading.run` on the same random model and the same real
rows, every predictions.json equal item by item (benchmarks/pipeline_parity.py).

The pipeline is not on PyPI: its code is vendored at ../shared/vendor/evaluation-pipeline-2025 (Apache-2.0,
unchanged), which CI's slow tier runs against (`BBL_EVAL_PIPELINE` names another checkout); its Python
dependencies beyond bbl's (pandas, scipy, statsmodels, datasets, aiohttp) are in the `dev` extras. Skipped only
where neither the code nor ../shared/data is present. BLiMP's `bos` scoring is checked against lm-eval
(test_harness.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EVAL_PIPELINE, REAL_DATA, eval_pipeline_or_skip, save_random_model

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (REAL_DATA / "entity_tracking").is_dir(), reason="no ../shared/data")]


def test_bbl_eval_predicts_what_the_official_pipeline_predicts_item_by_item(prepared, tmp_path):
    eval_pipeline_or_skip()
    # 128 positions: the tiny tokenizer makes entity-tracking prompts longer, which a rotary model scores whole
    model = save_random_model("llama-tiny", prepared, tmp_path / "random-llama", seed=3)
    done = subprocess.run([sys.executable, "benchmarks/pipeline_parity.py", "scores", str(model), "--pipeline",
                           str(EVAL_PIPELINE), "--items", "5", "--data", str(REAL_DATA)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    rows = {r[0].strip(): (int(r[1]), int(r[2])) for r in rows[1:]}
    assert set(rows) == {"blimp_fast", "supplement_fast", "ewok_fast", "entity_tracking", "wug_adj_nominalization",
                         "reading"}
    assert all(n > 0 and same == n for n, same in rows.values()), rows
