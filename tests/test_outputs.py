"""Outputs that cannot destroy data: a dir that is not a run of the command's kind is refused whatever --overwrite
says, a finished run is replaced only with --overwrite (and then only its own files), one writer per output (a
lock whose holder is named, freed when the holder dies), and an unwritable or file-blocked --out is one line."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

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


def test_a_finished_model_is_replaced_only_with_overwrite_and_only_its_own_files(prepared, tmp_path):
    out = tmp_path / "student"
    assert _train(prepared, out).exit_code == 0
    (out / "my-notes.md").write_text("run 1: looked fine\n")
    before = tree_digest(out)
    one_error(_train(prepared, out), "finished model run", "--overwrite")
    assert tree_digest(out) == before
    one_error(_train(prepared, out, "--resume", "--overwrite"), "contradict")
    res = _train(prepared, out, "--overwrite", "--set", "training.seed=7")
    assert res.exit_code == 0, res.output
    assert (out / "my-notes.md").read_text() == "run 1: looked fine\n"
    after = tree_digest(out)
    assert after["model.safetensors"] != before["model.safetensors"]
    assert "seed: 7" in (out / "bbl_config.yaml").read_text()
    assert not (out / ".bbl.lock").exists()


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


def _hold(path: Path, kind: str) -> subprocess.Popen:
    """Another process holding the output's lock, as a running bbl command would."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), kind], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("kind", ["model", "cache"])
def test_a_second_writer_is_refused_naming_the_holder_until_the_holder_dies(kind, tiny_teachers, prepared, tmp_path):
    out = tmp_path / ("student" if kind == "model" else "c.zarr")
    argv = (["train-student", "llama-tiny", "--data", prepared, "--out", out, *TRAIN] if kind == "model" else
            ["dump-logits", "--teacher", tiny_teachers[0], "--data", prepared, "--seq-len", SEQ, "--max-windows", 8,
             "--chunk-windows", 4, "--cache", out])
    holder = _hold(out, kind)
    try:
        line = one_error(run(argv), "in use by another bbl run", f"pid {holder.pid}")
        assert "host" not in line or "on " in line
        assert not (out / "bbl_run.json").exists() and not (out / "zarr.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    res = run(argv)  # the holder is gone: the kernel dropped its lock, nobody has to delete a stale file
    assert res.exit_code == 0, res.output
