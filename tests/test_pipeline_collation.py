"""A default `bbl eval --suite fast` output tree is what the BabyLM 2025 pipeline's collation reads: its own
`collate_preds` code (vendored at ../shared/vendor/evaluation-pipeline-2025, or BBL_EVAL_PIPELINE) checks every
task's predictions.json by path and size, and its fast-eval metrics computed from bbl's predictions equal bbl's
numbers. The data is the real fast_eval subsets from ../shared/data, laid out as the pipeline's
evaluation_data/fast_eval/ (links, nothing copied; entity_tracking_fast is the full regular file, whose subsets
have the sizes the collation expects of the fast set)."""

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import REAL_DATA, eval_pipeline_or_skip
from .helpers import run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (REAL_DATA / "blimp_fast").is_dir(), reason="no ../shared/data")]


def _fast_eval(root: Path) -> Path:
    fast = root / "evaluation_data" / "fast_eval"
    fast.mkdir(parents=True)
    for name in ("blimp_fast", "supplement_fast", "ewok_fast", "wug_adj_nominalization", "reading"):
        (fast / name).symlink_to(REAL_DATA / name)
    (fast / "entity_tracking_fast").mkdir()
    (fast / "entity_tracking_fast" / "regular.jsonl").symlink_to(REAL_DATA / "entity_tracking" / "regular.jsonl")
    return fast


def _micro_llama(prepared: Path, out: Path) -> Path:
    """A random 1-layer LLaMA of width 8 with the prepared tokenizer: the whole fast suite (~45k sentences) has to be
    scored for the collation's size checks, and this is ~3x cheaper than llama-tiny on 2 CPU cores."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from bbl.data.prepared import PreparedData

    data = PreparedData(prepared)
    torch.manual_seed(3)
    LlamaForCausalLM(LlamaConfig(vocab_size=data.vocab_size, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=1, max_position_embeddings=128)).save_pretrained(out)
    AutoTokenizer.from_pretrained(data.tokenizer_dir).save_pretrained(out)
    return out


def test_default_fast_suite_output_is_what_the_pipelines_collation_loads(prepared, tmp_path):
    eval_pipeline_or_skip()
    from evaluation_pipeline import collate_preds as cp

    fast = _fast_eval(tmp_path)
    model = _micro_llama(prepared, tmp_path / "random-llama")
    r = run(["eval", model, "--suite", "fast", "--eval-data", fast.parent, "--device", "cpu", "--batch-size", "128",
             "--out", tmp_path / "out"])
    assert r.exit_code == 0, r.output
    ours = json.loads((tmp_path / "out" / "results.json").read_text())[0]["tasks"]

    args = SimpleNamespace(results_dir=tmp_path / "out" / "pipeline", model_path_or_name=model, backend="causal",
                           fast=True, fast_eval_dir=fast, track="strict-small", multimodal=False)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cp._check_validity_of_dir(args, "main", fast=True)
    # every path the fast collation opens exists, but wug_past's (no data anywhere: not scored by bbl)
    assert printed.getvalue().splitlines() == ["The wug past tense data is missing!"]

    # get_revision_fast_eval_metrics' own loads, size checks and metrics, task by task (wug_past left out)
    main = args.results_dir / model.stem / "main" / "zero_shot" / "causal"
    loaded = {key: cp._load_results(main / rel / "predictions.json") for key, rel in (
        ("blimp", "blimp/blimp_fast"), ("blimp_supplement", "blimp/supplement_fast"), ("ewok", "ewok/ewok_fast"),
        ("entity_tracking", "entity_tracking/entity_tracking_fast"), ("wug_adj", "wug_adj/wug_adj_nominalization"),
        ("reading", "reading"))}
    with contextlib.redirect_stdout(printed):
        assert all(cp._check_size(key, results, True) for key, results in loaded.items()), printed.getvalue()
    blimp = cp._calculate_target_results(loaded["blimp"], "blimp", fast / "blimp_fast")
    assert blimp == pytest.approx(ours["blimp"]["by_paradigm"], abs=1e-12) and len(blimp) == 67
    supplement = cp._calculate_target_results(loaded["blimp_supplement"], "blimp_supplement", fast / "supplement_fast")
    assert supplement == pytest.approx(ours["supplement"]["by_file"], abs=1e-12)
    et = cp._calculate_target_et_results(loaded["entity_tracking"], fast / "entity_tracking_fast")
    assert et == pytest.approx(ours["entity_tracking"]["by_subset"], abs=1e-12)
    wug = cp._calculate_wugs_results(loaded["wug_adj"], "wug_adj_nominalization", fast / "wug_adj_nominalization")
    assert round(float(wug["wug_adj"]), 6) == round(ours["wug_adj"]["spearman"], 6)
    reading = cp._calculate_reading_results(loaded["reading"], fast / "reading" / "reading_data.csv")
    assert reading["rt"] == pytest.approx(ours["reading"]["eye_tracking"], rel=1e-6, abs=1e-9)
    assert reading["spr"] == pytest.approx(ours["reading"]["self_paced_reading"], rel=1e-6, abs=1e-9)
    assert set(loaded["ewok"]) == set(ours["ewok"]["by_domain"])  # EWoK's metrics need its plain text: not here
