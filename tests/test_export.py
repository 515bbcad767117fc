"""`bbl export`: a run as a git repo in the Hub's layout (main = the final model, a chck_* branch per word
checkpoint) whose cards say what the ledger says; the fast test renders a card alone, the slow one trains a tiny
run with word checkpoints, exports it, clones the repo and loads three revisions."""

import json
import subprocess

import pytest

from bbl.hub.card import Revision, parse_card, render_card

RUN = {
    "bbl_version": "0.1.0", "kind": "student_distilled", "architecture": "llama", "parameters": 517200,
    "global_step": 8, "complete": True, "distill_mode": "cached", "cache": "/x/cache/ensemble.zarr",
    "cache_temperature": 2.0, "cache_top_k": 64, "cache_targets": "topk", "cache_num_samples": 0, "alpha": 0.5,
    "temperature": 2.0, "kd_variant": "topk_tail", "reduction": "token_mean",
    "ledger": {"words_seen": 1_480_000, "tokens_seen": 2048, "windows_seen": 64, "epochs": 1.0,
               "corpus_windows": 64, "corpus_words": 1_480_000,
               "teachers": [{"path": "/x/teachers/gpt2", "words_seen": 9_000_000, "tokens_seen": 2048, "epochs": 6.0},
                            {"path": "/x/hub/SmolLM", "name": "HuggingFaceTB/SmolLM-135M", "external": True,
                             "source": "pretrained, not trained by bbl", "words_seen": None}],
               "words_seen_with_teachers": 10_480_000, "external_teachers": ["HuggingFaceTB/SmolLM-135M"],
               "word_checkpoints": ["chck_1M"]},
}


def test_card_metadata_and_text_follow_the_ledger():
    results = {"model": "student", "paths": ["/x/student"], "tasks": {
        "blimp": {"overall": 0.6123, "dataset": "blimp_fast", "suite": "fast", "scoring": "pipeline"},
        "wug_adj": {"spearman": 0.25, "dataset": "wug_adj_nominalization", "suite": "fast"},
        "ewok": {"overall": 0.51, "dataset": "ewok_fast", "suite": "full", "fallback": "ewok_filtered"}}}
    revisions = [Revision("chck_1M", 1_000_321, 5), Revision("main", 1_480_000, 8, results)]
    meta, body = parse_card(render_card(RUN, name="student", revisions=revisions, repo_id="lab/student",
                                        license="apache-2.0"))
    assert meta["license"] == "apache-2.0" and "knowledge-distillation" in meta["tags"]
    assert meta["bbl"]["words_seen"] == 1_480_000 and meta["bbl"]["words_seen_with_teachers"] == 10_480_000
    metrics = {r["metrics"][0]["name"]: r["metrics"][0]["value"] for r in meta["model-index"][0]["results"]}
    assert metrics["BLiMP (mean over paradigms)"] == 61.23 and metrics["WUG adj. nominalization (Spearman rho)"] == 0.25
    assert "| the final model and its bbl-trained teachers | 10,480,000 (10.48M) |" in body
    assert "| gpt2 | trained by bbl | 9,000,000 (9.00M) | 6 |" in body
    assert "HuggingFaceTB/SmolLM-135M" in body and "not counted" in body
    assert "| cache top-k | 64 |" in body and "| cache temperature | 2.0 |" in body
    assert "| `chck_1M` | 1,000,321 (1.00M) | 5 |" in body
    assert "fell back from ewok_filtered" in body and "61.2%" in body
    assert 'from_pretrained("lab/student", revision="main")' in body

    meta, body = parse_card(render_card(RUN, name="student", revisions=revisions, revision="chck_1M"))
    assert meta["bbl"]["revision"] == "chck_1M" and meta["bbl"]["words_seen"] == 1_000_321
    assert meta["bbl"]["words_seen_with_teachers"] == 1_000_321 + 9_000_000  # the external teacher not counted
    assert "| this revision and the bbl-trained teachers | 10,000,321 (10.00M) |" in body
    assert "license" not in meta and "model-index" not in meta  # no results for this revision, no license given
    assert 'revision="chck_1M"' in body and "ORG/NAME" in body


def test_export_refuses_a_non_empty_destination_in_one_line(tmp_path):
    from click.testing import CliRunner

    from bbl.cli import main

    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    (run / "bbl_run.json").write_text(json.dumps(RUN))
    (run / "config.json").write_text("{}")
    (run / "tokenizer.json").write_text("{}")
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(run / "model.safetensors"))  # weights that load: the dest is what fails
    r = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "dest")])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "is not a bbl export repo" in r.output
    assert (tmp_path / "dest" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_export_clones_to_main_and_checkpoint_branches_equal_to_the_run(prepared, tmp_path):
    import torch
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM

    from bbl.cli import main
    from bbl.config import load_config
    from bbl.data.prepared import PreparedData
    from bbl.train.batching import load_windows
    from bbl.train.ledger import plan_words
    from bbl.train.recipe import train_lm

    overrides = ["training.max_steps=8", "training.max_train_windows=64", "training.eval_every_steps=4"]
    cfg = load_config("llama-tiny", overrides)
    data = PreparedData(prepared)
    plan = plan_words(cfg, data, load_windows(cfg, data)[0])
    targets = [int(plan.words(3)), int(plan.words(6)) - 1]
    run = train_lm(load_config("llama-tiny", [*overrides, f"training.word_checkpoints={targets}"]), prepared,
                   tmp_path / "run", log=lambda *_: None)
    checkpoints = sorted((run / "word_checkpoints").iterdir(),
                         key=lambda p: json.loads((p / "bbl_checkpoint.json").read_text())["words_seen"])
    assert len(checkpoints) == 2

    r = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "repo"), "--repo-id", "lab/tiny"])
    assert r.exit_code == 0, r.output
    branches = [c.name for c in checkpoints]
    assert f"git push origin {' '.join(branches)} main" in r.output
    assert all(f"hf upload lab/tiny . . --revision {b}" in r.output for b in branches)

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "repo"), str(clone)], check=True)
    ledger = json.loads((run / "bbl_run.json").read_text())["ledger"]
    for branch, source in [("main", run), *zip(branches, checkpoints, strict=True)]:
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", branch], check=True)
        assert not (clone / "checkpoints").exists() and not (clone / "training_args.bin").exists()
        got = AutoModelForCausalLM.from_pretrained(str(clone)).state_dict()
        want = AutoModelForCausalLM.from_pretrained(str(source)).state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        meta, body = parse_card((clone / "README.md").read_text())
        assert meta["bbl"]["revision"] == branch and meta["bbl"]["final_words_seen"] == ledger["words_seen"]
        if branch == "main":
            assert meta["bbl"]["words_seen"] == ledger["words_seen"]
            assert json.loads((clone / "bbl_run.json").read_text())["ledger"] == ledger
        else:
            info = json.loads((clone / "bbl_checkpoint.json").read_text())
            assert meta["bbl"]["words_seen"] == info["words_seen"] and f"{info['words_seen']:,}" in body
    # one line of history in training order: chck (fewer words), chck, main
    log = subprocess.run(["git", "-C", str(clone), "log", "--format=%s", "origin/main"], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    assert [line.split(":")[0] for line in log if line] == ["main", *reversed(branches)]


@pytest.mark.parametrize("damage", ["empty", "truncated", "checkpoint"])
def test_export_refuses_weights_that_do_not_load(damage, tmp_path):
    """A 0-byte or truncated model.safetensors (the run's, or a word checkpoint's) is refused in one line naming
    it, before the repo is created: never committed with publish commands printed."""
    import torch
    from click.testing import CliRunner
    from safetensors.torch import save_file

    from bbl.cli import main

    run = tmp_path / "run"
    dirs = [run, run / "word_checkpoints" / "chck_1M"]
    for d in dirs:
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "tokenizer.json").write_text("{}")
        save_file({"w": torch.zeros(64)}, str(d / "model.safetensors"))
    (run / "bbl_run.json").write_text(json.dumps(RUN))
    (dirs[1] / "bbl_checkpoint.json").write_text(json.dumps({"words_seen": 1_000_000, "step": 1}))
    bad = (dirs[1] if damage == "checkpoint" else run) / "model.safetensors"
    bad.write_bytes(b"" if damage == "empty" else bad.read_bytes()[:-16])
    r = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "repo")])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and str(bad) in r.output, r.output
    assert "git push" not in r.output and not (tmp_path / "repo").exists()
