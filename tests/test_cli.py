"""The command line's conventions (docs/commands.md, "Conventions"): the CLI imports nothing heavy, every old
option spelling still works with one warning naming the new one, usage errors exit 2 and bbl's own refusals 1,
`--set` reaches the settings of dump-logits, eval and finetune, and dump-logits' options are DumpConfig's fields.

The stage functions are replaced by recorders: these tests check what the command line hands them, not the stages."""

import hashlib
import json
import subprocess
import sys
import typing

import pytest

from bbl import RENAMED_OPTIONS
from bbl.errors import BblError

from .helpers import error_lines, run

HEAVY = ("torch", "numpy", "zarr", "transformers", "pandas", "optuna")


@pytest.mark.parametrize("code", [
    "import bbl.cli",
    "from bbl.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
])
def test_the_cli_and_its_help_import_no_heavy_library(code):
    """`bbl --help` answers at once: neither importing the CLI nor printing the command list loads torch, numpy,
    zarr or transformers (a behaviour, not a timing: benchmarks/bench_cli_help.py times it)."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout


@pytest.fixture
def calls(monkeypatch):
    """Replaces the stage each command calls with a recorder; returns {stage: (args, kwargs)}."""
    import bbl.cache.dump
    import bbl.cache.inspect
    import bbl.evaluate.run
    import bbl.finetune.run
    import bbl.pipeline
    import bbl.study.sweep

    seen = {}

    def record(name, write=None):
        def stage(*args, **kwargs):
            seen[name] = (args, kwargs)
            if write:  # what the command prints after the stage
                (kwargs["out"] / write).parent.mkdir(parents=True, exist_ok=True)
                (kwargs["out"] / write).write_text("table\n")
            return []
        return stage

    monkeypatch.setattr(bbl.cache.dump, "dump_logits", record("dump"))
    monkeypatch.setattr(bbl.evaluate.run, "run_eval", record("eval", "results.md"))
    monkeypatch.setattr(bbl.finetune.run, "run_finetune", record("finetune", "finetune.md"))
    monkeypatch.setattr(bbl.pipeline, "run_pipeline", record("pipeline"))
    monkeypatch.setattr(bbl.study.sweep, "run_sweep", record("sweep"))
    monkeypatch.setattr(bbl.cache.inspect, "cache_info", record("cache info"))
    return seen


def warnings_of(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("warning:")]


DUMP = ["dump-logits", "--teacher", "t", "--data", "p", "--device", "cpu"]


@pytest.mark.parametrize("old, new, stage, check", [
    (["--out", "c.zarr"], "--cache", "dump", lambda a, kw: str(a[2]) == "c.zarr"),
    (["--seed", "7"], "--data-seed", "dump", lambda a, kw: a[3].seed == 7),
    (["--task", "rte"], "--tasks", "finetune", lambda a, kw: a[1].tasks == ["rte"]),
    (["--data", "glue"], "--task-data", "finetune", lambda a, kw: str(kw["data_dir"]) == "glue"),
    (["--data", "babylm"], "--corpus", "pipeline", lambda a, kw: str(a[1]) == "babylm"),
    (["--seed", "3"], "--sampler-seed", "sweep", lambda a, kw: a[0].seed == 3),
])
def test_an_old_spelling_works_with_one_warning_naming_the_new_one(old, new, stage, check, calls, tmp_path):
    argv = {"dump": DUMP,
            "finetune": ["finetune", "m", "--tasks", "mrpc", "--out", tmp_path, "--device", "cpu"],
            "pipeline": ["pipeline", "--preset", "tiny", "--workdir", tmp_path / "w"],
            "sweep": ["sweep", "student-tiny", "--data", "p", "--space", "s.yaml", "--trials", "1", "--workdir", "w"],
            }[stage]
    if stage == "finetune" and old[0] == "--task":
        argv = [a for a in argv if a not in ("--tasks", "mrpc")]
    result = run([*argv, *old])
    assert result.exit_code == 0, result.output
    assert len(warnings_of(result)) == 1 and old[0] in warnings_of(result)[0] and new in warnings_of(result)[0]
    assert check(*calls[stage]), calls[stage]
    new_result = run([*argv, new, old[1]])  # the new spelling: the same call, no warning
    assert new_result.exit_code == 0 and warnings_of(new_result) == [], new_result.output


def test_a_cache_given_positionally_still_works_with_a_warning(calls):
    result = run(["cache", "info", "c.zarr", "--json"])
    assert result.exit_code == 0, result.output
    assert len(warnings_of(result)) == 1 and "--cache c.zarr" in warnings_of(result)[0]
    assert str(calls["cache info"][0][0]) == "c.zarr"
    assert warnings_of(run(["cache", "info", "--cache", "c.zarr", "--json"])) == []


def test_option_values_are_not_respelled(calls):
    """Only option names are renamed: a value that happens to read like an old spelling is left alone."""
    result = run([*DUMP, "--split", "--seed"])
    assert result.exit_code == 0 and warnings_of(result) == [], result.output
    assert calls["dump"][0][3].split == "--seed"


def test_a_step_is_fingerprinted_in_its_old_spelling():
    """A pipeline workdir made before the renames resumes its dump: the step's fingerprint is that of the command
    as 0.1 spelled it, which is what its state file recorded."""
    from bbl.orchestration.runner import fingerprint

    new = ["dump-logits", "--teacher", "t", "--cache", "c.zarr", "--data-seed", "0"]
    old = ["dump-logits", "--teacher", "t", "--out", "c.zarr", "--seed", "0"]
    assert fingerprint(new) == fingerprint(old) == hashlib.sha256(json.dumps(old).encode()).hexdigest()
    assert fingerprint(["distill", "--cache", "c"]) == hashlib.sha256(json.dumps(["distill", "--cache", "c"]).encode()
                                                                      ).hexdigest()


def test_every_renamed_option_exists_under_its_new_name():
    from bbl.cli import main

    for command, renames in RENAMED_OPTIONS.items():
        opts = {o for p in main.commands[command].params for o in getattr(p, "opts", ())}
        assert set(renames.values()) <= opts and not set(renames) & opts, command


@pytest.mark.parametrize("argv, code", [
    (["dump-logits", "--teacher", "t"], 2),                              # a required option missing
    (["eval", "m", "--no-such-option"], 2),                              # an unknown option
    (["eval", "m", "--batch-size", "zero"], 2),                          # a malformed value
    (["dump-logits", "--teacher", "t", "--data", "p", "--topk", "0"], 2),  # bbl's own range check (DumpConfig)
    (["dump-logits", "--teacher", "t", "--data", "p", "--temperature", "0"], 2),
    (["dump-logits", "--teacher", "t", "--data", "p", "--temperature", "nan"], 2),
    (["dump-logits", "--teacher", "t", "--data", "p", "--max-windows", "0"], 2),
    (["dump-logits", "--teacher", "t", "--data", "p", "--seq-len", "0"], 2),
    (["train-student", "no-such-preset", "--data", "p", "--out", "o"], 2),  # an unknown name
    (["train-student", "student-tiny", "--data", "p", "--out", "o", "--set", "training"], 2),  # a malformed --set
    (["eval", "m", "--tasks", "bogus"], 2),
    (["finetune", "m", "--tasks", "bogus"], 2),
    (["sweep", "student-tiny", "--data", "p", "--space", "s", "--trials", "1", "--workdir", "w", "--pruner", "bogus"],
     2),
    (["eval", "no-such-model-dir", "--tasks", "perplexity", "--out", "o"], 1),  # the work cannot be done
])
def test_usage_errors_exit_2_and_bbl_refusals_exit_1(argv, code, tmp_path, monkeypatch):
    """One rule: every usage error (a bad option value, a bad --set, an unknown name) exits 2, whether click or
    bbl's own check finds it; a failure of the work exits 1."""
    monkeypatch.chdir(tmp_path)
    result = run(argv)
    assert result.exit_code == code and len(error_lines(result)) == 1, result.output


def test_set_reaches_the_dump_config_and_refuses_a_setting_given_twice(calls):
    assert run([*DUMP, "--set", "dump.top_k=32", "--set", "dump.seed=5"]).exit_code == 0
    config = calls["dump"][0][3]
    assert (config.top_k, config.seed) == (32, 5)
    twice = run([*DUMP, "--topk", "8", "--set", "dump.top_k=32"])
    assert twice.exit_code == 2 and "--topk" in error_lines(twice)[0] and "dump.top_k" in error_lines(twice)[0]
    unknown = run([*DUMP, "--set", "dump.topk=32"])
    assert unknown.exit_code == 2 and "valid dump keys: targets, top_k" in error_lines(unknown)[0]
    wrong = run([*DUMP, "--set", "training.lr=1"])
    assert wrong.exit_code == 2 and "section in dump" in error_lines(wrong)[0]


@pytest.mark.parametrize("extra", [["--data-seed", "3"], ["--set", "eval.data_seed=3"]])
def test_eval_data_seed_can_be_set(extra, calls, tmp_path):
    result = run(["eval", "m", "--tasks", "perplexity", "--out", tmp_path, "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output
    assert calls["eval"][1]["config"].data_seed == 3


def test_set_reaches_the_eval_and_finetune_configs(calls, tmp_path):
    result = run(["eval", "m", "--tasks", "perplexity", "--out", tmp_path, "--device", "cpu", "--set",
                  "eval.batch_size=8", "--set", "eval.seq_len=64"])
    assert result.exit_code == 0, result.output
    assert (calls["eval"][1]["config"].batch_size, calls["eval"][1]["config"].seq_len) == (8, 64)
    result = run(["finetune", "m", "--tasks", "rte", "--out", tmp_path, "--device", "cpu", "--set",
                  "finetune.epochs=2", "--set", "finetune.read=first"])
    assert result.exit_code == 0, result.output
    assert (calls["finetune"][0][1].epochs, calls["finetune"][0][1].read) == (2, "first")
    bad = run(["finetune", "m", "--tasks", "rte", "--out", tmp_path, "--set", "finetune.epochs=two"])
    assert bad.exit_code == 2 and "finetune.epochs: expected int" in error_lines(bad)[0]


def test_dump_logits_options_are_the_dump_config_fields():
    """One definition per dump setting: each DumpConfig field is an option of dump-logits with the field's type,
    default and docstring as its help."""
    import dataclasses

    from bbl.cache.dump_config import DumpConfig
    from bbl.cli import main
    from bbl.cli.commands import DUMP_FLAGS
    from bbl.cli.params import field_docs

    params = {p.name: p for p in main.commands["dump-logits"].params}
    docs = field_docs(DumpConfig)
    for f in dataclasses.fields(DumpConfig):
        option = params[f.name]
        assert option.opts == [DUMP_FLAGS.get(f.name, "--" + f.name.replace("_", "-"))]
        assert option.help == docs[f.name] and docs[f.name]
        assert option.default == f.default
    assert list(params["dtype"].type.choices) == list(typing.get_args(typing.get_type_hints(DumpConfig)["dtype"]))
    assert docs["seed"].startswith("Seed of the window subset")  # the docstring below the field, on one line
    with pytest.raises(BblError, match="--data-seed"):
        DumpConfig(seed=-1)


def test_the_pipeline_evaluates_dev_perplexity_on_the_students_dev_subset(monkeypatch, tmp_path):
    """The eval stage passes the students' data seed (`--data-seed`) when it is not eval's default 0; with 0 (every
    preset's) the command stays as before, so a workdir's finished eval is not redone."""
    import bbl.pipeline
    from bbl.config import load_config

    for split in ("babylm_10M", "babylm_dev", "blimp_filtered", "supplement_filtered"):
        (tmp_path / split).mkdir()
    assert "--data-seed" not in {s.key: s.argv for s in bbl.pipeline.build_stages("tiny", tmp_path, tmp_path)}["eval"]
    monkeypatch.setattr(bbl.pipeline, "load_config", lambda name: load_config(name, ["training.data_seed=5"]))
    stages = {s.key: s.argv for s in bbl.pipeline.build_stages("tiny", tmp_path, tmp_path / "w")}
    for key in ("eval", "dump-logits"):
        assert stages[key][stages[key].index("--data-seed") + 1] == "5"
