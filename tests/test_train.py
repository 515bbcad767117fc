"""Teacher/student training on the Trainer: presets, loss falls, HF-loadable output, resume, DDP, validation."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bbl.config import load_config
from bbl.errors import BblError
from bbl.models.build import build_model, count_parameters
from bbl.train.batching import resolve_batch
from bbl.train.recipe import train_lm

from .conftest import real_data_or_skip
from .helpers import free_port, quiet


@pytest.mark.parametrize("preset, millions", [("gpt2-705m", 705), ("llama-360m", 360), ("llama-58m", 58)])
def test_paper_presets_have_the_papers_parameter_counts(preset, millions):
    cfg = load_config(preset)
    model = build_model(cfg.model, 16000, device="meta")
    assert abs(count_parameters(model) / 1e6 - millions) / millions < 0.01


def test_paper_presets_match_the_papers_training_settings():
    g, lm, s = load_config("gpt2-705m"), load_config("llama-360m"), load_config("llama-58m")
    assert (g.training.epochs, g.training.batch_size, g.training.lr) == (6, 256, 2.5e-4)
    assert (lm.training.epochs, lm.training.batch_size, lm.training.lr) == (4, 128, 3e-4)
    assert (s.training.epochs, s.training.batch_size, s.training.lr, s.training.weight_decay) == (6, 32, 3e-4, 0.1)
    for c in (g, lm, s):
        assert (c.training.lr_scheduler, c.training.warmup_steps, c.training.seq_len) == ("cosine", 200, 128)
    assert (s.distill.alpha, s.distill.reduction) == (0.5, "babyllama")  # the original code's KD scaling


def test_config_validation_lists_valid_keys():
    with pytest.raises(BblError, match="valid training keys: .*batch_size"):
        load_config("llama-tiny", ["training.bogus=1"])
    with pytest.raises(BblError, match="expected int"):
        load_config("llama-tiny", ["training.batch_size=abc"])
    with pytest.raises(BblError, match="unknown preset"):
        load_config("llama-9000")
    with pytest.raises(BblError, match="section.key=value"):
        load_config("llama-tiny", ["lr=3"])
    with pytest.raises(BblError, match="alpha"):
        load_config("student-tiny", ["distill.alpha=1.5"])
    assert load_config("llama-tiny", ["training.lr=1e-2", "training.report_to=tensorboard"]).training.report_to == [
        "tensorboard"]


def test_batch_not_divisible_is_an_error():
    cfg = load_config("llama-tiny", ["training.batch_size=8", "training.micro_batch_size=3"])
    with pytest.raises(BblError, match="not divisible"):
        resolve_batch(cfg)
    assert resolve_batch(load_config("llama-tiny", ["training.micro_batch_size=2"]), world=2) == (2, 2)


def test_vocab_mismatch_is_an_error(prepared, tmp_path):
    cfg = load_config("llama-tiny", ["model.vocab_size=999"])
    with pytest.raises(BblError, match="tokenizer has 320 tokens"):
        train_lm(cfg, prepared, tmp_path / "o", log=quiet)


def test_missing_prepared_data_is_an_error(tmp_path):
    with pytest.raises(BblError, match="bbl prepare"):
        train_lm(load_config("llama-tiny"), tmp_path, tmp_path / "o", log=quiet)


@pytest.mark.slow
def test_tiny_teacher_loss_falls_on_real_data_and_saves_hf_dir(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbl.data.prepare import prepare

    root = real_data_or_skip()
    prepared = tmp_path / "prep"
    prepare(root / "babylm_10M", root / "babylm_dev", prepared, progress=False, log=quiet)
    cfg = load_config("gpt2-tiny", ["training.max_train_windows=256", "training.logging_steps=4",
                                    "training.seq_len=64"])
    out = train_lm(cfg, prepared, tmp_path / "gpt2", log=quiet)
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < losses[0] - 0.5
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tok) == 16000
    run = json.loads((out / "bbl_run.json").read_text())
    assert run["complete"] and run["parameters"] == count_parameters(model)


# LLaMA has no dropout, so resume is bit-comparable; GPT-2 dropout masks after a mid-epoch resume come from a
# re-synchronised but not identical RNG stream (the Trainer recreates the DataLoader iterator).
PRESET = "llama-tiny"


def test_resume_equals_straight_run(prepared, tmp_path):
    overrides = ["training.max_steps=8", "training.max_train_windows=64", "training.eval_every_steps=4"]
    straight = train_lm(load_config(PRESET, overrides), prepared, tmp_path / "a", log=quiet)
    half = load_config(PRESET, [*overrides, "training.stop_after_steps=4"])
    train_lm(half, prepared, tmp_path / "b", log=quiet)
    assert not json.loads((tmp_path / "b" / "bbl_run.json").read_text())["complete"]
    with pytest.raises(BblError, match="--resume"):
        train_lm(load_config(PRESET, overrides), prepared, tmp_path / "b", log=quiet)
    with pytest.raises(BblError, match="different config"):
        train_lm(load_config(PRESET, [*overrides, "training.lr=0.1"]), prepared, tmp_path / "b",
                 resume=True, log=quiet)
    resumed = train_lm(load_config(PRESET, overrides), prepared, tmp_path / "b", resume=True, log=quiet)
    a = load_file(straight / "checkpoints" / "checkpoint-8" / "model.safetensors")
    b = load_file(resumed / "checkpoints" / "checkpoint-8" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # the final dir and the Trainer's checkpoints carry the tokenizer config transformers 4.51.3 also reads
    saved = [straight, *(straight / "checkpoints").glob("checkpoint-*")]
    assert len(saved) == 3 and all(json.loads((d / "tokenizer_config.json").read_text())["tokenizer_class"]
                                   == "PreTrainedTokenizerFast" for d in saved)
    # the metrics read as one run's: the straight run's steps and losses (the stop adds an evaluation), one summary
    assert _metric_rows(resumed) == pytest.approx(_metric_rows(straight), rel=1e-4)
    # --resume of the finished run has nothing to continue: its files stay byte for byte
    before = {name: (resumed / name).read_bytes() for name in ("bbl_run.json", "metrics.jsonl")}
    logs = []
    train_lm(load_config(PRESET, overrides), prepared, tmp_path / "b", resume=True, log=logs.append)
    assert any("nothing to resume" in line for line in logs), logs
    assert {name: (resumed / name).read_bytes() for name in before} == before


def _metric_rows(run) -> list:
    """The distinct (step, loss or eval_loss) of a run's metrics.jsonl, and how many summary lines it holds."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return sorted({(r["step"], r.get("loss", r.get("eval_loss"))) for r in rows if "train_runtime" not in r}) + \
        [sum("train_runtime" in r for r in rows)]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(prepared, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "bbl", "train-teacher", "llama-tiny", "--data", str(prepared), "--out", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads((out / "bbl_run.json").read_text())
    t = load_config("llama-tiny").training  # the global batch is split over the 2 ranks, not doubled by them
    assert run["complete"] and run["global_step"] == math.ceil(t.epochs * math.ceil(t.max_train_windows / t.batch_size))
    assert (out / "model.safetensors").is_file()


def test_resume_with_data_from_another_tokenizer_is_an_error(prepared, tiny_babylm, tmp_path):
    from bbl.data.prepare import prepare

    other = tmp_path / "other"
    prepare(*tiny_babylm, other, vocab_size=300, progress=False, log=quiet)
    cfg = load_config(PRESET, ["training.max_steps=4", "training.stop_after_steps=2"])
    train_lm(cfg, prepared, tmp_path / "o", log=quiet)
    with pytest.raises(BblError, match="checkpoint tokenizer differs"):
        train_lm(cfg, other, tmp_path / "o", resume=True, log=quiet)


def _break_checkpoint(ckpt, how: str) -> None:
    """Make `ckpt` look like a kill interrupted its write: no trainer_state.json, or half of it."""
    state = ckpt / "trainer_state.json"
    if how == "missing":
        state.unlink()
    else:
        state.write_text(state.read_text()[:len(state.read_text()) // 2])


def test_partial_checkpoints_are_moved_aside_and_resume_continues_from_the_last_complete(prepared, tmp_path):
    import shutil

    overrides = ["training.max_steps=8", "training.max_train_windows=64", "training.eval_every_steps=4"]
    straight = train_lm(load_config(PRESET, overrides), prepared, tmp_path / "a", log=quiet)
    out = tmp_path / "b"
    train_lm(load_config(PRESET, [*overrides, "training.stop_after_steps=4"]), prepared, out, log=quiet)
    ckpts = out / "checkpoints"
    for step, how in ((6, "truncated"), (7, "missing")):  # killed while writing later saves
        shutil.copytree(ckpts / "checkpoint-4", ckpts / f"checkpoint-{step}")
        _break_checkpoint(ckpts / f"checkpoint-{step}", how)
    logs = []
    resumed = train_lm(load_config(PRESET, overrides), prepared, out, resume=True, log=logs.append)
    assert any("resuming" in line and line.endswith("checkpoint-4") for line in logs), logs
    assert sorted(p.name for p in (out / "partial-checkpoints").iterdir()) == ["checkpoint-6", "checkpoint-7"]
    assert sum("incomplete" in line for line in logs) == 2
    assert json.loads((out / "bbl_run.json").read_text())["complete"]
    a = load_file(straight / "checkpoints" / "checkpoint-8" / "model.safetensors")
    b = load_file(resumed / "checkpoints" / "checkpoint-8" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_with_only_partial_checkpoints_the_run_starts_fresh(prepared, tmp_path):
    overrides = ["training.max_steps=4", "training.max_train_windows=64", "training.eval_every_steps=2"]
    straight = train_lm(load_config(PRESET, overrides), prepared, tmp_path / "a", log=quiet)
    out = tmp_path / "b"
    train_lm(load_config(PRESET, [*overrides, "training.stop_after_steps=2"]), prepared, out, log=quiet)
    _break_checkpoint(out / "checkpoints" / "checkpoint-2", "missing")
    logs = []
    train_lm(load_config(PRESET, overrides), prepared, out, log=logs.append)  # no --resume: nothing to resume
    assert not any("resuming" in line for line in logs) and any("starting from the first step" in line
                                                                for line in logs), logs
    assert (out / "partial-checkpoints" / "checkpoint-2").is_dir()
    a = load_file(straight / "model.safetensors")
    b = load_file(out / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_a_checkpoint_is_complete_only_when_its_last_file_is_written(tmp_path):
    from bbl.train.checkpoints import is_complete_checkpoint, resume_checkpoint

    def checkpoint(step, *, state='{"global_step": 1}', weights="model.safetensors", states=("optimizer.pt",
                                                                                             "scheduler.pt")):
        d = tmp_path / "run" / "checkpoints" / f"checkpoint-{step}"
        d.mkdir(parents=True)
        for name in states:
            (d / name).write_bytes(b"x")
        if weights:
            (d / weights).write_bytes(b"w")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
        return d

    assert is_complete_checkpoint(checkpoint(1))
    assert not is_complete_checkpoint(checkpoint(2, state=None))
    assert not is_complete_checkpoint(checkpoint(3, state='{"global_st'))
    assert not is_complete_checkpoint(checkpoint(4, weights=None))
    assert not is_complete_checkpoint(checkpoint(5, states=("scheduler.pt",)))  # half deleted by a rotation
    sharded = checkpoint(6, weights="model.safetensors.index.json")
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": {"a": "s-1.safetensors", '
                                                          '"b": "s-2.safetensors"}}')
    (sharded / "s-1.safetensors").write_bytes(b"w")
    assert not is_complete_checkpoint(sharded)  # one shard missing
    (sharded / "s-2.safetensors").write_bytes(b"w")
    assert is_complete_checkpoint(sharded)
    checkpoint(7, state=None)
    ckpts = tmp_path / "run" / "checkpoints"
    assert resume_checkpoint(ckpts, log=quiet) == sharded
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-1", "checkpoint-6"]
    checkpoint(7, state=None)  # the same step partial again: kept apart from the first
    assert resume_checkpoint(ckpts, log=quiet) == sharded
    assert sorted(p.name for p in (tmp_path / "run" / "partial-checkpoints").iterdir()) == [
        "checkpoint-2", "checkpoint-3", "checkpoint-4", "checkpoint-5", "checkpoint-7", "checkpoint-7-1"]


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
                    reason="inductor compiles C++ on a CPU: no C++ compiler on this machine")
def test_torch_compile_trains_to_the_eager_runs_dev_ce(prepared, tmp_path):
    """`training.torch_compile` reaches the Trainer and changes no number beyond float reordering: the same steps
    give the eager run's dev CE, and the saved weights carry the model's own names (no `_orig_mod.` prefix)."""
    from torch._dynamo.utils import counters  # what dynamo captured, as its own tests read it

    overrides = ["training.max_steps=6", "training.eval_every_steps=6", "training.logging_steps=2"]
    counters.clear()
    eager = train_lm(load_config(PRESET, overrides), prepared, tmp_path / "eager", log=quiet)
    assert counters["stats"]["unique_graphs"] == 0
    compiled = train_lm(load_config(PRESET, overrides + ["training.torch_compile=true"]), prepared,
                        tmp_path / "compiled", log=quiet)
    assert counters["stats"]["unique_graphs"] >= 1  # the model ran compiled
    runs = [json.loads((out / "bbl_run.json").read_text()) for out in (eager, compiled)]
    assert runs[1]["config"]["training"]["torch_compile"] is True
    assert abs(runs[0]["best_eval_loss"] - runs[1]["best_eval_loss"]) < 1e-3, runs
    assert set(load_file(compiled / "model.safetensors")) == set(load_file(eager / "model.safetensors"))
