"""Sampled and hybrid sparse soft targets (issue 15): the estimators' math, the dump, the cache kinds and the
losses that read them."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import zarr

from bbl.cache import CacheReader
from bbl.cache.compute.fidelity import draws_check
from bbl.cache.verify import verify_against_teachers
from bbl.losses import full_kl, hybrid_kl, hybrid_targets, sampled_kl, sampled_logprobs, topk_tail_kl
from bbl.losses.chunked import KDTargets, chunked_head_loss
from bbl.models.ensemble import ensemble_targets, ensemble_targets_from_hidden, sparse_targets

from .helpers import SEQ, arrays, error_lines, run, sigkill_after_chunks

# ---------------------------------------------------------------- the estimators


def test_sampled_logprobs_are_counts_over_draws_once_per_id():
    ids = torch.tensor([[[3, 3, 5, 7, 7, 7]]])
    lp = sampled_logprobs(ids)
    expected = torch.log(torch.tensor([2 / 6, 0.0, 1 / 6, 3 / 6, 0.0, 0.0]))
    torch.testing.assert_close(lp[0, 0], expected.float())
    tail = torch.tensor([[np.log(0.25)]], dtype=torch.float32)
    torch.testing.assert_close(sampled_logprobs(ids, tail).exp().sum(), torch.tensor(0.25))


def _grad(fn, logits):
    z = logits.clone().requires_grad_(True)
    fn(z).sum().backward()
    return z.grad


def _draw(p, n, generator, exclude=None):
    """n draws per row of p (rows, V), sorted, as the dump stores them (via the dump's own sparse_targets)."""
    logits = p.log()
    if exclude is None:
        return sparse_targets(logits.clone(), targets="sampled", num_samples=n, generator=generator)["sample_ids"]
    return sparse_targets(logits.clone(), targets="hybrid", top_k=exclude, num_samples=n,
                          generator=generator)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampled_gradient_is_unbiased_for_the_full_kl(temperature):
    """The mean over many independent draws of the sampled KL's gradient converges to the full KL's gradient
    (Anshumann et al. 2025, Section 3); a biased estimator (top-k renormalised) does not."""
    g = torch.Generator().manual_seed(0)
    v, reps, n = 11, 20_000, 4
    teacher = torch.randn(1, 1, v, generator=g) * 2
    p = torch.softmax(teacher / temperature, -1)
    student = torch.randn(1, 1, v, generator=g)
    want = _grad(lambda z: full_kl(z, teacher, temperature), student)[0, 0]
    draws = _draw(p[0, 0].expand(reps, v), n, g).view(reps, 1, n)
    grads = _grad(lambda z: sampled_kl(z, draws, temperature), student.expand(reps, 1, v).contiguous())[:, 0]
    mean, se = grads.mean(0), grads.std(0) / reps ** 0.5
    assert (mean - want).abs().max() <= 4 * se.max() + 1e-6, (mean, want, se)
    assert se.max() < 0.02  # the check is tight enough to mean something
    # the bias a deterministic sparse target has: top-2 renormalised
    from bbl.losses import topk_renorm_kl

    top_lp, top_ids = p.log().topk(2, -1)
    renorm = _grad(lambda z: topk_renorm_kl(z, top_ids, top_lp, torch.zeros(1, 1), temperature), student)[0, 0]
    assert (renorm - want).abs().max() > 10 * se.max()


def test_hybrid_gradient_is_unbiased_and_exact_on_the_top_k():
    g = torch.Generator().manual_seed(1)
    v, k, reps, n, temperature = 13, 3, 20_000, 3, 1.0
    teacher = torch.randn(1, 1, v, generator=g) * 2
    student = torch.randn(1, 1, v, generator=g)
    want = _grad(lambda z: full_kl(z, teacher, temperature), student)[0, 0]
    t = _draw(torch.softmax(teacher[0, 0], -1).expand(reps, v), n, g, exclude=k)
    assert not np.isin(t["sample_ids"][0].numpy(), t["topk_ids"][0].numpy()).any()  # draws only from the tail

    def loss(z):
        return hybrid_kl(z, t["topk_ids"].view(reps, 1, k), t["topk_logprobs"].view(reps, 1, k),
                         t["tail_logprob"].view(reps, 1), t["sample_ids"].view(reps, 1, n), temperature)

    grads = _grad(loss, student.expand(reps, 1, v).contiguous())[:, 0]
    mean, se = grads.mean(0), grads.std(0) / reps ** 0.5
    assert (mean - want).abs().max() <= 4 * se.max() + 1e-6
    top = t["topk_ids"][0]
    assert float(grads[:, top].std(0).max()) < float(grads.std(0).max())  # the top k carry less noise


def test_hybrid_equals_topk_tail_with_no_draws_and_full_kl_when_k_is_v():
    g = torch.Generator().manual_seed(2)
    b, s, v, temperature = 2, 3, 9, 2.0
    teacher, student = torch.randn(b, s, v, generator=g), torch.randn(b, s, v, generator=g)
    t = ensemble_targets([teacher], temperature=temperature, targets="hybrid", top_k=4, num_samples=0)
    got = hybrid_kl(student, t["topk_ids"], t["topk_logprobs"], t["tail_logprob"], t["sample_ids"], temperature)
    want = topk_tail_kl(student, t["topk_ids"], t["topk_logprobs"], t["tail_logprob"], temperature)
    torch.testing.assert_close(got, want)
    full = ensemble_targets([teacher], temperature=temperature, targets="hybrid", top_k=v, num_samples=5,
                            generator=g)
    assert torch.isneginf(full["tail_logprob"]).all()

    def hyb(z):
        return hybrid_kl(z, full["topk_ids"], full["topk_logprobs"], full["tail_logprob"], full["sample_ids"],
                         temperature)

    torch.testing.assert_close(hyb(student), full_kl(student, teacher, temperature))
    torch.testing.assert_close(_grad(hyb, student), _grad(lambda z: full_kl(z, teacher, temperature), student))


@pytest.mark.parametrize("kind", ["sampled", "hybrid"])
def test_chunked_loss_on_sparse_targets_equals_the_unfused_loss(kind):
    """What DistillTrainer hands the chunked loss for a sampled / hybrid cache gives the unfused losses' values
    and gradients."""
    g = torch.Generator().manual_seed(3)
    b, s, h, v, n, temperature, alpha = 2, 6, 8, 40, 5, 2.0, 0.5
    hidden = torch.randn(b, s, h, generator=g, requires_grad=True)
    weight = torch.randn(v, h, generator=g, requires_grad=True)
    labels = torch.randint(0, v, (b, s), generator=g)
    t = ensemble_targets([torch.randn(b, s, v, generator=g)], temperature=temperature, targets=kind, top_k=4,
                         num_samples=n, generator=g)
    if kind == "sampled":
        ids, lp = t["sample_ids"], sampled_logprobs(t["sample_ids"])
        tail = torch.full((b, s), float("-inf"))
    else:
        ids, lp, tail = hybrid_targets(t["topk_ids"], t["topk_logprobs"], t["tail_logprob"], t["sample_ids"])
    loss, _, _ = chunked_head_loss(hidden, weight, labels, kd=KDTargets("topk_tail", ids, lp, tail), alpha=alpha,
                                   temperature=temperature, chunk_rows=5)
    loss.backward()
    got = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    logits = hidden @ weight.T
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1))
    kl = (sampled_kl(logits, t["sample_ids"], temperature) if kind == "sampled" else
          hybrid_kl(logits, t["topk_ids"], t["topk_logprobs"], t["tail_logprob"], t["sample_ids"], temperature))
    ref = alpha * ce + (1 - alpha) * temperature ** 2 * kl.mean()
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[0], hidden.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[1], weight.grad, rtol=1e-4, atol=1e-6)


def test_draws_from_hidden_states_equal_draws_from_logits():
    g = torch.Generator().manual_seed(4)
    hiddens = [torch.randn(2, 7, 6, generator=g), torch.randn(2, 7, 5, generator=g)]
    heads = [torch.nn.Linear(6, 30, bias=False), torch.nn.Linear(5, 30)]
    logits = [torch.nn.functional.linear(x, hd.weight, hd.bias) for x, hd in zip(hiddens, heads, strict=True)]
    with torch.no_grad():
        for kind in ("sampled", "hybrid"):
            a = ensemble_targets(logits, temperature=2.0, targets=kind, top_k=4, num_samples=6,
                                 generator=torch.Generator().manual_seed(9))
            b = ensemble_targets_from_hidden(hiddens, heads, temperature=2.0, targets=kind, top_k=4, num_samples=6,
                                             generator=torch.Generator().manual_seed(9), chunk_rows=3)
            assert torch.equal(a["sample_ids"], b["sample_ids"]), kind


# ---------------------------------------------------------------- the dump and the cache


def test_sampled_and_hybrid_caches_hold_their_arrays_and_honest_draws(sparse_caches, tiny_teachers):
    top, sam, hyb = (arrays(sparse_caches[k]) for k in ("topk", "sampled", "hybrid"))
    assert "topk_ids" not in sam and sam["sample_ids"].shape == (24, SEQ, 12)
    assert (np.diff(sam["sample_ids"].astype(int), axis=-1) >= 0).all()  # sorted ascending
    for k in ("topk_ids", "topk_logprobs", "tail_logprob", "input_ids"):
        np.testing.assert_array_equal(top[k], hyb[k], err_msg=k)  # hybrid = the top-k cache plus draws
    drawn_in_top = (hyb["sample_ids"][..., :, None] == hyb["topk_ids"][..., None, :]).any(-1)
    assert not drawn_in_top.any()  # hybrid draws come from the tail only
    for kind in ("sampled", "hybrid"):
        r = verify_against_teachers(CacheReader(sparse_caches[kind]), tiny_teachers, sample=12)
        assert abs(r["draws_z"]) < 5, r
    reader = CacheReader(sparse_caches["sampled"])
    assert (reader.targets, reader.num_samples, reader.top_k) == ("sampled", 12, 0)
    assert "targets" not in CacheReader(sparse_caches["topk"]).attrs  # a top-k cache's attributes are unchanged


def test_draws_check_fails_draws_from_another_distribution():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 50)) * 2
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    honest = np.sort(np.stack([rng.choice(50, 8, p=row) for row in p]), -1)
    uniform = np.sort(rng.integers(0, 50, size=(400, 8)), -1)
    ids = np.zeros((400,), dtype=np.int64)
    assert abs(draws_check(p, {"input_ids": ids, "sample_ids": honest})["draws_z"]) < 4
    assert draws_check(p, {"input_ids": ids, "sample_ids": uniform})["draws_z"] < -10


def test_cli_info_and_verify_describe_each_kind(sparse_caches, tiny_teachers):
    res = run(["cache", "info", "--cache", sparse_caches["sampled"]])
    assert res.exit_code == 0 and "targets sampled (12 draws from p_T)" in res.output and "distinct ids" in res.output
    res = run(["cache", "info", "--cache", sparse_caches["hybrid"]])
    assert "targets hybrid (top_k 8 + 6 draws from the tail)" in res.output and "top-k mass" in res.output
    res = run(["cache", "verify", "--cache", sparse_caches["hybrid"], "--teacher", tiny_teachers[0], "--teacher",
               tiny_teachers[1]])
    assert res.exit_code == 0, res.output
    assert "fidelity over" in res.output and "draws over" in res.output


@pytest.mark.slow
def test_a_killed_sampled_dump_resumes_byte_identical_and_a_lost_chunk_is_repaired(
        sparse_caches, tiny_teachers, prepared, tmp_path):
    path = tmp_path / "s.zarr"
    argv = [sys.executable, "-m", "bbl", "dump-logits", "--teacher", str(tiny_teachers[0]), "--teacher",
            str(tiny_teachers[1]), "--data", str(prepared), "--cache", str(path), "--targets", "sampled", "--samples",
            "12", "--seq-len", str(SEQ), "--chunk-windows", "4", "--batch-size", "2", "--max-windows", "24",
            "--device", "cpu"]
    sigkill_after_chunks(argv, path)
    assert not zarr.open_group(str(path), mode="r")["chunk_done"][:].all()
    assert subprocess.run(argv, capture_output=True).returncode == 0
    want, got = arrays(sparse_caches["sampled"]), arrays(path)
    for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=k)
    chunk = path / "sample_ids" / "c" / "2" / "0" / "0"
    chunk.unlink()
    assert run(["cache", "verify", "--cache", path]).exit_code == 1
    res = run(["cache", "repair", "--cache", path, "--teacher", tiny_teachers[0], "--teacher", tiny_teachers[1]])
    assert res.exit_code == 0, res.output
    assert chunk.read_bytes() == (sparse_caches["sampled"] / "sample_ids" / "c" / "2" / "0" / "0").read_bytes()


# ---------------------------------------------------------------- the losses read their own kind only


@pytest.mark.parametrize("kind,variant", [("sampled", "sampled"), ("hybrid", "hybrid"), ("hybrid", "topk_tail")])
def test_distill_streams_sparse_targets(kind, variant, sparse_caches, prepared, tmp_path):
    import json

    out = tmp_path / "student"
    res = run(["distill", "student-tiny", "--cache", sparse_caches[kind], "--data", prepared, "--out", out,
               "--set", f"distill.kd_variant={variant}", "--set", "training.max_steps=3",
               "--set", "training.logging_steps=1", "--set", f"training.seq_len={SEQ}"])
    assert res.exit_code == 0, res.output
    run_file = json.loads((out / "bbl_run.json").read_text())
    assert run_file["cache_targets"] == kind
    losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(m.get("kd_loss", np.nan)) and m["kd_loss"] > 0 for m in losses)


@pytest.mark.parametrize("kind,variant", [("topk", "topk_tail"), ("sampled", "sampled"), ("hybrid", "hybrid")])
def test_distill_reads_a_cache_as_its_own_kind_when_no_variant_is_set(kind, variant, sparse_caches, prepared, tmp_path):
    import json

    import yaml

    out = tmp_path / "student"
    res = run(["distill", "student-tiny", "--cache", sparse_caches[kind], "--data", prepared, "--out", out,
               "--set", "training.max_steps=2", "--set", f"training.seq_len={SEQ}"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "bbl_run.json").read_text())["kd_variant"] == variant
    assert yaml.safe_load((out / "bbl_config.yaml").read_text())["distill"]["kd_variant"] == variant  # resumable


def test_a_sampled_dump_draws_12_ids_when_samples_is_not_given(sparse_caches, tiny_teachers, prepared, tmp_path):
    out = tmp_path / "s.zarr"
    res = run(["dump-logits", "--teacher", tiny_teachers[0], "--teacher", tiny_teachers[1], "--data", prepared,
               "--cache", out, "--targets", "sampled", "--seq-len", SEQ, "--chunk-windows", 4, "--batch-size", 2,
               "--max-windows", 24, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert CacheReader(out).num_samples == 12
    want, got = arrays(sparse_caches["sampled"]), arrays(out)  # the same as an explicit --samples 12
    for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=k)


@pytest.mark.parametrize("kind,variant,fix", [
    ("sampled", "topk_tail", "distill.kd_variant=sampled"),
    ("topk", "sampled", "distill.kd_variant=topk_tail or topk_renorm"),
    ("topk", "hybrid", "--targets hybrid"),
    ("sampled", "hybrid", "distill.kd_variant=sampled"),
])
def test_a_cache_of_another_kind_is_refused_with_one_line(kind, variant, fix, sparse_caches, prepared, tmp_path):
    out = tmp_path / "student"
    res = run(["distill", "student-tiny", "--cache", sparse_caches[kind], "--data", prepared, "--out", out,
               "--set", f"distill.kd_variant={variant}", "--set", f"training.seq_len={SEQ}"])
    assert res.exit_code == 1
    assert len(error_lines(res)) == 1 and fix in error_lines(res)[0], res.output
    assert not out.exists()


def test_sampled_targets_refuse_another_temperature(sparse_caches, prepared, tmp_path):
    res = run(["distill", "student-tiny", "--cache", sparse_caches["sampled"], "--data", prepared, "--out",
               tmp_path / "s", "--set", "distill.kd_variant=sampled", "--set", "distill.temperature=1.0",
               "--set", "distill.allow_retemper=true", "--set", f"training.seq_len={SEQ}"])
    assert res.exit_code == 1 and "cannot be re-tempered" in error_lines(res)[0]


@pytest.mark.parametrize("extra,option,code", [
    (["--samples", "4"], "--samples", 2),                       # samples with topk: every one a usage error
    (["--targets", "hybrid", "--samples", "0"], "--samples", 2),
    (["--targets", "sampled", "--samples", "300"], "--samples", 2),
    (["--targets", "sampled", "--samples", "4", "--topk", "8"], "--topk", 2),
    (["--targets", "nucleus", "--samples", "4"], "--targets", 2),  # not a choice: click's own
])
def test_bad_sparse_options_are_one_line_and_write_nothing(extra, option, code, tiny_teachers, prepared, tmp_path):
    out = tmp_path / "c.zarr"
    res = run(["dump-logits", "--teacher", tiny_teachers[0], "--data", prepared, "--cache", out, *extra])
    assert res.exit_code == code and len(error_lines(res)) == 1 and option in error_lines(res)[0], res.output
    assert not out.exists()
