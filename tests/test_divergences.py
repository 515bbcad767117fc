"""`distill.divergence`: each divergence against its paper's formula by hand, its properties, k = V equal to the
dense divergence, the chunked loss equal to the unfused one (values, gradients, float64 gradcheck), forward KL
unchanged, the (divergence, cache reading) pairs refused in one line, and tiny students trained end to end."""

import json
import math

import numpy as np
import pytest
import torch

from bbl.config import DistillConfig, DivergenceName, load_config
from bbl.errors import BblError
from bbl.losses import (
    DIVERGENCES,
    Divergence,
    distillation_loss,
    full_divergence,
    reduce_kd,
    student_coarse_logprobs,
    topk_divergence,
    topk_renorm_kl,
    topk_tail_kl,
)
from bbl.losses.chunked import KDTargets, chunked_head_loss
from bbl.losses.readings import reading_problem

from .helpers import HEAD_SHAPE, SEQ, dump, error_lines, head_loss_batch, run

NAMES = list(DIVERGENCES)
RENORM_REFUSED = ("reverse_kl", "akl")  # infinite against a teacher that gives the tail no mass


def _pairs(kinds=("topk_tail", "topk_renorm", "full")):
    return [(n, k) for n in NAMES for k in kinds if not (k == "topk_renorm" and n in RENORM_REFUSED)]


# ---------------------------------------------------------------- each formula, by hand from its paper


def _kl(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = a > 0
    return float(np.sum(a[keep] * np.log(a[keep] / b[keep])))


P = np.array([0.2, 0.22, 0.18, 0.21, 0.19])  # sorted: 0.22 (id 1), 0.21 (id 3), ... cumulative 0.22, 0.43, 0.63
Q = np.array([0.35, 0.1, 0.25, 0.05, 0.25])


def _by_hand(name, p, q, *, beta=0.3, skew=0.2):
    if name == "forward_kl":  # Hinton et al. 2015
        return _kl(p, q)
    if name == "reverse_kl":
        return _kl(q, p)
    if name == "jsd":  # GKD, Agarwal et al. 2024, Eq. 1
        m = beta * p + (1 - beta) * q
        return beta * _kl(p, m) + (1 - beta) * _kl(q, m)
    if name == "skew_kl":  # DistiLLM, Ko et al. 2024: KL(p ‖ a p + (1 - a) q)
        return _kl(p, skew * p + (1 - skew) * q)
    if name == "skew_rkl":  # DistiLLM: KL(q ‖ (1 - a) p + a q)
        return _kl(q, (1 - skew) * p + skew * q)
    if name == "tvd":
        return 0.5 * float(np.abs(p - q).sum())
    if name == "akl":  # Wu et al. 2025: head = the top ids whose cumulative teacher mass stays within 0.5
        head = np.zeros(len(p), bool)
        head[[1, 3]] = True  # P's head, read off its sorted cumulative masses above
        gap = np.abs(p - q)
        g_head, g_tail = gap[head].sum(), gap[~head].sum()
        return (g_head * _kl(p, q) + g_tail * _kl(q, p)) / (g_head + g_tail)
    raise AssertionError(name)


@pytest.mark.parametrize("name", NAMES)
def test_each_divergence_equals_its_formula_by_hand(name):
    div = Divergence(name, jsd_beta=0.3, skew=0.2)
    got = div(torch.tensor(np.log(P)), torch.tensor(np.log(Q)))
    assert got.shape == () and got.item() == pytest.approx(_by_hand(name, P, Q), rel=1e-12, abs=1e-15)
    # and on a (k+1)-outcome coarsening: the same formula over {ids, tail}
    coarse_p, coarse_q = np.r_[P[:3], P[3:].sum()], np.r_[Q[:3], Q[3:].sum()]
    got = div(torch.tensor(np.log(coarse_p)), torch.tensor(np.log(coarse_q)))
    if name != "akl":  # AKL's head on the coarsening is another set; the by-hand mask above is P's own
        assert got.item() == pytest.approx(_by_hand(name, coarse_p, coarse_q), rel=1e-12, abs=1e-15)


def test_akl_head_is_the_teachers_top_mass_and_its_first_outcome():
    p = torch.tensor([[0.05, 0.7, 0.25], [0.3, 0.3, 0.4]], dtype=torch.float64)
    q = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.6, 0.3]], dtype=torch.float64)
    got = Divergence("akl")(p.log(), q.log())
    for row, head in ((0, [1]), (1, [2])):  # 0.7 alone passes 0.5 but the first is always in; 0.4 + 0.3 > 0.5
        pr, qr = p[row].numpy(), q[row].numpy()
        mask = np.isin(np.arange(3), head)
        gap = np.abs(pr - qr)
        want = (gap[mask].sum() * _kl(pr, qr) + gap[~mask].sum() * _kl(qr, pr)) / gap.sum()
        assert got[row].item() == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------- properties


def _random_coarse(seed, rows=64, n=9, zero_tail=False):
    g = torch.Generator().manual_seed(seed)
    log_p = torch.log_softmax(torch.randn(rows, n, generator=g, dtype=torch.float64) * 3, -1)
    log_q = torch.log_softmax(torch.randn(rows, n, generator=g, dtype=torch.float64) * 3, -1)
    if zero_tail:  # topk_renorm's teacher: no mass on the last outcome
        log_p = torch.cat([log_p[:, :-1] - torch.logsumexp(log_p[:, :-1], -1, keepdim=True),
                           torch.full((rows, 1), float("-inf"), dtype=torch.float64)], -1)
    return log_p, log_q


@pytest.mark.parametrize("name", NAMES)
def test_non_negative_and_zero_when_the_distributions_are_equal(name):
    div = Divergence(name)
    for zero_tail in (False, True):
        log_p, log_q = _random_coarse(0, zero_tail=zero_tail)
        value = div(log_p, log_q)
        if zero_tail and name in RENORM_REFUSED:
            assert torch.isinf(value).all()  # why topk_renorm refuses them
            continue
        assert torch.isfinite(value).all() and (value >= 0).all()
        torch.testing.assert_close(div(log_p, log_p), torch.zeros(len(log_p), dtype=torch.float64), atol=1e-12,
                                   rtol=0)


def test_jsd_is_at_most_ln2_and_reaches_it_on_disjoint_supports():
    log_p, log_q = _random_coarse(1)
    assert (Divergence("jsd", jsd_beta=0.5)(log_p, log_q) <= math.log(2) + 1e-12).all()
    disjoint_p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64).log()
    disjoint_q = torch.tensor([0.0, 0.0, 0.3, 0.7], dtype=torch.float64).log()
    assert Divergence("jsd", jsd_beta=0.5)(disjoint_p, disjoint_q).item() == pytest.approx(math.log(2), rel=1e-9)
    assert Divergence("tvd")(disjoint_p, disjoint_q).item() == pytest.approx(1.0)


def test_skew_and_jsd_ends_are_forward_and_reverse_kl():
    log_p, log_q = _random_coarse(2)
    fkl, rkl = Divergence("forward_kl")(log_p, log_q), Divergence("reverse_kl")(log_p, log_q)
    torch.testing.assert_close(Divergence("skew_kl", skew=0.0)(log_p, log_q), fkl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Divergence("skew_rkl", skew=0.0)(log_p, log_q), rkl, rtol=1e-12, atol=1e-12)
    for name in ("skew_kl", "skew_rkl"):  # the mixture is the other distribution itself: nothing left
        torch.testing.assert_close(Divergence(name, skew=1.0)(log_p, log_q), torch.zeros_like(fkl), atol=1e-12,
                                   rtol=0)
    torch.testing.assert_close(Divergence("jsd", jsd_beta=0.0)(log_p, log_q), fkl)  # TRL's ends
    torch.testing.assert_close(Divergence("jsd", jsd_beta=1.0)(log_p, log_q), rkl)
    # and a skew in between lies below the plain KL (the mixture is closer to p)
    assert (Divergence("skew_kl", skew=0.1)(log_p, log_q) <= fkl + 1e-12).all()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "akl"])
def test_coarsened_f_divergence_is_a_lower_bound_of_the_full_one(name):
    g = torch.Generator().manual_seed(3)
    teacher, student = torch.randn(2, 5, 40, generator=g) * 2, torch.randn(2, 5, 40, generator=g)
    top, ids = torch.log_softmax(teacher / 2.0, -1).topk(6, -1)
    tail = torch.log1p(-top.exp().sum(-1))
    div = Divergence(name)
    coarse = topk_divergence(student, ids, top, tail, 2.0, div)
    assert (coarse <= full_divergence(student, teacher, 2.0, div) + 1e-5).all()  # data-processing inequality


@pytest.mark.parametrize("renorm", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_at_k_equal_v_the_coarse_divergence_is_the_dense_one_with_equal_gradients(name, renorm):
    g = torch.Generator().manual_seed(4)
    b, s, v, temperature = 2, 3, 11, 2.0
    teacher = torch.randn(b, s, v, generator=g, dtype=torch.float64) * 2
    student = torch.randn(b, s, v, generator=g, dtype=torch.float64, requires_grad=True)
    log_p = torch.log_softmax(teacher / temperature, -1)
    ids = torch.stack([torch.randperm(v, generator=g) for _ in range(b * s)]).view(b, s, v)  # any order
    tail = torch.full((b, s), float("-inf"), dtype=torch.float64)
    div = Divergence(name, fused=False)  # the generic path in float64 (fused forward KL: tests/test_losses.py)
    coarse = topk_divergence(student, ids, log_p.gather(-1, ids), tail, temperature, div, renorm=renorm)
    dense = div(log_p, torch.log_softmax(student / temperature, -1))
    torch.testing.assert_close(coarse, dense, rtol=1e-10, atol=1e-12)
    (g1,) = torch.autograd.grad(coarse.sum(), student)
    (g2,) = torch.autograd.grad(dense.sum(), student)
    assert torch.isfinite(g1).all()
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


def test_student_tail_is_exact_for_confident_rows_and_close_otherwise():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 30, generator=g, dtype=torch.float64)
    logits[0, 1, :3] += 12.0  # a confident row: the 3 ids hold > 0.999 of the mass
    ids = torch.arange(3).expand(2, 4, 3)
    coarse = student_coarse_logprobs(logits, ids, 1.0)
    log_q = torch.log_softmax(logits, -1)
    exact = torch.logsumexp(log_q[..., 3:], -1)
    assert coarse[0, 1, -1].exp() < 1e-2
    torch.testing.assert_close(coarse[..., -1], exact, rtol=1e-12, atol=1e-12)  # float64 in, float64 exact
    got32 = student_coarse_logprobs(logits.float(), ids, 1.0)[..., -1]
    torch.testing.assert_close(got32.double(), exact, rtol=0, atol=2e-4)  # float32: ~1e-4 relative at worst


# ---------------------------------------------------------------- the chunked loss: one gradient path

B, S, H, V, K = (HEAD_SHAPE[x] for x in "BSHVK")


def _batch(temperature, seed=0, dtype=torch.float32):
    return head_loss_batch(temperature, seed, dtype)


def _unfused(kind, div, hidden, weight, labels, teacher, ids, top, tail, *, alpha, temperature, reduction):
    logits = hidden @ weight.T
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                                           ignore_index=-100)
    kl = (full_divergence(logits, teacher, temperature, div) if kind == "full" else
          topk_divergence(logits, ids, top, tail, temperature, div, renorm=kind == "topk_renorm"))
    kd = reduce_kd(kl, reduction)
    return distillation_loss(ce, kd, alpha=alpha, temperature=temperature), kd


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("name,kind", _pairs())
def test_chunked_equals_unfused_for_every_divergence_and_kind(name, kind, temperature):
    hidden, weight, labels, teacher, ids, top, tail = _batch(temperature)
    div = Divergence(name, jsd_beta=0.3, skew=0.2)
    reduction = "babyllama" if temperature == 2.0 else "token_mean"
    loss, _, kd_value = chunked_head_loss(hidden, weight, labels, kd=KDTargets(kind, ids, top, tail, teacher),
                                          alpha=0.3, temperature=temperature, reduction=reduction, chunk_rows=4,
                                          divergence=div)
    grads = torch.autograd.grad(loss, [hidden, weight])
    ref, ref_kd = _unfused(kind, div, hidden, weight, labels, teacher, ids, top, tail, alpha=0.3,
                           temperature=temperature, reduction=reduction)
    ref_grads = torch.autograd.grad(ref, [hidden, weight])
    assert kd_value > 1e-3  # a real KD term is compared
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kd_value, ref_kd.detach(), rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", ["topk_tail", "topk_renorm", "full"])
def test_the_shared_chain_rule_gives_forward_kls_hand_fused_gradient(kind):
    """Forward KL through the generic path (autograd on the coarsening + `chain_rule`) equals its fused path."""
    hidden, weight, labels, teacher, ids, top, tail = _batch(2.0, seed=1)
    kd = KDTargets(kind, ids, top, tail, teacher)
    out = {}
    for fused in (True, False):
        loss, _, _ = chunked_head_loss(hidden, weight, labels, kd=kd, temperature=2.0, chunk_rows=8,
                                       divergence=Divergence("forward_kl", fused=fused))
        out[fused] = (loss, *torch.autograd.grad(loss, [hidden, weight]))
    for got, want in zip(out[False], out[True], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,kind", _pairs(("topk_tail", "topk_renorm", "full")))
def test_chunked_loss_passes_float64_gradcheck(name, kind):
    if name == "akl":
        pytest.skip("AKL's weights are constants of its gradient by definition (Wu et al.; the authors' code "
                    "detaches them), so finite differences, which move them, differ; its chunked gradient is "
                    "checked against autograd above")
    g = torch.Generator().manual_seed(6)
    b, s, h, v, k = 1, 3, 4, 9, 3
    hidden = torch.randn(b, s, h, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, v, (b, s), generator=g)
    teacher = torch.randn(b, s, v, generator=g, dtype=torch.float64)
    top, ids = torch.log_softmax(teacher / 2.0, -1).topk(k, -1)
    tail = torch.log1p(-top.exp().sum(-1))
    kd = KDTargets(kind, ids, top, tail, teacher)
    div = Divergence(name, jsd_beta=0.3, skew=0.2)
    assert torch.autograd.gradcheck(
        lambda x, w: chunked_head_loss(x, w, labels, kd=kd, alpha=0.25, temperature=2.0, chunk_rows=2,
                                       divergence=div)[0], (hidden, weight))


def test_student_coarsening_passes_float64_gradcheck_on_both_tail_paths():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(1, 3, 8, generator=g, dtype=torch.float64)
    logits[0, 2, :2] += 9.0  # a confident row: its tail is the exact logsumexp, not 1 - Σ
    ids = torch.tensor([0, 1]).expand(1, 3, 2)
    assert torch.autograd.gradcheck(lambda z: student_coarse_logprobs(z, ids, 1.5), (logits.requires_grad_(),))


# ---------------------------------------------------------------- forward KL: today's losses, unchanged


def _old_topk_tail_kl(logits, ids, top, tail, temperature):
    """topk_tail_kl as bbl computed it before divergences existed (commit cecfa56), written out."""
    log_q_top = torch.log_softmax(logits.float() / temperature, -1).gather(-1, ids)
    log_q_tail = (1.0 - log_q_top.double().exp().sum(-1)).clamp_min(1e-300).log().float()

    def term(lp, diff):
        zero = torch.isneginf(lp)
        return torch.where(zero, torch.zeros_like(lp), lp.exp() * torch.where(zero, 0.0, diff))

    lp, lt = top.float(), tail.float()
    return term(lp, lp - log_q_top).sum(-1) + term(lt, lt - log_q_tail)


def test_forward_kl_is_todays_loss_bit_for_bit():
    hidden, weight, labels, teacher, ids, top, tail = _batch(2.0, seed=2)
    logits = (hidden @ weight.T).detach()
    assert torch.equal(topk_tail_kl(logits, ids, top, tail, 2.0), _old_topk_tail_kl(logits, ids, top, tail, 2.0))
    assert torch.equal(topk_divergence(logits, ids, top, tail, 2.0), topk_tail_kl(logits, ids, top, tail, 2.0))
    assert torch.equal(topk_divergence(logits, ids, top, tail, 2.0, renorm=True),
                       topk_renorm_kl(logits, ids, top, tail, 2.0))
    kd = KDTargets("topk_tail", ids, top, tail)
    default = chunked_head_loss(hidden, weight, labels, kd=kd, temperature=2.0)
    named = chunked_head_loss(hidden, weight, labels, kd=kd, temperature=2.0,
                              divergence=Divergence.from_config(DistillConfig()))
    assert DistillConfig().divergence == "forward_kl"
    for a, b in zip(default, named, strict=True):
        assert torch.equal(a, b)


def test_verify_fidelity_kl_is_the_losses_kl():
    from bbl.cache.compute.fidelity import stored_kl

    rng = np.random.default_rng(0)
    exact = np.log(rng.dirichlet(np.ones(9), size=20))
    stored = np.round(exact * 64) / 64  # the cache's 2^-6 grid
    pe = exact - np.logaddexp.reduce(exact, -1, keepdims=True)
    ps = stored - np.logaddexp.reduce(stored, -1, keepdims=True)
    by_hand = (np.exp(pe) * (pe - ps)).sum(-1)  # KL of the renormalised (k+1)-outcome distributions
    np.testing.assert_allclose(stored_kl(exact[:, :8], exact[:, 8], stored[:, :8], stored[:, 8]), by_hand,
                               rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- which cache readings each divergence takes


def test_the_registry_holds_the_configs_divergences():
    import typing

    assert list(DIVERGENCES) == list(typing.get_args(DivergenceName))


@pytest.mark.parametrize("name", NAMES)
def test_reading_problems(name):
    assert reading_problem(name, "topk_tail") is None  # the tail-aware top-k reading takes every divergence
    assert reading_problem(name, None) is None  # online
    for variant in ("sampled", "hybrid"):  # only forward KL has an unbiased estimator from draws
        assert (reading_problem(name, variant) is None) == (name == "forward_kl")
    assert (reading_problem(name, "topk_renorm") is None) == (name not in RENORM_REFUSED)


def test_bad_divergence_settings_are_refused():
    for override, match in (("distill.divergence=kl", "distill.divergence 'kl'"), ("distill.jsd_beta=0", "jsd_beta"),
                            ("distill.jsd_beta=1.5", "jsd_beta"), ("distill.skew=1", "skew"),
                            ("distill.skew=-0.1", "skew")):
        with pytest.raises(BblError, match=match):
            load_config("student-tiny", [override])
    assert load_config("student-tiny", ["distill.divergence=jsd", "distill.jsd_beta=0.9"]).distill.jsd_beta == 0.9


# ---------------------------------------------------------------- the Trainer and `bbl distill`


def test_trainers_are_module_level_classes():
    import inspect

    from bbl.distill.trainer import DistillTrainer
    from bbl.finetune.trainer import FinetuneTrainer
    from bbl.train.trainer import LossTrainer, WindowTrainer, make_window_trainer

    assert issubclass(DistillTrainer, WindowTrainer) and issubclass(WindowTrainer, LossTrainer)
    assert make_window_trainer() is WindowTrainer and make_window_trainer(DistillTrainer) is DistillTrainer
    assert FinetuneTrainer.__module__ == "bbl.finetune.trainer"
    params = inspect.signature(DistillTrainer.__init__).parameters
    assert params["distill"].kind is inspect.Parameter.KEYWORD_ONLY and params["distill"].annotation == "DistillConfig"


@pytest.fixture(scope="module")
def caches(tiny_teachers, prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("divergence-caches")
    out = {"topk": root / "topk.zarr", "sampled": root / "sampled.zarr"}
    dump(tiny_teachers, prepared, out["topk"])
    dump(tiny_teachers, prepared, out["sampled"], targets="sampled", num_samples=6)
    return out


@pytest.mark.parametrize("name", ["jsd", "reverse_kl"])
def test_trainer_chunked_and_hf_paths_agree_for_a_divergence(name, caches, prepared, tmp_path):
    from transformers import TrainingArguments

    from bbl.cache import CacheDataset, open_cache
    from bbl.distill.trainer import DistillTrainer
    from bbl.models.build import build_model

    ds = CacheDataset(open_cache(caches["topk"]))
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ds[0]}
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    results = {}
    for impl in ("hf", "chunked"):
        model = build_model(load_config("student-tiny").model, 320, seed=0).train()
        trainer = DistillTrainer(model=model, args=args, distill=DistillConfig(kd_variant="topk_tail", divergence=name),
                                 temperature=2.0, cache_temperature=2.0, loss_impl=impl, loss_chunk_rows=24)
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        results[impl] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results["chunked"][0], results["hf"][0], rtol=1e-5, atol=1e-6)
    for n, grad in results["hf"][1].items():
        torch.testing.assert_close(results["chunked"][1][n], grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("cache,sets,fix", [
    ("sampled", ["distill.divergence=reverse_kl"], "distill.divergence=forward_kl"),
    ("sampled", ["distill.divergence=tvd", "distill.kd_variant=sampled"], "distill.divergence=forward_kl"),
    ("topk", ["distill.divergence=reverse_kl", "distill.kd_variant=topk_renorm"], "distill.kd_variant=topk_tail"),
    ("topk", ["distill.divergence=akl", "distill.kd_variant=topk_renorm"], "distill.kd_variant=topk_tail"),
])
def test_an_unsupported_reading_is_refused_in_one_line_writing_nothing(cache, sets, fix, caches, prepared, tmp_path):
    out = tmp_path / "student"
    args = ["distill", "student-tiny", "--cache", caches[cache], "--data", prepared, "--out", out,
            "--set", f"training.seq_len={SEQ}"]
    res = run(args + [a for s in sets for a in ("--set", s)])
    assert res.exit_code == 1, res.output
    assert len(error_lines(res)) == 1 and fix in error_lines(res)[0], res.output
    assert not out.exists()


@pytest.mark.parametrize("source", ["cache", "online"])
def test_distill_with_reverse_kl_trains_a_tiny_student(source, caches, tiny_teachers, prepared, tmp_path):
    out = tmp_path / "student"
    where = (["--cache", caches["topk"]] if source == "cache" else
             [a for t in tiny_teachers for a in ("--teacher", t)])
    res = run(["distill", "student-tiny", *where, "--data", prepared, "--out", out, "--set",
               "distill.divergence=reverse_kl", "--set", "training.max_steps=3", "--set", "training.logging_steps=1",
               "--set", f"training.seq_len={SEQ}"])
    assert res.exit_code == 0, res.output
    run_file = json.loads((out / "bbl_run.json").read_text())
    assert run_file["divergence"] == "reverse_kl" and run_file["complete"]
    kd = [r["kd_loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "kd_loss" in r]
    assert len(kd) == 3 and all(np.isfinite(k) and k > 0 for k in kd)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out) is not None  # a loadable HF dir
