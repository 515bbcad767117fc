"""Outputs that cannot destroy data: a dir that is not a run of the command's kind is refused whatever --overwrite
says, a finished run is replaced only with --overwrite (and then only its own files), one writer per output (a
lock whose holder is named, freed when the holder dies), and an unwritable or file-blocked --out is one line."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bbl.outputs import MANIFEST_FILE

from .helpers import SEQ, dump, error_lines, run

TRAIN = ["--set", "training.epochs=1", "--set", "training.max_train_windows=16"]


def tree_digest(root: Path) -> dict:
    """{relative path: sha256} of every file under `root` (what "nothing changed" compares)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def user_dir(root: Path) -> Path:
    """A directory holding a user's work: notes and a results file."""
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_text("keep\n")
    (root / "results.csv").write_text("model,score\nm,1\n")
    return root


def one_error(res, *needles) -> str:
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output, res.output
    errors = error_lines(res)
    assert len(errors) == 1, res.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("overwrite", [False, True])
def test_dump_into_a_dir_that_is_not_a_cache_is_refused_and_deletes_nothing(tiny_teachers, prepared, tmp_path,
                                                                             overwrite):
    out = user_dir(tmp_path / "x")
    before = tree_digest(out)
    res = run(["dump-logits", "--teacher", tiny_teachers[0], "--data", prepared, "--seq-len", SEQ, "--max-windows",
               8, "--cache", out, *(["--overwrite"] if overwrite else [])])
    one_error(res, str(out), "not a logit cache")
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no lock file left beside it


@pytest.mark.filterwarnings("ignore:Object at README.txt:UserWarning")  # zarr notes the user's file when listing
def test_cache_overwrite_replaces_only_the_caches_own_files(tiny_teachers, prepared, tmp_path):
    out = tmp_path / "c.zarr"
    dump(tiny_teachers, prepared, out)
    (out / "README.txt").write_text("my notes on this cache\n")
    dump(tiny_teachers, prepared, out, top_k=4, overwrite=True)
    assert (out / "README.txt").read_text() == "my notes on this cache\n"
    from bbl.cache.reader import CacheReader

    assert CacheReader(out).top_k == 4


def test_a_complete_cache_is_left_untouched_by_a_rerun(tiny_teachers, prepared, tmp_path):
    out = tmp_path / "c.zarr"
    dump(tiny_teachers, prepared, out)
    before = tree_digest(out)
    res = run(["dump-logits", *[a for t in tiny_teachers for a in ("--teacher", t)], "--data", prepared,
               "--topk", 8, "--seq-len", SEQ, "--chunk-windows", 4, "--batch-size", 2, "--max-windows", 24,
               "--cache", out])
    assert res.exit_code == 0, res.output
    assert "nothing to do" in res.output
    assert tree_digest(out) == before


def _train(prepared, out, *extra):
    return run(["train-student", "llama-tiny", "--data", prepared, "--out", out, *TRAIN, *extra])


def _user_files_in_checkpoints(out: Path) -> dict:
    """A user's files beside a run's checkpoints and in a dir named like one; returns {path: text}."""
    files = {out / "my-notes.md": "run 1: looked fine\n", out / "checkpoints" / "mine.txt": "mine\n",
             out / "checkpoints" / "checkpoint-99-mine" / "k.txt": "k\n"}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "run-before-manifests"])
def test_a_finished_model_is_replaced_only_with_overwrite_and_only_its_own_files(prepared, tmp_path, manifest):
    out = tmp_path / "student"
    assert _train(prepared, out).exit_code == 0
    if not manifest:  # a run written by a bbl without manifests: its files are known by their names
        (out / MANIFEST_FILE).unlink()
    mine = _user_files_in_checkpoints(out)
    before = tree_digest(out)
    one_error(_train(prepared, out), "finished model run", "--overwrite")
    assert tree_digest(out) == before
    one_error(_train(prepared, out, "--resume", "--overwrite"), "contradict")
    res = _train(prepared, out, "--overwrite", "--set", "training.seed=7")
    assert res.exit_code == 0, res.output
    assert {path: path.read_text() for path in mine} == mine
    after = tree_digest(out)
    assert after["model.safetensors"] != before["model.safetensors"]
    assert "seed: 7" in (out / "bbl_config.yaml").read_text()
    assert not (out / ".bbl.lock").exists()
    # the metrics are the new run's alone: one summary line, not the old run's lines followed by the new ones
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum("train_runtime" in r for r in rows) == 1, rows
    # and the manifest holds the new run's files, none of the user's
    owned = json.loads((out / MANIFEST_FILE).read_text())["outputs"]["student_baseline"]["files"]
    assert "model.safetensors" in owned and not any("mine" in f or "notes" in f for f in owned)


def _teach(prepared, out, *extra):
    return run(["train-teacher", "llama-tiny", "--data", prepared, "--out", out, *TRAIN, *extra])


@pytest.mark.parametrize("first, then, manifest", [
    ("teacher", "train-student", True), ("teacher", "train-student", False), ("teacher", "distill", True),
    ("distilled", "train-student", True), ("baseline", "train-teacher", False)])  # False: a run before manifests
def test_overwrite_never_replaces_a_run_of_another_kind(first, then, manifest, prepared, trained_cache, tmp_path):
    teachers, cache = trained_cache
    out = tmp_path / "run"
    if first == "teacher":
        made = _teach(prepared, out)
    elif first == "baseline":
        made = _train(prepared, out)
    else:
        made = run(["distill", "student-tiny", "--data", prepared, "--cache", cache, "--out", out, *TRAIN])
    assert made.exit_code == 0, made.output
    if not manifest:
        (out / MANIFEST_FILE).unlink()
    before = tree_digest(out)
    argv = {"train-student": ["train-student", "llama-tiny"], "train-teacher": ["train-teacher", "llama-tiny"],
            "distill": ["distill", "student-tiny", "--cache", cache]}[then]
    res = run([*argv, "--data", prepared, "--out", out, *TRAIN, "--overwrite"])
    noun = {"teacher": "teacher", "baseline": "baseline student", "distilled": "distilled student"}[first]
    one_error(res, str(out), f"holds a model run ({noun}", "whatever --overwrite says")
    assert tree_digest(out) == before


def _eval_argv(models, out, prepared):
    return ["eval", *models, "--tasks", "perplexity", "--data", prepared, "--out", out, "--dev-windows", 4,
            "--seq-len", SEQ]


KILL_AFTER_FIRST_MODEL = textwrap.dedent("""
    import os, signal, sys
    import bbl.evaluate.run as run
    write = run.atomic_write_json
    def write_then_die(path, obj, **kw):  # SIGKILL right after the first model's JSON, as a kill from outside
        write(path, obj, **kw)
        os.kill(os.getpid(), signal.SIGKILL)
    run.atomic_write_json = write_then_die
    from bbl.cli import main
    main(sys.argv[1:])
""")


class Killed(BaseException):
    """Stands for a SIGKILL in-process: nothing after it runs, the output's claim records no end."""


def _kill_eval_after_first_model(argv, monkeypatch):
    """`bbl ARGV` (an eval of two models) stopped as a SIGKILL would stop it, right after the first model's JSON:
    the claim's end (`end_writing`) never runs, as after a real kill."""
    import bbl.evaluate.run
    import bbl.outputs

    write = bbl.evaluate.run.atomic_write_json

    def write_then_die(path, obj, **kw):
        write(path, obj, **kw)
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(bbl.evaluate.run, "atomic_write_json", write_then_die)
        m.setattr(bbl.outputs, "end_writing", lambda *a, **kw: None)
        with pytest.raises(Killed):
            run(argv)


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "eval-before-manifests"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_eval_killed_after_its_first_model_is_continued_by_a_rerun(manifest, overwrite, tiny_teachers, prepared,
                                                                      tmp_path, monkeypatch):
    out = tmp_path / "ev"
    argv = [str(a) for a in _eval_argv(tiny_teachers, out, prepared)]
    _kill_eval_after_first_model(argv, monkeypatch)
    assert (out / f"{tiny_teachers[0].name}.json").is_file() and not (out / "results.json").exists()
    _rerun_continues(out, argv, manifest, overwrite, tiny_teachers)


@pytest.mark.slow
def test_an_eval_sigkilled_after_its_first_model_is_continued_by_a_rerun(tiny_teachers, prepared, tmp_path):
    out = tmp_path / "ev"
    argv = [str(a) for a in _eval_argv(tiny_teachers, out, prepared)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_MODEL, *argv], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / f"{tiny_teachers[0].name}.json").is_file() and not (out / "results.json").exists()
    _rerun_continues(out, argv, True, False, tiny_teachers)


def _rerun_continues(out, argv, manifest, overwrite, models):
    """A re-run of a killed eval (with or without --overwrite; `manifest` False: as a bbl before manifests left it)
    finishes it, and a finished one is replaced with --overwrite."""
    if not manifest:
        (out / MANIFEST_FILE).unlink()
    res = run([*argv, *(["--overwrite"] if overwrite else [])])
    assert res.exit_code == 0, res.output
    records = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in records] == [m.name for m in models]
    res = run([*argv, "--overwrite"])  # a finished evaluation: replaced (its own files only)
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("command", ["train-student", "distill", "eval", "finetune", "prepare", "study", "sweep"])
def test_a_dir_of_someone_elses_work_is_refused_by_every_writer(command, prepared, trained_cache, tmp_path):
    out = user_dir(tmp_path / "runs")
    before = tree_digest(out)
    teachers, cache = trained_cache
    argv = {
        "train-student": ["train-student", "llama-tiny", "--data", prepared, "--out", out, "--overwrite"],
        "distill": ["distill", "student-tiny", "--data", prepared, "--cache", cache, "--out", out, "--overwrite"],
        "eval": ["eval", teachers[0], "--tasks", "perplexity", "--data", prepared, "--out", out, "--overwrite"],
        "finetune": ["finetune", teachers[0], "--tasks", "rte", "--out", out, "--overwrite"],
        "prepare": ["prepare", "--train-dir", prepared, "--dev-dir", prepared, "--out", out, "--force"],
        "study": ["study", "student-tiny", "--data", prepared, "--workdir", out, "--cache", cache],
        "sweep": ["sweep", "student-tiny", "--data", prepared, "--workdir", out, "--space", out / "results.csv",
                  "--trials", 1],
    }[command]
    one_error(run(argv), str(out), "is not a")
    assert tree_digest(out) == before


def _unwritable_root() -> Path:
    """A place even root cannot create a dir in (sysfs is read-only in the container)."""
    for candidate in (Path("/sys/bbl-test"), Path("/proc/bbl-test")):
        try:
            candidate.mkdir()
        except OSError:
            return candidate
        candidate.rmdir()
    pytest.skip("no unwritable location on this machine")


@pytest.mark.parametrize("command", ["train-student", "dump-logits", "eval", "prepare", "study", "pipeline", "sweep"])
def test_an_unwritable_out_is_one_line_before_any_compute(command, prepared, tiny_teachers, tiny_babylm, tmp_path):
    out = _unwritable_root() / "out"
    space = tmp_path / "space.yaml"
    space.write_text("training.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")
    argv = {
        "train-student": ["train-student", "llama-tiny", "--data", prepared, "--out", out],
        "dump-logits": ["dump-logits", "--teacher", tiny_teachers[0], "--data", prepared, "--seq-len", SEQ,
                        "--cache", out],
        "eval": ["eval", tiny_teachers[0], "--tasks", "perplexity", "--data", prepared, "--out", out],
        "prepare": ["prepare", "--train-dir", tiny_babylm[0], "--dev-dir", tiny_babylm[1], "--out", out],
        "study": ["study", "student-tiny", "--data", prepared, "--workdir", out],
        "pipeline": ["pipeline", "--preset", "tiny", "--corpus", tmp_path, "--workdir", out],
        "sweep": ["sweep", "student-tiny", "--data", prepared, "--space", space, "--trials", 1, "--workdir", out],
    }[command]
    one_error(run(argv), "cannot write there")


@pytest.mark.parametrize("command", ["train-student", "dump-logits", "eval"])
def test_an_out_under_a_file_is_one_line(command, prepared, tiny_teachers, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = blocker / "out"
    argv = {
        "train-student": ["train-student", "llama-tiny", "--data", prepared, "--out", out],
        "dump-logits": ["dump-logits", "--teacher", tiny_teachers[0], "--data", prepared, "--cache", out],
        "eval": ["eval", tiny_teachers[0], "--tasks", "perplexity", "--data", prepared, "--out", out],
    }[command]
    one_error(run(argv), "is a file")
    assert blocker.read_text() == "x"


def test_a_finished_evaluation_is_replaced_only_with_overwrite(tiny_teachers, prepared, tmp_path):
    out = tmp_path / "eval"
    argv = ["eval", tiny_teachers[0], "--tasks", "perplexity", "--data", prepared, "--out", out, "--dev-windows", 4,
            "--seq-len", SEQ]
    assert run(argv).exit_code == 0
    before = tree_digest(out)
    one_error(run(argv), "finished", "--overwrite")
    assert tree_digest(out) == before
    assert run([*argv, "--overwrite"]).exit_code == 0


HOLDER = textwrap.dedent("""
    import sys, time
    from bbl.outputs import claim_output
    with claim_output(sys.argv[1], sys.argv[2], finished_ok=True):
        print("held", flush=True)
        time.sleep(120)
""")


def _hold(path: Path, kind: str, *extra: str) -> subprocess.Popen:
    """Another process holding the output's lock, as a running bbl command would (`extra`: more of its argv)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), kind, *extra], stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("kind", ["model", "cache"])
def test_a_second_writer_is_refused_naming_the_holder_until_the_holder_dies(kind, tiny_teachers, prepared, tmp_path):
    out = tmp_path / ("student" if kind == "model" else "c.zarr")
    argv = (["train-student", "llama-tiny", "--data", prepared, "--out", out, *TRAIN] if kind == "model" else
            ["dump-logits", "--teacher", tiny_teachers[0], "--data", prepared, "--seq-len", SEQ, "--max-windows", 8,
             "--chunk-windows", 4, "--cache", out])
    holder = _hold(out, kind, "--set", "training.seed=7", "--resume", "LAST-ARG")
    try:
        line = one_error(run(argv), "in use by another bbl run", f"pid {holder.pid}")
        assert "training.seed=7 --resume LAST-ARG" in line, line  # the holder's whole command, not its first words
        assert "host" not in line or "on " in line
        assert not (out / "bbl_run.json").exists() and not (out / "zarr.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    res = run(argv)  # the holder is gone: the kernel dropped its lock, nobody has to delete a stale file
    assert res.exit_code == 0, res.output

