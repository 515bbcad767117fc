"""A cache that cannot silently lie: missing, corrupt and truncated chunks are named by every reader and fixed by
`bbl cache repair`; every bad numeric option is one `error:` line, exit 2 (click refused it) or 1 (bbl did), with
nothing written."""

import numpy as np
import pytest

from bbl.cache import CacheReader, CacheWriter, ChunkBatch
from bbl.cache.compute.fidelity import mass_defect, stored_kl
from bbl.errors import BblError

from .helpers import arrays, dump, error_lines, run


def chunk_file(path, array="topk_logprobs", c=2):
    rest = {"window_idx": (), "input_ids": ("0",), "tail_logprob": ("0",)}.get(array, ("0", "0"))
    return path.joinpath(array, "c", str(c), *rest)


def damage(path, fault):
    f = chunk_file(path)
    if fault == "missing":
        f.unlink()
    elif fault == "flipped":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    else:  # truncated: the copy that stopped half-way
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])


@pytest.fixture(scope="module")
def clean_cache(tiny_teachers, prepared, tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "c.zarr"
    dump(tiny_teachers, prepared, path)
    return path


@pytest.mark.parametrize("fault", ["missing", "flipped", "truncated"])
def test_damaged_chunk_is_named_by_verify_and_distill_and_repaired_to_a_clean_dump(
        fault, clean_cache, tiny_teachers, prepared, tmp_path):
    import shutil

    path = tmp_path / "c.zarr"
    shutil.copytree(clean_cache, path)
    damage(path, fault)
    res = run(["cache", "verify", "--cache", path])
    assert res.exit_code == 1
    assert "topk_logprobs chunk 2 (rows 8-11)" in res.output and "bbl cache repair" in res.output
    if fault == "missing":  # opening alone refuses it: zarr would read the absent chunk as zeros
        with pytest.raises(BblError, match="topk_logprobs chunk 2 .* is missing"):
            CacheReader(path)
    out = tmp_path / "student"
    res = run(["distill", "student-tiny", "--cache", path, "--data", prepared, "--out", out])
    assert res.exit_code == 1
    assert len(error_lines(res)) == 1 and "topk_logprobs chunk 2 (rows 8-11)" in error_lines(res)[0]
    assert "Traceback" not in res.output
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()  # not a single step
    res = run(["cache", "repair", "--cache", path, "--teacher", tiny_teachers[1], "--teacher", tiny_teachers[0]])
    assert res.exit_code == 0, res.output
    assert "repaired chunk 2" in res.output
    a, b = arrays(clean_cache), arrays(path)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert chunk_file(path).read_bytes() == chunk_file(clean_cache).read_bytes()  # byte-identical, not only equal
    assert run(["cache", "verify", "--cache", path]).exit_code == 0


def test_repair_leaves_an_intact_cache_untouched_and_refuses_other_teachers(
        clean_cache, tiny_teachers, prepared, tmp_path):
    import shutil

    from .conftest import save_random_model

    path = tmp_path / "c.zarr"
    shutil.copytree(clean_cache, path)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in path.rglob("*") if p.is_file()}
    res = run(["cache", "repair", "--cache", path, "--teacher", tiny_teachers[0], "--teacher", tiny_teachers[1]])
    assert res.exit_code == 0 and "nothing to repair" in res.output
    assert before == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in path.rglob("*") if p.is_file()}
    chunk_file(path).unlink()
    other = save_random_model("llama-tiny", prepared, tmp_path / "other", seed=7)
    res = run(["cache", "repair", "--cache", path, "--teacher", other, "--teacher", tiny_teachers[1]])
    assert res.exit_code == 1 and "weights differ" in error_lines(res)[0]
    assert not chunk_file(path).exists()


def test_an_all_fill_chunk_is_stored_so_absence_always_means_damage(tmp_path):
    attrs = {"temperature": 1.0, "top_k": 2, "seq_len": 3, "vocab_size": 10, "ensemble": "logit_mean"}
    w = CacheWriter(tmp_path / "c.zarr", attrs=attrs, num_windows=2, chunk_windows=2)
    zeros = ChunkBatch(0, np.zeros((2, 3), np.uint16), np.arange(2), np.zeros((2, 3, 2), np.uint16),
                       np.zeros((2, 3, 2), np.float16), np.zeros((2, 3), np.float32))  # every array at its fill
    w.write_chunk(zeros)
    w.finalize()
    for name in ("input_ids", "topk_ids", "topk_logprobs", "tail_logprob"):
        assert chunk_file(tmp_path / "c.zarr", name, 0).is_file(), name
    assert CacheReader(tmp_path / "c.zarr").scan() == []


def test_cache_info_reports_damage_instead_of_statistics_of_zeros(clean_cache, tmp_path):
    import shutil

    path = tmp_path / "c.zarr"
    shutil.copytree(clean_cache, path)
    chunk_file(path, "tail_logprob", 1).unlink()
    res = run(["cache", "info", "--cache", path, "--json"])
    assert res.exit_code == 0
    assert "tail_logprob chunk 1 (rows 4-7) is missing" in res.output and "topk_mass_mean" not in res.output


def test_fidelity_kl_is_never_negative_and_zero_for_identical_targets():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 40)) * 3
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    top = np.sort(np.argsort(-logp, -1)[:, :8], -1)
    exact = np.take_along_axis(logp, top, -1)
    tail = np.log(1 - np.exp(exact).sum(-1))
    stored = (np.round(exact / 2 ** -6) * 2 ** -6).astype(np.float16)  # the cache's rounding
    kl = stored_kl(exact, tail, stored, tail.astype(np.float32))
    assert (kl >= 0).all() and 0 < kl.mean() < 1e-4
    assert mass_defect(stored, tail).max() > 0  # rounding does not keep the mass at exactly 1 ...
    np.testing.assert_allclose(stored_kl(exact, tail, exact, tail), 0, atol=1e-15)  # ... the KL sees through it


BAD_ARGS = [  # (argv after `bbl`, the option the error must name)
    (["prepare", "--train-dir", "T", "--dev-dir", "D", "--out", "{out}", "--vocab-size", "0"], "--vocab-size"),
    (["train-teacher", "llama-tiny", "--data", "{prepared}", "--out", "{out}", "--set", "training.batch_size=0"],
     "training.batch_size"),
    (["train-student", "student-tiny", "--data", "{prepared}", "--out", "{out}", "--set", "training.lr=-1"],
     "training.lr"),
    (["train-student", "student-tiny", "--data", "{prepared}", "--out", "{out}", "--set", "training.seed=-1"],
     "training.seed"),
    (["train-student", "student-tiny", "--data", "{prepared}", "--out", "{out}", "--set", "model.n_layer=0"],
     "model.n_layer"),
    (["distill", "student-tiny", "--cache", "{cache}", "--data", "{prepared}", "--out", "{out}", "--set",
      "distill.alpha=1.5"], "distill.alpha"),
    (["distill", "student-tiny", "--cache", "{cache}", "--data", "{prepared}", "--out", "{out}", "--set",
      "distill.temperature=0"], "distill.temperature"),
    (["distill", "student-tiny", "--cache", "{cache}", "--data", "{prepared}", "--out", "{out}", "--set",
      "training.max_train_windows=0"], "training.max_train_windows"),
    *[(["dump-logits", "--teacher", "{teacher}", "--data", "{prepared}", "--cache", "{out}", *extra], option)
      for extra, option in [(["--topk", "0"], "--topk"), (["--topk", "-3"], "--topk"), (["--topk", "100000"], "--topk"),
                            (["--batch-size", "0"], "--batch-size"), (["--seq-len", "4096"], "--seq-len"),
                            (["--seq-len", "0"], "--seq-len"), (["--temperature", "0"], "--temperature"),
                            (["--temperature", "-1"], "--temperature"), (["--max-windows", "0"], "--max-windows"),
                            (["--chunk-windows", "0"], "--chunk-windows"), (["--data-seed", "-1"], "--data-seed")]],
    (["cache", "verify", "--cache", "{cache}", "--sample", "0"], "--sample"),
    (["cache", "verify", "--cache", "{cache}", "--max-kl", "-1"], "--max-kl"),
    (["eval", "{teacher}", "--batch-size", "0", "--out", "{out}"], "--batch-size"),
    (["eval", "{teacher}", "--max-pairs", "0", "--out", "{out}"], "--max-pairs"),
    (["eval", "{teacher}", "--dev-windows", "0", "--out", "{out}"], "--dev-windows"),
    (["eval", "{teacher}", "--seq-len", "4096", "--data", "{prepared}", "--out", "{out}"], "--seq-len"),
    (["eval", "{out}", "--out", "{out}"], "config.json"),
    (["pipeline", "--preset", "tiny", "--corpus", "D", "--workdir", "{out}", "--nproc", "0"], "--nproc"),
    (["pipeline", "--preset", "huge", "--corpus", "D", "--workdir", "{out}"], "--preset"),
    (["study", "student-tiny", "--data", "{prepared}", "--workdir", "{out}", "--cache", "{cache}", "--seeds", "0"],
     "--seeds"),
    (["study", "student-tiny", "--data", "{prepared}", "--workdir", "{out}", "--cache", "{cache}", "--arm", "x"],
     "--arm"),
]

WORK_ERRORS = {("eval", "config.json"), ("dump-logits", "100000")}
"""(command, the bad value) of BAD_ARGS that only the work can refuse: a model dir without config.json, and a top-k
above the teachers' vocabulary (known once the prepared dir is read): exit 1. Every other bad value is a usage
error, exit 2, whether click's parameter type or bbl's own check refuses it (bbl.cli.params)."""


@pytest.mark.parametrize("argv,option", BAD_ARGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_ARGS])
def test_bad_argument_is_one_error_line_exit_1_or_2_and_nothing_written(argv, option, clean_cache, tiny_teachers,
                                                                        prepared, tmp_path):
    out = tmp_path / "out"
    fill = {"{out}": out, "{prepared}": prepared, "{cache}": clean_cache, "{teacher}": tiny_teachers[0]}
    res = run([fill.get(a, a) for a in argv])
    work = (argv[0], option) in WORK_ERRORS or (argv[0], argv[-1]) in WORK_ERRORS
    assert res.exit_code == (1 if work else 2), res.output
    errors = error_lines(res)
    assert len(errors) == 1 and option in errors[0], res.output
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []  # not even an empty --out
