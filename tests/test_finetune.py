"""`bbl finetune`: the classifier reads the last real token, the pipeline's recipe per task, its metrics and best
epoch, a tiny fine-tune that learns, the pipeline's predictions.json, and one-line errors with nothing written."""

import json
import random

import numpy as np
import pytest
import torch

from bbl.finetune import recipe
from bbl.finetune.data import encode_pairs, read_examples
from bbl.finetune.model import CausalLMClassifier
from bbl.finetune.recipe import (
    TASK_RECIPES,
    FinetuneConfig,
    classification_metrics,
    finetune_arguments,
    keep_best_epoch,
    pipeline_optimizer,
)

from .conftest import save_random_model
from .helpers import error_lines, run


@pytest.fixture(scope="module")
def tiny_models(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune_models")
    return {"llama": save_random_model("llama-tiny", prepared, root / "llama", seed=3),
            "gpt2": save_random_model("gpt2-tiny", prepared, root / "gpt2", seed=4)}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def toy_rte(n, seed):
    """RTE-format rows whose label is the last word of sentence2: "happy" -> 1 (not entailed), "sad" -> 0."""
    rng = random.Random(seed)
    words = "the cat dog bird saw ran sat on a mat big small red blue tree house ball".split()
    rows = []
    for i in range(n):
        label = i % 2
        s1 = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + " ."
        s2 = " ".join(rng.choice(words) for _ in range(rng.randint(2, 5))) + (" happy" if label else " sad")
        rows.append({"sentence1": s1, "sentence2": s2, "label": label, "idx": i})
    return rows


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_classifier_reads_the_last_real_token(tiny_models, arch):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    model = CausalLMClassifier.from_pretrained(tiny_models[arch], 2).eval()
    ids = tok(["the cat sat on a mat .", "a dog ran ."], padding=True, return_tensors="pt")
    x, mask = ids["input_ids"], ids["attention_mask"]
    assert mask[1, -1] == 0  # the short row is right-padded
    last = int(mask[1].sum()) - 1
    with torch.no_grad():
        base = model(x, mask).logits
        alone = model(x[1:, :last + 1], mask[1:, :last + 1]).logits
        pad_changed = x.clone()
        pad_changed[1, last + 1:] = 7
        other_pad = model(pad_changed, mask).logits
        last_changed = x.clone()
        last_changed[1, last] = (x[1, last] + 5) % tok.vocab_size
        other_last = model(last_changed, mask).logits
    torch.testing.assert_close(other_pad, base)  # what stands at a pad position is never read
    torch.testing.assert_close(alone[0], base[1], atol=1e-5, rtol=1e-5)  # padding does not change a row's logits
    assert not torch.allclose(other_last[1], base[1])  # the last real token is read
    torch.testing.assert_close(other_last[0], base[0])  # rows stay apart


def test_first_token_reading_ignores_the_rest(tiny_models):
    model = CausalLMClassifier.from_pretrained(tiny_models["llama"], 2, read="first").eval()
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        a = model(x, torch.ones_like(x)).logits
        b = model(torch.tensor([[5, 9, 9, 9]]), torch.ones_like(x)).logits
    torch.testing.assert_close(a, b)  # what eval_finetuning.sh runs: position 0 has seen only the first token


def test_recipe_per_task_is_the_pipelines():
    assert {t: r.batch_size for t, r in TASK_RECIPES.items()} == {
        "boolq": 16, "multirc": 16, "rte": 32, "wsc": 32, "mrpc": 32, "qqp": 32, "mnli": 32}
    assert {t: r.epochs for t, r in TASK_RECIPES.items()} == {
        "boolq": 10, "multirc": 10, "rte": 10, "wsc": 30, "mrpc": 10, "qqp": 10, "mnli": 10}
    assert {t: r.metric for t, r in TASK_RECIPES.items()} == {
        "boolq": "accuracy", "multirc": "accuracy", "rte": "accuracy", "wsc": "accuracy", "mrpc": "f1",
        "qqp": "f1", "mnli": "accuracy"}
    assert TASK_RECIPES["mnli"].metrics == ("accuracy",)  # 3 classes: no binary F1 / MCC
    cfg = FinetuneConfig(tasks=["wsc"], epochs=2, batch_size=4)
    assert (cfg.recipe("wsc").epochs, cfg.recipe("wsc").batch_size) == (2, 4)
    assert cfg.deviations() == {"epochs": 2, "batch_size": 4}
    assert FinetuneConfig(tasks=["rte"]).deviations() == {}


def test_optimizer_and_schedule_are_the_pipelines(tmp_path):
    from transformers import get_scheduler

    args = finetune_arguments(TASK_RECIPES["rte"], train_examples=2490, seed=0, device="cpu",
                              output_dir=str(tmp_path), progress=False)
    total = (2490 // 32) * 10  # the partial batch is dropped
    assert args.per_device_train_batch_size == 32 and args.num_train_epochs == 10
    assert args.get_warmup_steps(total) == int(0.06 * total) == 46
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    opt = pipeline_optimizer(model)
    (group,) = opt.param_groups  # one group: weight decay on every parameter, biases and norms too
    assert isinstance(opt, torch.optim.AdamW) and group["weight_decay"] == 0.01 and not group["amsgrad"]
    assert (group["lr"], group["betas"], group["eps"]) == (3e-5, (0.9, 0.999), 1e-8)
    assert len(group["params"]) == 4
    sched = get_scheduler(args.lr_scheduler_type, opt, num_warmup_steps=46, num_training_steps=total,
                          scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()

    def pipeline_factor(step):  # finetune/utils.py cosine_schedule_with_warmup, min_factor 0.1
        if step < 46:
            return step / 46
        progress = (step - 46) / (total - 46)
        return max(0.1, 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))

    np.testing.assert_allclose(lrs, [3e-5 * pipeline_factor(s) for s in range(total)], rtol=1e-9, atol=1e-15)


def test_metrics_equal_hand_counts():
    pred, gold = np.array([1, 1, 0, 0, 1, 0]), np.array([1, 0, 0, 1, 1, 0])
    # tp 2, fp 1, fn 1, tn 2
    got = classification_metrics(pred, gold, ("accuracy", "f1", "mcc"))
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert got["mcc"] == pytest.approx((2 * 2 - 1 * 1) / np.sqrt(3 * 3 * 3 * 3))
    none = classification_metrics(np.zeros(4), np.zeros(4), ("f1", "mcc"))
    assert none == {"f1": 0.0, "mcc": 0.0}  # scikit-learn's value where the denominator is 0


def test_best_epoch_is_kept_and_a_tie_keeps_the_earlier():
    from transformers import TrainerState

    model = torch.nn.Linear(2, 1)
    keep = keep_best_epoch("f1")
    for epoch, score in enumerate([0.5, 0.7, 0.7, 0.6], 1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        keep.on_evaluate(None, TrainerState(epoch=float(epoch)), None, model=model, metrics={"eval_f1": score})
    keep.on_train_end(None, TrainerState(), None, model=model)
    assert (keep.best_epoch, keep.best_score) == (2, 0.7)
    assert torch.all(model.weight == 2)  # epoch 2's weights are back


def test_inputs_are_built_as_the_pipeline_builds_them(tmp_path):
    wsc = write_jsonl(tmp_path / "wsc.valid.jsonl", [
        {"text": "Mark told Pete lies. He was wrong.", "span1_index": 0, "span2_index": 4, "span1_text": "Mark",
         "span2_text": "He", "idx": 0, "label": 1}])
    multirc = write_jsonl(tmp_path / "multirc.valid.jsonl", [
        {"paragraph": "The cat sat.", "question": "Who sat?", "answer": "the cat", "idx": 0, "label": 1}])
    assert read_examples(wsc, "wsc") == ([('Does "He" refer to "Mark" in this passage?',
                                           "Mark told Pete lies. He was wrong.")], [1])
    assert read_examples(multirc, "multirc") == ([("Question: Who sat? Answer: the cat", "The cat sat.")], [1])


def test_long_inputs_are_cut_to_max_length_and_counted(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    pairs = [("the cat sat .", "a dog ran ."), (" ".join(["the big red ball"] * 20), "the cat .")]
    ids, truncated = encode_pairs(tok, pairs, 16)
    assert truncated == 1 and len(ids[1]) == 16
    assert ids[0] == tok("the cat sat .", "a dog ran .")["input_ids"]  # short pairs are left whole


def test_tiny_finetune_learns_and_writes_the_pipelines_layout(tiny_models, tmp_path, monkeypatch):
    # the recipe's lr 3e-5 moves a random 2-layer model too little in seconds; the machinery is what is tested
    monkeypatch.setattr(recipe, "LEARNING_RATE", 3e-3)
    data = tmp_path / "glue"
    data.mkdir()
    train = toy_rte(64, seed=0)
    train[0]["sentence1"] = " ".join(["the big red ball"] * 60)  # past the LLaMA's 128 positions, under 512
    write_jsonl(data / "rte.train.jsonl", train)
    write_jsonl(data / "rte.valid.jsonl", toy_rte(32, seed=1))
    out = tmp_path / "out"
    result = run(["finetune", tiny_models["llama"], "--tasks", "rte", "--task-data", data, "--out", out, "--seed", "0",
                  "--epochs", "4", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == []  # a rotary LLaMA runs it whole, as the pipeline (its cap is 512)

    record = json.loads((out / "finetune.json").read_text())
    rte = record["tasks"]["rte"]
    assert rte["metric"] == "accuracy" and rte["score"] >= 0.9, rte  # chance is 0.5
    assert 1 <= rte["best_epoch"] <= 4 and rte["steps"] == (64 // 8) * 4
    assert rte["max_length"] == 512 and rte["truncated"] == {"train": 0, "valid": 0}
    assert record["deviations"] == {"epochs": 4, "batch_size": 8}
    assert "| rte | accuracy |" in (out / "finetune.md").read_text()

    # the layout and format the pipeline's collate_preds.py reads: results/<model>/main/finetune/<task>/, the
    # task's key holding one {"id", "pred"} per valid row, merged into full_results["glue"] by task name
    where = out / "pipeline" / "llama" / "main" / "finetune" / "rte"
    preds = json.loads((where / "predictions.json").read_text())
    assert list(preds) == ["rte"] and len(preds["rte"]["predictions"]) == 32
    assert preds["rte"]["predictions"][0] == {"id": "rte_0", "pred": preds["rte"]["predictions"][0]["pred"]}
    assert all(p["id"] == f"rte_{i}" and p["pred"] in (0, 1) and type(p["pred"]) is int
               for i, p in enumerate(preds["rte"]["predictions"]))
    gold = [r["label"] for r in toy_rte(32, seed=1)]
    hits = np.mean([p["pred"] == g for p, g in zip(preds["rte"]["predictions"], gold, strict=True)])
    assert hits == pytest.approx(rte["accuracy"])  # the predictions are the reported epoch's
    assert (where / "results.txt").read_text().startswith("accuracy: ")


@pytest.mark.parametrize("args, message", [
    (["--tasks", "rte,cola"], "unknown task(s) cola"),
    (["--tasks", "rte", "--task-data", "{tmp}/nowhere"], "no such data dir"),
    (["--tasks", "boolq"], "boolq.train.jsonl: no training file for boolq"),
    (["--tasks", "rte", "--model", "{tmp}"], "not a model dir"),
])
def test_bad_input_is_one_error_line_and_nothing_written(tiny_models, tmp_path, args, message):
    data = tmp_path / "glue"
    data.mkdir()
    write_jsonl(data / "rte.train.jsonl", toy_rte(8, 0))
    write_jsonl(data / "rte.valid.jsonl", toy_rte(4, 1))
    write_jsonl(data / "boolq.valid.jsonl", [{"question": "is it?", "passage": "it is.", "idx": 0, "label": 1}])
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    model = tiny_models["llama"]
    if "--model" in args:
        model = args[args.index("--model") + 1]
        args = args[:args.index("--model")]
    if "--task-data" not in args:
        args += ["--task-data", data]
    out = tmp_path / "out"
    result = run(["finetune", model, *args, "--out", out])
    assert result.exit_code == (2 if "unknown task" in message else 1)  # an unknown name is a usage error
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()


def test_train_order_is_a_new_permutation_cut_to_whole_batches():
    from bbl.finetune.recipe import FullBatchSampler

    sampler = FullBatchSampler(10, batch_size=4, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(sampler) == len(first) == len(second) == 8  # the partial batch is dropped, as drop_last=True
    assert len(set(first)) == 8 and set(first) <= set(range(10)) and first != second
    assert list(FullBatchSampler(10, batch_size=4, seed=0)) == first  # seeded


def test_inputs_are_cut_at_512_or_at_a_learned_position_table(tiny_models):
    """The pipeline's cap is 512 tokens; GPT-2's wpe (128 here) cannot run more, a rotary LLaMA can."""
    from bbl.finetune.run import input_limit

    assert input_limit(tiny_models["llama"]) == 512
    assert input_limit(tiny_models["gpt2"]) == 128


class Killed(BaseException):
    """A SIGKILL as the code under test sees it: nothing after it runs (not an Exception to catch)."""


def test_a_killed_finetune_keeps_finished_tasks_and_resumes_the_interrupted_one(tiny_models, tmp_path, monkeypatch):
    import shutil
    import tempfile

    from transformers import Trainer

    from bbl.finetune import run as run_module
    from bbl.finetune.run import run_finetune

    monkeypatch.setattr(recipe, "LEARNING_RATE", 3e-3)
    scratch = tmp_path / "tmp"  # where a temporary dir would go
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    data = tmp_path / "glue"
    data.mkdir()
    for seed, task in enumerate(("rte", "mrpc")):
        write_jsonl(data / f"{task}.train.jsonl", toy_rte(16, seed=2 * seed))
        write_jsonl(data / f"{task}.valid.jsonl", toy_rte(8, seed=2 * seed + 1))
    config = FinetuneConfig(["rte", "mrpc"], seed=0, epochs=3, batch_size=8)

    def finetune(out, logs=None):
        return run_finetune(tiny_models["llama"], config, data_dir=data, out=out, progress=False,
                            log=(logs.append if logs is not None else lambda *_: None))

    straight = finetune(tmp_path / "a")
    save = Trainer._save_checkpoint

    def killed_after_mrpc_epoch_2(self, model, trial):
        save(self, model, trial)
        if "mrpc" in self.args.output_dir and self.state.epoch >= 2:
            raise Killed

    out = tmp_path / "b"
    monkeypatch.setattr(Trainer, "_save_checkpoint", killed_after_mrpc_epoch_2)
    with pytest.raises(Killed):
        finetune(out)
    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    assert not (out / "finetune.json").exists() and list(scratch.iterdir()) == []
    ckpts = out / "finetune-tasks" / "mrpc" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-4"]  # 2 steps an epoch
    shutil.copytree(ckpts / "checkpoint-4", ckpts / "checkpoint-6")  # and killed while writing epoch 3's
    (ckpts / "checkpoint-6" / "trainer_state.json").unlink()

    trained, logs = [], []
    task_run = run_module.finetune_task
    monkeypatch.setattr(run_module, "finetune_task", lambda model_dir, task, *a, **kw: (
        trained.append(task), task_run(model_dir, task, *a, **kw))[1])
    resumed = finetune(out, logs)
    assert trained == ["mrpc"], logs  # rte was finished: kept, not trained again
    assert any(line.startswith("mrpc: resuming") and line.endswith("checkpoint-4") for line in logs), logs
    assert any("incomplete" in line and "checkpoint-6" in line for line in logs), logs
    assert resumed["tasks"] == straight["tasks"]  # scores, kept epoch: as the uninterrupted run
    for task in ("rte", "mrpc"):
        where = ("pipeline", "llama", "main", "finetune", task, "predictions.json")
        assert (out.joinpath(*where)).read_text() == (tmp_path / "a").joinpath(*where).read_text()
        assert [p.name for p in (out / "finetune-tasks" / task).iterdir()] == ["result.json"]  # training removed
    assert list(scratch.iterdir()) == []
    # a run with other settings does not take the kept results: it trains every task again (finetune.json gone as
    # after a kill just before it was written; a finished run is replaced only with overwrite, tests/test_outputs.py)
    (out / "finetune.json").unlink()
    trained.clear()
    run_finetune(tiny_models["llama"], FinetuneConfig(["rte", "mrpc"], seed=1, epochs=3, batch_size=8),
                 data_dir=data, out=out, progress=False, log=lambda *_: None)
    assert trained == ["rte", "mrpc"]


@pytest.mark.slow
def test_a_sigkilled_finetune_leaks_no_temporary_dir_and_its_rerun_matches_a_straight_run(tiny_models, tmp_path):
    import os
    import subprocess
    import sys
    import time

    from bbl.finetune.run import run_finetune

    data = tmp_path / "glue"
    data.mkdir()
    for seed, task in enumerate(("rte", "mrpc")):
        write_jsonl(data / f"{task}.train.jsonl", toy_rte(32, seed=2 * seed))
        write_jsonl(data / f"{task}.valid.jsonl", toy_rte(16, seed=2 * seed + 1))
    straight = run_finetune(tiny_models["llama"], FinetuneConfig(["rte", "mrpc"], seed=0, epochs=4, batch_size=8),
                            data_dir=data, out=tmp_path / "a", progress=False, log=lambda *_: None)
    scratch, out = tmp_path / "tmp", tmp_path / "b"
    scratch.mkdir()
    argv = [sys.executable, "-m", "bbl", "finetune", str(tiny_models["llama"]), "--tasks", "rte,mrpc", "--task-data",
            str(data), "--out", str(out), "--seed", "0", "--epochs", "4", "--batch-size", "8"]
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts, deadline = out / "finetune-tasks" / "mrpc" / "checkpoints", time.monotonic() + 300
    while not (ckpts.is_dir() and any(ckpts.iterdir())):  # the second task's first save has begun
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not (out / "finetune.json").exists()
    assert not list(scratch.glob("bbl-finetune*"))
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rte: finished by an earlier run" in r.stdout and "finetune llama mrpc" in r.stdout
    record = json.loads((out / "finetune.json").read_text())
    for task, result in straight["tasks"].items():
        assert record["tasks"][task]["best_epoch"] == result["best_epoch"]
        assert record["tasks"][task]["score"] == pytest.approx(result["score"])
    assert not list(scratch.glob("bbl-finetune*"))
