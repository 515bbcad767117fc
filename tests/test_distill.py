"""`bbl distill`: cached and online KD on the Trainer, logging, alpha = 1, resume, torchrun, bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bbl.config import DistillConfig, load_config
from bbl.distill.recipe import distill
from bbl.errors import BblError

from .helpers import free_port, quiet


def student(*overrides):
    return load_config("student-tiny", ["training.max_train_windows=null", *overrides])


def logged(out, key):
    return [r[key] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if key in r]


def test_distill_lowers_ce_and_kd(trained_cache, prepared, tmp_path):
    _, cache = trained_cache
    out = distill(student("training.epochs=3", "training.logging_steps=4"), prepared, tmp_path / "s",
                  cache_path=cache, log=quiet)
    ce, kd = logged(out, "ce_loss"), logged(out, "kd_loss")
    assert len(ce) >= 4
    assert ce[-1] < ce[0] and kd[-1] < kd[0]
    run = json.loads((out / "bbl_run.json").read_text())
    assert run["distill_mode"] == "cached" and run["temperature"] == 2.0 and run["complete"]
    assert logged(out, "eval_loss")  # the student's own dev CE, for best-checkpoint selection


def hand_kd(logits, ids, logprobs, tail, temperature):
    """KL of the teacher's (k+1)-outcome coarsening {top-k ids, rest} to the student's, mean over positions, written
    out here from its definition (docs/commands.md, `bbl distill`, kd_variant topk_tail), not through bbl.losses."""
    log_q = torch.log_softmax(logits.double() / temperature, dim=-1)
    log_q_top = log_q.gather(-1, ids)
    log_q_rest = torch.log1p(-log_q_top.exp().sum(-1))
    p_top, p_rest = logprobs.double().exp(), tail.double().exp()
    kl = (p_top * (logprobs.double() - log_q_top)).sum(-1) + p_rest * (tail.double() - log_q_rest)
    return kl.mean()


def test_alpha_one_loss_is_the_plain_ce(trained_cache, prepared, tmp_path):
    from transformers import TrainingArguments

    from bbl.cache import CacheDataset, open_cache
    from bbl.distill.trainer import DistillTrainer
    from bbl.models.build import build_model

    _, cache = trained_cache
    ds = CacheDataset(open_cache(cache))
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    model = build_model(student().model, 320, seed=0).train()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = DistillTrainer(model=model, args=args, distill=DistillConfig(alpha=1.0, kd_variant="topk_tail"), temperature=2.0,
                                     cache_temperature=2.0)
    loss = trainer.compute_loss(model, dict(batch))
    plain = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    torch.testing.assert_close(loss, plain)
    trainer.distill = DistillConfig(alpha=0.5, kd_variant="topk_tail")
    logits = model(input_ids=batch["input_ids"]).logits
    kd = hand_kd(logits, batch["topk_ids"], batch["topk_logprobs"], batch["tail_logprob"], 2.0)
    assert kd > 1e-3  # an untrained student is far from the teachers: the check below weighs a real KD term
    expected = 0.5 * plain.double() + 0.5 * 2.0 ** 2 * kd  # L = alpha CE + (1 - alpha) T^2 KD, the paper's
    torch.testing.assert_close(trainer.compute_loss(model, dict(batch)).double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["plain", "cached", "online", "eval"])
def test_chunked_trainer_loss_and_gradients_equal_the_hf_path(mode, trained_cache, prepared, tmp_path):
    """`loss_impl: chunked` (the default) and `hf` give the Trainer the same loss and the same parameter gradients."""
    from transformers import TrainingArguments

    from bbl.cache import CacheDataset, open_cache
    from bbl.distill.trainer import DistillTrainer
    from bbl.models.build import build_model
    from bbl.models.teachers import load_teachers
    from bbl.train.trainer import LossTrainer

    teacher_dirs, cache = trained_cache
    ds = CacheDataset(open_cache(cache))
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    if mode in ("plain", "online", "eval"):
        batch = {k: batch[k] for k in ("input_ids", "labels")}
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    results = {}
    for impl in ("hf", "chunked"):
        model = build_model(student().model, 320, seed=0)
        model.train(mode != "eval")
        kw = {"loss_impl": impl, "loss_chunk_rows": 24}
        if mode == "plain":
            trainer = LossTrainer(model=model, args=args, **kw)
        else:
            teachers = load_teachers(teacher_dirs, "cpu")[0] if mode == "online" else None
            trainer = DistillTrainer(model=model, args=args, distill=DistillConfig(alpha=0.5, kd_variant="topk_tail"),
                                             temperature=2.0, cache_temperature=2.0, teachers=teachers, **kw)
        loss = trainer.compute_loss(model, dict(batch))
        if mode == "eval":
            results[impl] = (loss.detach(), {})
            continue
        loss.backward()
        results[impl] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results["chunked"][0], results["hf"][0], rtol=1e-5, atol=1e-6)
    for name, grad in results["hf"][1].items():
        torch.testing.assert_close(results["chunked"][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_online_reference_runs_and_logs_kd(trained_cache, prepared, tmp_path):
    teachers, _ = trained_cache
    steps, every = 4, 2
    out = distill(student(f"training.max_steps={steps}", f"training.logging_steps={every}"), prepared, tmp_path / "on",
                  teacher_dirs=teachers, log=quiet)
    kd = logged(out, "kd_loss")
    assert len(kd) == steps // every and all(k > 0 for k in kd)  # one value per logging step, each a real KL
    assert json.loads((out / "bbl_run.json").read_text())["distill_mode"] == "online"


def test_distill_resume_equals_straight(trained_cache, prepared, tmp_path):
    _, cache = trained_cache
    o = ["training.max_steps=8", "training.eval_every_steps=4"]
    a = distill(student(*o), prepared, tmp_path / "a", cache_path=cache, log=quiet)
    distill(student(*o, "training.stop_after_steps=4"), prepared, tmp_path / "b", cache_path=cache, log=quiet)
    b = distill(student(*o), prepared, tmp_path / "b", cache_path=cache, resume=True, log=quiet)
    wa = load_file(a / "checkpoints" / "checkpoint-8" / "model.safetensors")
    wb = load_file(b / "checkpoints" / "checkpoint-8" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torchrun_two_process_distill(trained_cache, prepared, tmp_path):
    _, cache = trained_cache
    steps = 4
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "bbl", "distill", "student-tiny", "--data", str(prepared), "--out", str(tmp_path / "ddp"),
           "--cache", str(cache), "--set", f"training.max_steps={steps}"]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "bbl_run.json").read_text())["global_step"] == steps


def test_bad_inputs_fail_before_training(trained_cache, prepared, tmp_path):
    import zarr

    teachers, cache = trained_cache
    with pytest.raises(BblError, match="seq_len"):
        distill(student("training.seq_len=64"), prepared, tmp_path / "x", cache_path=cache, log=quiet)
    with pytest.raises(BblError, match="temperature"):
        distill(student("distill.temperature=1.0"), prepared, tmp_path / "x", cache_path=cache, log=quiet)
    with pytest.raises(BblError, match="alpha"):
        student("distill.alpha=-0.1")
    with pytest.raises(BblError, match="> 0"):
        student("distill.temperature=0")
    with pytest.raises(BblError, match="exactly one"):
        distill(student(), prepared, tmp_path / "x", cache_path=cache, teacher_dirs=teachers, log=quiet)
    import shutil

    broken = tmp_path / "incomplete.zarr"
    shutil.copytree(cache, broken)
    zarr.open_group(str(broken), mode="r+").attrs["complete"] = False
    with pytest.raises(BblError, match="incomplete"):
        distill(student(), prepared, tmp_path / "x", cache_path=broken, log=quiet)
    zarr.open_group(str(broken), mode="r+").attrs.update({"complete": True, "tokenizer_fingerprint": "0" * 64})
    with pytest.raises(BblError, match="tokenizer"):
        distill(student(), prepared, tmp_path / "x", cache_path=broken, log=quiet)
    zarr.open_group(str(broken), mode="r+").attrs.update({"tokenizer_fingerprint": zarr.open_group(
        str(cache), mode="r").attrs["tokenizer_fingerprint"], "train_stream_sha256": "1" * 64})
    with pytest.raises(BblError, match="token stream"):
        distill(student(), prepared, tmp_path / "x", cache_path=broken, log=quiet)
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_a_cached_distillation_records_the_windows_it_trained_on(sparse_caches, prepared, tmp_path):
    """A 24-window cache asked for 128 windows: the run trains on the cache's 24, and its recorded config and run
    file say 24 (with a note), never the 128 it did not see."""
    logs = []
    out = distill(load_config("student-tiny", ["training.max_train_windows=128", "training.max_steps=1",
                                               "training.seq_len=32"]),
                  prepared, tmp_path / "s", cache_path=sparse_caches["topk"], log=logs.append)
    run = json.loads((out / "bbl_run.json").read_text())
    assert run["config"]["training"]["max_train_windows"] == 24 and run["train_windows"] == 24
    assert run["cache_window_selection"]["max_windows"] == 24
    assert "max_train_windows: 24" in (out / "bbl_config.yaml").read_text()
    assert any(line.startswith("note: training.max_train_windows 128") for line in logs), logs
