"""Parity with the BabyLM 2025 evaluation pipeline by running its own code (issue 23): `bbl eval --pair-scoring
pipeline` and the pipeline's `sentence_zero_shot.run` / `reading.run` on the same random model and the same real
rows, every predictions.json equal item by item (benchmarks/pipeline_parity.py), with the pipeline's code run under
bbl's libraries and in its own environment (issue 44: a venv of its pins, transformers 4.51.3; `pipeline_python`),
where the model dirs bbl writes (a model, a trained teacher, its exported `main` and `chck_*` revisions, an old dir
after `bbl fix-tokenizer`) must also load and tokenize every text as under bbl's transformers.

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


@pytest.mark.parametrize("env", ["bbl", "pipeline"])
def test_bbl_eval_predicts_what_the_official_pipeline_predicts_item_by_item(prepared, tmp_path, env, request):
    eval_pipeline_or_skip()
    python = sys.executable if env == "bbl" else str(request.getfixturevalue("pipeline_python"))
    # 128 positions: the tiny tokenizer makes entity-tracking prompts longer, which a rotary model scores whole
    model = save_random_model("llama-tiny", prepared, tmp_path / "random-llama", seed=3)
    done = subprocess.run([sys.executable, "benchmarks/pipeline_parity.py", "scores", str(model), "--pipeline",
                           str(EVAL_PIPELINE), "--items", "5", "--data", str(REAL_DATA), "--python", python], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    rows = {r[0].strip(): (int(r[1]), int(r[2])) for r in rows[1:]}
    assert set(rows) == {"blimp_fast", "supplement_fast", "ewok_fast", "entity_tracking", "wug_adj_nominalization",
                         "reading"}
    assert all(n > 0 and same == n for n, same in rows.values()), rows


def test_model_dirs_bbl_writes_load_and_tokenize_alike_in_the_pipelines_env(prepared, pipeline_python, tmp_path):
    from click.testing import CliRunner
    from transformers import AutoTokenizer

    from bbl.cli import main
    from bbl.config import load_config
    from bbl.data.prepared import PreparedData
    from bbl.train.batching import load_windows
    from bbl.train.ledger import plan_words
    from bbl.train.recipe import train_lm

    model = save_random_model("gpt2-tiny", prepared, tmp_path / "model", seed=4)
    overrides = ["training.max_steps=4", "training.max_train_windows=32", "training.eval_every_steps=2"]
    plan = plan_words(load_config("llama-tiny", overrides), PreparedData(prepared),
                      load_windows(load_config("llama-tiny", overrides), PreparedData(prepared))[0])
    teacher = train_lm(load_config("llama-tiny", [*overrides, f"training.word_checkpoints=[{int(plan.words(2))}]"]),
                       prepared, tmp_path / "teacher", log=lambda *_: None)
    r = CliRunner().invoke(main, ["export", str(teacher), "--out", str(tmp_path / "repo")])
    assert r.exit_code == 0, r.output
    (chck,) = (teacher / "word_checkpoints").iterdir()
    revisions = []
    for branch in ("main", chck.name):
        revisions.append(tmp_path / f"revision-{branch}")
        subprocess.run(["git", "clone", "-q", "-b", branch, str(tmp_path / "repo"), str(revisions[-1])], check=True)
    old = tmp_path / "old"  # as an older bbl wrote it: transformers 5's own tokenizer config, then the fix-up
    save_random_model("llama-tiny", prepared, old, seed=5)
    AutoTokenizer.from_pretrained(str(prepared / "tokenizer")).save_pretrained(str(old))
    assert "rewrote" in CliRunner().invoke(main, ["fix-tokenizer", str(old)]).output

    dirs = [model, teacher, chck, *revisions, old]
    done = subprocess.run([sys.executable, "benchmarks/pipeline_parity.py", "tokens", *map(str, dirs), "--python",
                           str(pipeline_python), "--items", "3", "--data", str(REAL_DATA)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "vs 4.51.3" in done.stdout
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| /")]
    assert len(rows) == len(dirs) and all(int(n) > 100 and same.strip() == n.strip() for _, n, same, _ in rows), rows
