"""Every bad input is one `error:` line naming the file or option, a non-zero exit, no traceback, nothing written
and no compute started: malformed YAML, a config that is no mapping, NaN/inf, damaged JSON metadata, data verify of
no release, and the orchestrators (study, eval ensembles, sweep) checking all of their inputs before the first run.

Each test runs the real CLI in-process under a guard that records (and stops) any training step, child run,
model scoring or Optuna study, so "refused before any compute" is observed, not assumed."""

import hashlib
import json
import shutil

import pytest
import yaml

from bbl.config import SECTIONS, DistillConfig, TrainingConfig
from bbl.errors import BblError

from .conftest import WORDS
from .helpers import dump, error_lines, run


class ComputeStarted(Exception):
    """Raised by the guard where a run would have started computing."""


@pytest.fixture
def guard(monkeypatch):
    """Records and stops every start of compute: a Trainer's train(), a study's child run, a model's scoring, an
    Optuna study's creation. Returns the list of what started."""
    import transformers

    import bbl.evaluate.run
    import bbl.orchestration.runner
    import bbl.study.sweep

    started = []

    def stop(what):
        def refuse(*args, **kwargs):
            started.append(what)
            raise ComputeStarted(what)
        return refuse

    monkeypatch.setattr(transformers.Trainer, "train", stop("training"))
    monkeypatch.setattr(bbl.orchestration.runner, "run_bbl", stop("child run"))
    monkeypatch.setattr(bbl.evaluate.run, "evaluate_models", stop("scoring"))
    monkeypatch.setattr(bbl.study.sweep, "_open_study", stop("optuna study"))
    return started


def tree(root) -> dict:
    """{relative path: sha256 of its bytes, or 'dir'} of everything under `root`."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def refused(argv, root, guard, *names):
    """Run `bbl ARGV`; assert it is refused with one error line naming each of `names`, without a traceback, and
    with nothing under `root` written or changed and no compute started. Returns the error line."""
    before = tree(root)
    result = run(argv)
    errors = error_lines(result)
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught exception
    assert "Traceback" not in result.output
    assert len(errors) == 1, result.output
    for name in names:
        assert str(name) in errors[0], errors[0]
    assert guard == [], f"started {guard} before refusing"
    assert tree(root) == before, "the refused command wrote or changed files"
    return errors[0]


@pytest.fixture(scope="module")
def cache(tiny_teachers, prepared, tmp_path_factory):
    """A top-8 cache of 24 windows of 32 tokens (seed 0): what student-tiny reads with max_train_windows=24."""
    path = tmp_path_factory.mktemp("cache") / "c.zarr"
    dump(tiny_teachers, prepared, path)
    return path


def write_pairs(root):
    """Minimal-pair dirs for BLiMP and the supplement (one file, two pairs each)."""
    for sub in ("blimp", "supplement"):
        (root / sub).mkdir(parents=True)
        rows = [{"sentence_good": " ".join(WORDS[i:i + 4]) + " .", "sentence_bad": " ".join(WORDS[i:i + 4][::-1]) + " .",
                 "UID": "p", "linguistics_term": "t"} for i in range(2)]
        (root / sub / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "blimp", root / "supplement"


# ---- YAML: configs, --set values and sweep spaces ---------------------------------------------------------------

@pytest.mark.parametrize("where", ["config file", "--set", "--arm --set", "space file"])
def test_malformed_yaml_names_the_file_or_set_value_and_the_line(where, prepared, tmp_path, guard):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntraining: {lr: [1e-3\n")  # the flow sequence never closes
    out = tmp_path / "out"
    if where == "config file":
        argv, names = ["train-student", bad, "--data", prepared, "--out", out], [bad, "line 3"]
    elif where == "--set":
        argv, names = ["train-student", "student-tiny", "--data", prepared, "--out", out, "--set",
                       "training.lr=[1e-3"], ["--set 'training.lr=[1e-3'", "line 1"]
    elif where == "--arm --set":
        blimp, supplement = write_pairs(tmp_path / "pairs")
        argv = ["study", "student-tiny", "--data", prepared, "--workdir", out, "--blimp-dir", blimp,
                "--supplement-dir", supplement, "--arm", "x:--baseline --set training.lr=[1e-3"]
        names = ["--arm x", "--set 'training.lr=[1e-3'", "line 1"]
    else:
        argv = ["sweep", "student-tiny", "--data", prepared, "--space", bad, "--trials", "1", "--workdir", out]
        names = [bad, "line 3"]
    assert "not valid YAML" in refused(argv, tmp_path, guard, *names)


@pytest.mark.parametrize("text, says", [("", "empty config file"), ("# only a comment\n", "empty config file"),
                                        ("- model\n- training\n", "not a list"), ("3\n", "not a number"),
                                        ("training: 3\n", "training is a number, not a mapping")])
def test_a_config_must_be_a_mapping_and_an_empty_one_is_no_default_run(text, says, prepared, tmp_path, guard):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    line = refused(["train-student", config, "--data", prepared, "--out", tmp_path / "out"], tmp_path, guard, config)
    assert says in line


FLOAT_FIELDS = [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in cls.__dataclass_fields__.values()
                if "float" in str(f.type)]


def test_every_float_field_is_found():
    """The parametrization below covers the float fields by reflection: at least these, whatever is added."""
    assert {"training.epochs", "training.lr", "training.weight_decay", "training.mlm_probability",
            "training.max_epochs_seen", "distill.alpha", "distill.temperature"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("key", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e999"])
def test_non_finite_numbers_are_refused_in_every_float_field(key, value, prepared, tmp_path, guard):
    refused(["train-student", "student-tiny", "--data", prepared, "--out", tmp_path / "out", "--set",
             f"{key}={value}"], tmp_path, guard, f"--set '{key}={value}'", key, "finite")


@pytest.mark.parametrize("cls, key", [(TrainingConfig, "lr"), (TrainingConfig, "epochs"), (DistillConfig, "alpha"),
                                      (TrainingConfig, "max_epochs_seen")])
def test_config_dataclasses_refuse_non_finite_numbers_built_in_code(cls, key):
    for value in (float("nan"), float("inf")):
        with pytest.raises(BblError, match=f"{key} {value}: must be a finite number"):
            cls(**{key: value})


@pytest.mark.parametrize("argv, option", [
    (["dump-logits", "--teacher", "{teacher}", "--data", "{prepared}", "--cache", "{out}", "--temperature", "inf"],
     "--temperature"),
    (["cache", "verify", "--cache", "{cache}", "--max-kl", "nan"], "--max-kl"),
])
def test_non_finite_float_options_are_refused(argv, option, tiny_teachers, prepared, cache, tmp_path, guard):
    fill = {"{teacher}": tiny_teachers[0], "{prepared}": prepared, "{out}": tmp_path / "out.zarr", "{cache}": cache}
    refused([fill.get(a, a) for a in argv], tmp_path, guard, option, "finite")


# ---- damaged JSON metadata --------------------------------------------------------------------------------------

def damage(path, how):
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


@pytest.mark.parametrize("how", ["empty", "truncated"])
@pytest.mark.parametrize("what", ["cache zarr.json", "cache array zarr.json", "model config.json",
                                  "model tokenizer.json", "model bbl_run.json", "teacher config.json",
                                  "finetune config.json", "prepared manifest.json"])
def test_damaged_json_metadata_names_the_file_and_the_fix(what, how, tiny_teachers, prepared, cache, tmp_path, guard):
    blimp, _ = write_pairs(tmp_path / "pairs")
    out = tmp_path / "out"
    if what.startswith("cache"):
        c = shutil.copytree(cache, tmp_path / "c.zarr")
        bad = c / ("zarr.json" if what == "cache zarr.json" else "topk_logprobs/zarr.json")
        argv = ["distill", "student-tiny", "--cache", c, "--data", prepared, "--out", out, "--set",
                "training.max_train_windows=24"]
        fix = "--overwrite"
    elif what == "prepared manifest.json":
        p = shutil.copytree(prepared, tmp_path / "prepared")
        bad = p / "manifest.json"
        argv, fix = ["train-student", "student-tiny", "--data", p, "--out", out], "bbl prepare --force"
    else:
        m = shutil.copytree(tiny_teachers[0], tmp_path / "model")
        name = what.split()[-1]
        bad = m / name
        if name == "bbl_run.json":  # a model bbl trained: its run file holds the ledger eval reports
            bad.write_text(json.dumps({"complete": True, "ledger": {"words_seen": 10}}))
        argv = {"model": ["eval", m, "--out", out, "--tasks", "blimp", "--blimp-dir", blimp],
                "teacher": ["dump-logits", "--teacher", m, "--data", prepared, "--cache", tmp_path / "o.zarr"],
                "finetune": ["finetune", m, "--tasks", "rte", "--task-data", tmp_path, "--out", out]}[what.split()[0]]
        fix = {"config.json": "save the model again", "tokenizer.json": "save the tokenizer again",
               "bbl_run.json": "re-train"}[name]
    damage(bad, how)
    line = refused(argv, tmp_path, guard, bad, fix)
    assert "not a valid JSON file" in line


# ---- eval: names, ensembles -------------------------------------------------------------------------------------

def test_eval_refuses_two_models_of_one_name_instead_of_overwriting_one(tiny_teachers, tmp_path, guard):
    blimp, _ = write_pairs(tmp_path / "pairs")
    a = shutil.copytree(tiny_teachers[0], tmp_path / "a" / "final")
    b = shutil.copytree(tiny_teachers[1], tmp_path / "b" / "final")
    base = ["--out", tmp_path / "out", "--tasks", "blimp", "--blimp-dir", blimp]
    refused(["eval", a, b, *base], tmp_path, guard, a, b, "both named final")
    refused(["eval", a, tmp_path / "a" / "." / "final", *base], tmp_path, guard, "passed twice")
    refused(["eval", "--ensemble", f"{a},{tiny_teachers[1]}", "--ensemble", f"{b},{tiny_teachers[1]}", *base],
            tmp_path, guard, "both named ensemble(final+")


@pytest.mark.parametrize("member", ["other tokenizer", "truncated weights", "not a model dir", "damaged config"])
def test_eval_ensemble_checks_every_member_before_scoring_anything(member, tiny_teachers, tmp_path, guard):
    blimp, _ = write_pairs(tmp_path / "pairs")
    m = shutil.copytree(tiny_teachers[1], tmp_path / "member")
    if member == "other tokenizer":
        tokenizer = json.loads((m / "tokenizer.json").read_text())
        tokenizer["normalizer"] = None
        (m / "tokenizer.json").write_text(json.dumps(tokenizer))
        says = "different tokenizers"
    elif member == "truncated weights":
        damage(m / "model.safetensors", "truncated")
        says = "not loadable weights"  # read from the header before any model loads
    elif member == "not a model dir":
        (m / "config.json").unlink()
        says = "not a model dir"
    else:
        (m / "config.json").write_text("[]")
        says = "not an object"
    # the plain model comes first: before, it was scored and its JSON written before the ensemble failed
    refused(["eval", tiny_teachers[0], "--ensemble", f"{tiny_teachers[0]},{m}", "--out", tmp_path / "out",
             "--tasks", "blimp", "--blimp-dir", blimp], tmp_path, guard, m, says)


def test_eval_guard_sees_a_valid_command_start_scoring(tiny_teachers, tmp_path, guard):
    """The control: the same command with sound members reaches scoring (the guard would see it)."""
    blimp, _ = write_pairs(tmp_path / "pairs")
    result = run(["eval", tiny_teachers[0], "--ensemble", ",".join(map(str, tiny_teachers)), "--out", tmp_path / "out",
                  "--tasks", "blimp", "--blimp-dir", blimp])
    assert isinstance(result.exception, ComputeStarted) and guard == ["scoring"]


# ---- data verify ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["empty dir", "no release file", "empty manifest", "comments-only manifest",
                                  "binary manifest", "path without split dir"])
def test_data_verify_fails_on_a_dir_without_a_release_and_on_an_empty_or_invalid_manifest(case, tmp_path, guard):
    d = tmp_path / "corpus"
    d.mkdir()
    manifest = tmp_path / "release.txt"
    argv = ["data", "verify", d]
    if case == "no release file":
        (d / "notes.txt").write_text("not BabyLM\n")
    if case == "empty dir" or case == "no release file":
        refused(argv, tmp_path, guard, d, "holds no file of babylm-2023")
        return
    manifest.write_bytes({"empty manifest": b"", "comments-only manifest": b"# nothing yet\n",
                          "binary manifest": b"\xff\xfe\x00\x01",
                          "path without split dir": b"0" * 40 + b" cbt.train\n"}[case])
    refused([*argv, "--manifest", manifest], tmp_path, guard, f"--manifest {manifest}")


# ---- study: every arm before seed 0 -----------------------------------------------------------------------------

STUDY_BASE = ["--seeds", "2", "--set", "training.max_train_windows=24"]


@pytest.mark.parametrize("case", ["damaged cache", "cache of another seq_len", "typo in an arm's --set",
                                  "arm's kd_variant the cache cannot read", "arm's cache of other windows",
                                  "teacher of another tokenizer", "missing task data"])
def test_study_checks_its_cache_arms_teachers_and_tasks_before_seed_0(case, prepared, cache, tiny_teachers, tmp_path,
                                                                    guard):
    blimp, supplement = write_pairs(tmp_path / "pairs")
    c = shutil.copytree(cache, tmp_path / "c.zarr")
    w = tmp_path / "w"
    argv = ["study", "student-tiny", "--data", prepared, "--workdir", w, "--blimp-dir", blimp, "--supplement-dir",
            supplement, "--cache", c, *STUDY_BASE]
    names = {
        "damaged cache": [c / "zarr.json"],
        "cache of another seq_len": [c, "seq_len"],
        "typo in an arm's --set": ["--arm renorm", "training.lrr"],
        "arm's kd_variant the cache cannot read": ["--arm sampled", "kd_variant=sampled"],
        "arm's cache of other windows": ["--arm all", "max_windows"],
        "teacher of another tokenizer": ["teacher", "tokenizer differs"],
        "missing task data": ["missing.zip"],
    }[case]
    if case == "damaged cache":
        damage(c / "zarr.json", "truncated")
    elif case == "cache of another seq_len":
        argv += ["--set", "training.seq_len=16"]
    elif case == "typo in an arm's --set":
        argv += ["--arm", "renorm:--set distill.kd_variant=topk_renorm --set training.lrr=1"]
    elif case == "arm's kd_variant the cache cannot read":
        argv += ["--arm", "sampled:--set distill.kd_variant=sampled"]
    elif case == "arm's cache of other windows":
        argv += ["--arm", "all:--set training.max_train_windows=null"]
    elif case == "teacher of another tokenizer":
        t = shutil.copytree(tiny_teachers[0], tmp_path / "teacher")
        tokenizer = json.loads((t / "tokenizer.json").read_text())
        tokenizer["normalizer"] = None
        (t / "tokenizer.json").write_text(json.dumps(tokenizer))
        argv += ["--teacher", t]
    else:
        argv += ["--tasks", "blimp,supplement,ewok", "--task-data", f"ewok={tmp_path / 'missing.zip'}"]
    refused(argv, tmp_path, guard, *names)


def test_study_guard_sees_a_valid_study_start_its_first_run(prepared, cache, tiny_teachers, tmp_path, guard):
    """The control: the same study with sound arms (baseline, cached, online, an --arm) reaches its first child run."""
    blimp, supplement = write_pairs(tmp_path / "pairs")
    result = run(["study", "student-tiny", "--data", prepared, "--workdir", tmp_path / "w", "--blimp-dir", blimp,
                  "--supplement-dir", supplement, "--cache", cache, *STUDY_BASE,
                  *[a for t in tiny_teachers for a in ("--teacher", t)],
                  "--arm", "renorm:--set distill.kd_variant=topk_renorm"])
    assert isinstance(result.exception, ComputeStarted) and guard == ["child run"], result.output


# ---- sweep: every space value before the study ------------------------------------------------------------------

SWEEP_SETS = ["--set", "training.max_steps=2", "--set", "training.eval_every_steps=2"]


@pytest.mark.parametrize("entry, says", [
    ({"training.lr_scheduler": {"type": "choice", "choices": ["cosine", "cosinus"]}}, "'cosinus' is no valid value"),
    ({"model.n_head": {"type": "choice", "choices": [2, 3]}}, "3 is no valid value"),
    ({"training.warmup_steps": {"type": "uniform", "low": 0, "high": 4}}, "use type: int"),
    ({"training.lr": {"type": "uniform", "low": 1e-4, "high": float("inf")}}, "finite"),
    ({"training.lr": {"type": "loguniform", "low": float("nan"), "high": 1e-2}}, "finite"),
    ({"training.report_to": {"type": "choice", "choices": [["tensorboard"], []]}}, "is not a finite number, a string"),
    ({"training.warmup_steps": {"type": "int", "low": 0, "high": 4, "log": True}}, "low >= 1"),
])
def test_sweep_checks_every_space_value_before_the_study_so_a_corrected_space_runs(entry, says, prepared, tmp_path,
                                                                                   guard, monkeypatch):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(entry))
    w = tmp_path / "w"
    argv = ["sweep", "student-tiny", "--data", prepared, "--space", space, "--trials", "1", "--workdir", w,
            "--pruner", "none", *SWEEP_SETS]
    refused(argv, tmp_path, guard, space, next(iter(entry)), says)
    if says == "'cosinus' is no valid value":  # the corrected space then runs: no broken study was recorded
        monkeypatch.undo()
        space.write_text(yaml.safe_dump({"training.lr_scheduler": {"type": "choice", "choices": ["cosine", "linear"]}}))
        result = run(argv)
        assert result.exit_code == 0, result.output
        assert json.loads((w / "trials.json").read_text())["trials"][0]["state"] == "complete"


# ---- #42: inputs that raised tracebacks, or ran on quietly; each one line, exit 2 for a usage error -------------

def _glue(root):
    """An RTE train/valid pair of two rows each (too few for a batch of 4)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"sentence1": "the cat sat .", "sentence2": "a cat sat .", "label": i % 2, "idx": i} for i in range(2)]
    for split in ("train", "valid"):
        (root / f"rte.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


LONG = "n" * 300
"""A file name longer than any file system's limit (255 bytes)."""


def _no_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here: --device cuda is usable")


@pytest.mark.parametrize("case", [
    "seed 1e23", "seed 2**63", "finetune --seed 2**63", "dump --set dump.seed 2**40",
    "eval --device bogus", "dump --device bogus", "finetune --device bogus", "repair --device bogus",
    "eval --device cuda", "finetune --device cuda", "dump --device cuda:0",
    "prepare --vocab-size 1e11", "sweep --storage bogus://x", "sweep --pruner threshold:nan",
    "dump --temperature nan", "dump --temperature 0", "dump --topk 0", "dump --max-windows 0", "dump --seq-len 0",
    "eval --tasks bogus", "finetune --tasks bogus", "malformed --set", "train --resume --overwrite",
    "epochs 5.8e16",
])
def test_usage_errors_are_one_line_exit_2_and_write_nothing(case, tiny_teachers, prepared, tiny_babylm, cache,
                                                             tmp_path, guard):
    if "cuda" in case:
        _no_gpu()
    teacher, out = tiny_teachers[0], tmp_path / "out"
    dump = ["dump-logits", "--teacher", teacher, "--data", prepared, "--cache", tmp_path / "c.zarr"]
    train = ["train-student", "student-tiny", "--data", prepared, "--out", out]
    finetune = ["finetune", teacher, "--tasks", "rte", "--task-data", _glue(tmp_path / "glue"), "--out", out]
    evaluate = ["eval", teacher, "--tasks", "perplexity", "--data", prepared, "--out", out]
    space = tmp_path / "space.yaml"
    space.write_text("training.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")
    sweep = ["sweep", "student-tiny", "--data", prepared, "--space", space, "--trials", 1, "--workdir", out]
    argv, names = {
        "seed 1e23": ([*train, "--set", "training.seed=99999999999999999999999"], ["training.seed"]),
        "seed 2**63": ([*train, "--set", f"training.seed={2**63}"], ["training.seed"]),
        "finetune --seed 2**63": ([*finetune, "--seed", 2**63], ["--seed"]),
        "dump --set dump.seed 2**40": ([*dump, "--set", f"dump.seed={2**40}"], ["dump.seed"]),
        "eval --device bogus": ([*evaluate, "--device", "bogus"], ["--device", "bogus"]),
        "dump --device bogus": ([*dump, "--device", "bogus"], ["--device"]),
        "finetune --device bogus": ([*finetune, "--device", "bogus"], ["--device"]),
        "repair --device bogus": (["cache", "repair", "--cache", cache, "--teacher", teacher, "--device", "bogus"],
                                  ["--device"]),
        "eval --device cuda": ([*evaluate, "--device", "cuda"], ["--device cuda", "no CUDA GPU"]),
        "finetune --device cuda": ([*finetune, "--device", "cuda"], ["--device cuda", "no CUDA GPU"]),
        "dump --device cuda:0": ([*dump, "--device", "cuda:0"], ["--device cuda:0"]),
        "prepare --vocab-size 1e11": (["prepare", "--train-dir", tiny_babylm[0], "--dev-dir", tiny_babylm[1],
                                       "--out", out, "--vocab-size", 99999999999], ["--vocab-size"]),
        "sweep --storage bogus://x": ([*sweep, "--storage", "bogus://x"], ["--storage bogus://x"]),
        "sweep --pruner threshold:nan": ([*sweep, "--pruner", "threshold:nan"], ["--pruner"]),
        "dump --temperature nan": ([*dump, "--temperature", "nan"], ["--temperature"]),
        "dump --temperature 0": ([*dump, "--temperature", 0], ["--temperature"]),
        "dump --topk 0": ([*dump, "--topk", 0], ["--topk"]),
        "dump --max-windows 0": ([*dump, "--max-windows", 0], ["--max-windows"]),
        "dump --seq-len 0": ([*dump, "--seq-len", 0], ["--seq-len"]),
        "eval --tasks bogus": ([*evaluate, "--tasks", "bogus"], ["--tasks", "bogus"]),
        "finetune --tasks bogus": (["finetune", teacher, "--tasks", "bogus", "--out", out], ["bogus"]),
        "malformed --set": ([*train, "--set", "training.seed"], ["--set"]),
        "train --resume --overwrite": ([*train, "--resume", "--overwrite"], ["--resume", "--overwrite"]),
        "epochs 5.8e16": ([*train, "--set", "training.epochs=5.8e16"], ["training.epochs", "optimizer steps"]),
    }[case]
    refused(argv, tmp_path, guard, *names)
    assert run(argv).exit_code == 2


@pytest.mark.parametrize("case", ["long --out train", "long --out eval", "long --cache dump",
                                  "sweep --storage in /proc", "finetune 0-byte weights", "finetune batch",
                                  "cache array as --cache", "long --train-dir prepare", "pipeline in new dirs"])
def test_work_that_cannot_be_done_is_one_line_exit_1_and_writes_nothing(case, tiny_teachers, prepared, cache,
                                                                        tiny_babylm, tmp_path, guard):
    teacher = tiny_teachers[0]
    space = tmp_path / "space.yaml"
    space.write_text("training.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")
    glue = _glue(tmp_path / "glue")
    if case == "finetune 0-byte weights":
        teacher = shutil.copytree(teacher, tmp_path / "model")
        (teacher / "model.safetensors").write_bytes(b"")
    if case == "cache array as --cache":
        cache = shutil.copytree(cache, tmp_path / "c.zarr")
    argv, names = {
        "long --out train": (["train-student", "student-tiny", "--data", prepared, "--out", tmp_path / LONG],
                             ["--out", "File name too long"]),
        "long --out eval": (["eval", teacher, "--tasks", "perplexity", "--data", prepared, "--out", tmp_path / LONG],
                            ["--out", "File name too long"]),
        "long --cache dump": (["dump-logits", "--teacher", teacher, "--data", prepared, "--cache", tmp_path / LONG],
                              ["--cache"]),
        "sweep --storage in /proc": (["sweep", "student-tiny", "--data", prepared, "--space", space, "--trials", 1,
                                      "--workdir", tmp_path / "w", "--storage", "sqlite:////proc/x/sweep.db"],
                                     ["--storage", "/proc/x"]),
        "finetune 0-byte weights": (["finetune", teacher, "--tasks", "rte", "--task-data", glue, "--out",
                                     tmp_path / "out"], ["model.safetensors", "empty"]),
        "finetune batch": (["finetune", teacher, "--tasks", "rte", "--task-data", glue, "--out", tmp_path / "out",
                            "--batch-size", 4], ["rte", "one batch of 4"]),
        "cache array as --cache": (["dump-logits", "--teacher", teacher, "--data", prepared, "--cache",
                                    cache / "topk_ids", "--overwrite"], [f"--cache {cache}"]),
        "long --train-dir prepare": (["prepare", "--train-dir", tmp_path / LONG, "--dev-dir", tmp_path, "--out",
                                      tmp_path / "out"], ["File name too long"]),
        "pipeline in new dirs": (["pipeline", "--preset", "tiny", "--corpus", tiny_babylm[0].parent, "--workdir",
                                  tmp_path / "new" / "dirs"], ["blimp_filtered"]),  # the claim's dirs go again
    }[case]
    line = refused(argv, tmp_path, guard, *names)
    assert "again" not in line or case != "cache array as --cache"  # the fix is another path, not a re-run
    assert run(argv).exit_code == 1
