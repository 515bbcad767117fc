"""`bbl pipeline --preset tiny` end to end on the real data, and a pipeline stopped between stages."""

import json

import pytest

from bbl.errors import BblError
from bbl.pipeline import load_pipeline_preset, run_pipeline

from .conftest import real_data_or_skip


@pytest.mark.slow
def test_tiny_pipeline_end_to_end_then_resume_skips_finished_stages(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbl.cache import open_cache

    data = real_data_or_skip()
    w = tmp_path / "run"
    logs = []
    run_pipeline("tiny", data, w, until="teacher-gpt2", log=logs.append)
    assert (w / "teachers" / "gpt2" / "bbl_run.json").is_file()
    assert not (w / "teachers" / "llama").exists()
    logs.clear()
    state = run_pipeline("tiny", data, w, log=logs.append)
    assert any("prepare: up to date, skipped" in line for line in logs)
    assert any("teacher-gpt2: up to date, skipped" in line for line in logs)
    assert any("teacher-llama: done" in line for line in logs)
    assert set(state["stages"]) == {"prepare", "teacher-gpt2", "teacher-llama", "dump-logits", "distill", "baseline",
                                    "eval"}
    for d in ("teachers/gpt2", "teachers/llama", "student/distilled", "student/baseline"):
        AutoModelForCausalLM.from_pretrained(w / d)
        AutoTokenizer.from_pretrained(w / d)
    assert open_cache(w / "cache" / "ensemble.zarr").top_k == 64
    results = json.loads((w / "results.json").read_text())
    assert {r["model"] for r in results} == {"gpt2", "llama", "distilled", "baseline", "ensemble(gpt2+llama)"}
    preset = load_pipeline_preset("tiny")
    n_files = len(list((data / "blimp_filtered").glob("*.jsonl")))
    for r in results:  # every paradigm scored on the preset's first pairs; overall = the mean over paradigms
        blimp = r["tasks"]["blimp"]
        assert blimp["pairs"] == preset.max_pairs * n_files and len(blimp["by_paradigm"]) == n_files
        assert blimp["overall"] == pytest.approx(sum(blimp["by_paradigm"].values()) / n_files)
    assert "| stage |" in (w / "results.md").read_text() and (w / "blimp.png").stat().st_size > 0
    by_model = {r["model"]: r for r in results}  # the budget line: words seen, with the teachers' for the student
    teachers = by_model["gpt2"]["words_seen"] + by_model["llama"]["words_seen"]
    assert by_model["distilled"]["words_seen_with_teachers"] == by_model["distilled"]["words_seen"] + teachers
    assert by_model["ensemble(gpt2+llama)"]["words_seen"] == teachers
    assert "| words seen incl. teachers (M) |" in (w / "results.md").read_text()
    logs.clear()
    run_pipeline("tiny", data, w, log=logs.append)
    assert sum("up to date, skipped" in line for line in logs) == len(state["stages"])


def test_pipeline_bad_input(tmp_path):
    with pytest.raises(BblError, match="babylm_10M"):
        run_pipeline("tiny", tmp_path, tmp_path / "w")
    data = real_data_or_skip()
    with pytest.raises(BblError, match="not a stage"):
        run_pipeline("tiny", data, tmp_path / "w", until="nope")


def test_a_stage_killed_after_it_finished_but_before_its_time_was_recorded_does_not_break_the_table():
    """Fault injection found it: SIGKILL between a stage's exit and the runner's state write leaves a record with a
    fingerprint and no time; the re-run skips the finished stage and must still print its table."""
    from bbl.pipeline import stage_table

    table = stage_table({"stages": {"prepare": {"fingerprint": "f"},
                                    "teacher": {"fingerprint": "g", "seconds": 12.5, "peak_rss_mib": 300.0}}})
    assert "| prepare | — | — |" in table and "| teacher | 12.5 | 300.0 |" in table
    assert "**12.5**" in table
