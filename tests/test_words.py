"""Words seen (issue 13): exact word counting, word-count checkpoints `chck_*`, the ledger and the budget."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from bbl.cli import main
from bbl.config import BABYLM_CHECKPOINTS, load_config, parse_word_checkpoints
from bbl.data.prepared import PreparedData
from bbl.data.words import (
    WHITESPACE,
    checkpoint_name,
    window_words,
    word_start_positions,
    word_starts_of_encodings,
    words_per_step,
)
from bbl.errors import BblError
from bbl.train.batching import load_windows
from bbl.train.ledger import plan_words
from bbl.train.recipe import train_lm

from .helpers import free_port, quiet

# ---------------------------------------------------------------- counting


def test_whitespace_is_exactly_what_str_split_splits_on():
    assert set(WHITESPACE.tolist()) == {c for c in range(0x110000) if chr(c).isspace()}


@pytest.mark.parametrize("text", ["the cat sat", "  lead and trail  ", "tab\there\nnew line", "", "   ",
                                  "nbsp\u00a0and\u3000ideographic", "a"])
def test_word_starts_count_like_str_split(text):
    assert len(word_start_positions(text)) == len(text.split())


def test_word_starts_belong_to_the_token_holding_the_first_character():
    text = "the cat  sat\n"  # words start at 0, 4 and 9
    enc = SimpleNamespace(offsets=[(0, 3), (3, 7), (7, 10), (10, 12), (12, 13)])
    np.testing.assert_array_equal(word_starts_of_encodings([text], [enc])[0], [1, 1, 1, 0, 0])
    # byte-level pieces of one character share its offsets: the word is counted once
    enc = SimpleNamespace(offsets=[(0, 1), (0, 1), (1, 3)])
    assert word_starts_of_encodings(["éab"], [enc])[0].sum() == 1


def test_windows_count_each_word_once_where_it_starts():
    starts = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1])  # a word cut by the boundary of windows 0|1 counts in window 0
    np.testing.assert_array_equal(window_words(starts, 3, np.arange(3)), [2, 1, 3])
    np.testing.assert_array_equal(window_words(starts, 3, np.array([2, 0])), [3, 2])
    np.testing.assert_array_equal(window_words(starts, 4, np.arange(2)), [3, 2])  # the partial window is dropped


def test_words_per_step_replays_epochs_with_a_short_last_step():
    words = np.array([1, 2, 3, 4, 5])
    orders = iter([np.array([4, 3, 2, 1, 0]), np.array([0, 1, 2, 3, 4])])
    # epoch 0: [5+4, 3+2, 1] = steps 9, 14, 15; epoch 1: [1+2, 3+4, 5] -> 18, 25, 30
    np.testing.assert_array_equal(words_per_step(words, orders, 2, 5), [9, 14, 15, 18, 25])


def test_checkpoint_names_and_schedule():
    assert [checkpoint_name(n) for n in (1_000_000, 10_000_000, 100_000_000, 500_000, 1_500_000, 750)] == \
        ["chck_1M", "chck_10M", "chck_100M", "chck_500K", "chck_1500K", "chck_750"]
    names = [checkpoint_name(n) for n in BABYLM_CHECKPOINTS]
    assert names[:10] == [f"chck_{i}M" for i in range(1, 10)] + ["chck_10M"]
    assert names[-1] == "chck_100M" and len(names) == 19
    assert parse_word_checkpoints("babylm") == BABYLM_CHECKPOINTS
    assert parse_word_checkpoints("300,100") == (100, 300)
    with pytest.raises(BblError, match="training.word_checkpoints"):
        parse_word_checkpoints("often")
    with pytest.raises(BblError, match="training.word_checkpoints"):
        load_config("llama-tiny", ["training.word_checkpoints=[0, 5]"])


def test_prepared_streams_count_the_cleaned_text_exactly(prepared):
    data = PreparedData(prepared)
    for split in ("train", "dev"):
        starts = data.word_starts(split)
        assert len(starts) == len(data.stream(split))
        words = sum(len((prepared / "clean" / split / f"{src}.txt").read_text().split())
                    for src in ("aochildes", "switchboard"))
        assert int(starts.sum()) == words == data.manifest["totals"][split]["words_in_stream"]


# ---------------------------------------------------------------- checkpoints and the ledger

OVERRIDES = ["training.max_steps=8", "training.max_train_windows=64", "training.eval_every_steps=4"]


def _targets(prepared, overrides):
    """Two word counts reached at steps 3 and 6 of the planned run, and the plan."""
    cfg = load_config("llama-tiny", overrides)
    data = PreparedData(prepared)
    plan = plan_words(cfg, data, load_windows(cfg, data)[0])
    return [int(plan.words(3)), int(plan.words(6)) - 1], plan


def _checkpoints(out):
    return {p.name: json.loads((p / "bbl_checkpoint.json").read_text())
            for p in sorted((out / "word_checkpoints").iterdir())}


def test_word_checkpoints_are_hf_dirs_saved_when_the_count_is_reached(prepared, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    targets, plan = _targets(prepared, OVERRIDES)
    out = train_lm(load_config("llama-tiny", [*OVERRIDES, f"training.word_checkpoints={targets}"]), prepared,
                   tmp_path / "run", log=quiet)
    ckpts = _checkpoints(out)
    assert list(ckpts) == sorted(checkpoint_name(n) for n in targets)
    for n, step in zip(targets, (3, 6), strict=True):
        c = ckpts[checkpoint_name(n)]
        assert c["step"] == step and c["words_seen"] >= n > plan.words(step - 1)
        d = out / "word_checkpoints" / checkpoint_name(n)
        AutoModelForCausalLM.from_pretrained(str(d)), AutoTokenizer.from_pretrained(str(d))
    assert not list((out / "word_checkpoints").glob("*.tmp"))
    ledger = json.loads((out / "bbl_run.json").read_text())["ledger"]
    assert ledger["words_seen"] == plan.words(8) and ledger["windows_seen"] == 64 and ledger["epochs"] == 1.0
    assert ledger["tokens_seen"] == 64 * 32 and ledger["corpus_words"] == ledger["words_seen"]
    assert ledger["word_checkpoints"] == sorted(checkpoint_name(n) for n in targets)


def test_a_resumed_run_saves_the_same_checkpoints_as_a_straight_one(prepared, tmp_path):
    from safetensors.torch import load_file

    targets, _ = _targets(prepared, OVERRIDES)
    overrides = [*OVERRIDES, f"training.word_checkpoints={targets}"]
    straight = train_lm(load_config("llama-tiny", overrides), prepared, tmp_path / "a", log=quiet)
    train_lm(load_config("llama-tiny", [*overrides, "training.stop_after_steps=4"]), prepared, tmp_path / "b",
             log=quiet)
    assert list(_checkpoints(tmp_path / "b")) == [checkpoint_name(targets[0])]  # step 3 only, before the stop
    resumed = train_lm(load_config("llama-tiny", overrides), prepared, tmp_path / "b", resume=True, log=quiet)
    assert _checkpoints(straight) == _checkpoints(resumed)
    for n in targets:
        a = load_file(straight / "word_checkpoints" / checkpoint_name(n) / "model.safetensors")
        b = load_file(resumed / "word_checkpoints" / checkpoint_name(n) / "model.safetensors")
        for k in a:
            np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_process_torchrun_saves_the_same_checkpoints(prepared, tmp_path):
    targets, _ = _targets(prepared, OVERRIDES)
    straight = train_lm(load_config("llama-tiny", [*OVERRIDES, f"training.word_checkpoints={targets}"]), prepared,
                        tmp_path / "one", log=quiet)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    sets = [a for o in [*OVERRIDES, f"training.word_checkpoints={','.join(map(str, targets))}"] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "bbl", "train-teacher", "llama-tiny", "--data", str(prepared), "--out", str(out), *sets]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _checkpoints(out) == _checkpoints(straight)
    assert json.loads((out / "bbl_run.json").read_text())["ledger"] == \
        json.loads((straight / "bbl_run.json").read_text())["ledger"]


def test_the_distilled_students_ledger_carries_its_teachers(trained_cache, prepared, tmp_path):
    from bbl.distill.recipe import distill

    teachers, cache = trained_cache
    out = distill(load_config("student-tiny", ["training.max_steps=2"]), prepared, tmp_path / "s", cache_path=cache,
                  log=quiet)
    ledger = json.loads((out / "bbl_run.json").read_text())["ledger"]
    own = [json.loads((t / "bbl_run.json").read_text())["ledger"]["words_seen"] for t in teachers]
    assert [t["words_seen"] for t in ledger["teachers"]] == own and all(w > 0 for w in own)
    assert ledger["words_seen_with_teachers"] == ledger["words_seen"] + sum(own)


def error_lines(res):
    return [line for line in res.output.splitlines() if line.startswith("error:")]


def test_a_run_past_its_budget_is_refused_before_anything_is_written(prepared, trained_cache, tmp_path):
    _, plan = _targets(prepared, OVERRIDES)
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    for extra, says in ((f"training.max_words_seen={plan.words(8) - 1}", "training.max_words_seen"),
                        ("training.max_epochs_seen=0.5", "training.max_epochs_seen")):
        out = tmp_path / says
        res = CliRunner().invoke(main, ["train-teacher", "llama-tiny", "--data", str(prepared), "--out", str(out),
                                        *sets, "--set", extra])
        assert res.exit_code == 1 and len(error_lines(res)) == 1 and says in error_lines(res)[0], res.output
        assert not out.exists()
    ok = tmp_path / "ok"
    res = CliRunner().invoke(main, ["train-teacher", "llama-tiny", "--data", str(prepared), "--out", str(ok), *sets,
                                    "--set", f"training.max_words_seen={plan.words(8)}", "--set",
                                    "training.max_epochs_seen=1"])
    assert res.exit_code == 0, res.output
    # a student whose own words fit but whose teachers' do not
    teachers, cache = trained_cache
    helpers = sum(json.loads((t / "bbl_run.json").read_text())["ledger"]["words_seen"] for t in teachers)
    budget = helpers - 1
    assert budget > 2 * 8 * 32  # the student's own words (2 steps of 8 windows of 32 tokens) fit alone
    out = tmp_path / "student"
    res = CliRunner().invoke(main, ["distill", "student-tiny", "--cache", str(cache), "--data", str(prepared),
                                    "--out", str(out), "--set", "training.max_steps=2",
                                    "--set", f"training.max_words_seen={budget}"])
    assert res.exit_code == 1 and "its bbl-trained teachers'" in error_lines(res)[0], res.output
    assert not out.exists()
