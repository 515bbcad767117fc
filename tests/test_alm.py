"""ALM from a cross-tokenizer cache (issue 41): the loss against docs/cache-format.md's worked example and the
paper's binarised KL, the chunks and groups by hand, the chunked loss against the full-logits one (values and
gradients), the dump's ALM arrays against the teacher's own log-probs, and a tiny distillation that trains with
it; caches dumped before ALM's arrays read as before and are refused for ALM in one line."""

import json
import math

import numpy as np
import pytest
import torch

from bbl.cache.compute.cross_tokenizer import CrossTokenizerConfig, TeacherText
from bbl.cache.dump import dump_logits
from bbl.cache.kinds.cross_tokenizer import ALM_ARRAYS, ALM_ATTR, ALM_STATIC, alm_targets
from bbl.cache.reader import CacheReader
from bbl.data.boundary import boundary_mask
from bbl.data.prepared import PreparedData
from bbl.data.tokenizer import load_tokenizer
from bbl.errors import BblError
from bbl.losses.alm import (
    GRADMAG_EPSILON,
    ALMSettings,
    alm_group_losses,
    alm_groups,
    alm_head_loss,
    alm_loss,
    binary_ce,
    student_alm_logprobs,
)

from .helpers import foreign_teacher, quiet

PAPER = ALMSettings(temperature=100.0, gamma=0.1, debias=True)
LN = math.log


def _example_row():
    """docs/cache-format.md's worked example: " the cat sat", teacher [BOS, Ġthe, Ġca, t, Ġsat], student [BOS,
    Ġthe, Ġcat, Ġs, at]; byte ends 0, 4, 7, 8, 12 and 0, 4, 8, 10, 12, so alignment [0, 1, 3, -1, 4]. The teacher's
    token log-probs (none for the first: no position predicts it) and boundary masses after each token, and the
    student's, from the doc's table."""
    row = {"input_ids": np.arange(5), "alignment": np.array([0, 1, 3, -1, 4], dtype=np.int32),
           "teacher_token_logprob": np.array([np.nan, -2.0, -3.0, -0.1, -4.0], dtype=np.float32),
           "teacher_boundary_logprob": np.log(np.array([0.70, 0.95, 0.01, 0.08, 0.60], dtype=np.float32))}
    student_token = torch.tensor([[-2.5, -2.8, -3.5, -1.2, 0.0]], dtype=torch.float64)  # position p: token p + 1
    student_boundary = torch.tensor([[LN(0.60), LN(0.90), LN(0.30), LN(0.02), LN(0.50)]], dtype=torch.float64)
    return row, student_token, student_boundary


def _batch(row):
    return {k: torch.from_numpy(v)[None] for k, v in alm_targets(row).items()}


def _spec_bce(lt, ls, tau=100.0, eps=1e-6):
    """The doc's plain-Python arithmetic (tokenkit's binary_ce)."""
    def l1mexp(x):
        return math.log1p(-math.exp(x)) if x < -math.log(2) else math.log(-math.expm1(x))
    a, b = lt / tau - eps, ls / tau - eps
    return -(math.exp(a) * b + (-math.expm1(a)) * l1mexp(b))


def test_the_chunks_of_a_row_are_the_alignments_by_hand():
    row, _, _ = _example_row()
    t = alm_targets(row)
    assert t["alm_start"].tolist() == [-1, 0, 1, -1, 2]  # c0 (BOS <-> BOS) left out: no log-prob for token 0
    assert t["alm_teacher_logprob"] == pytest.approx([0, -2.0, -3.1, 0, -4.0], abs=1e-6)
    assert t["alm_teacher_boundary"] == pytest.approx([0, LN(0.95), LN(0.08), 0, LN(0.60)], abs=1e-6)
    assert t["alm_next_ids"].tolist() == [1, 2, 3, 4, 0]
    group_end, group_start = alm_groups(torch.from_numpy(t["alm_start"])[None],
                                        torch.from_numpy(t["alm_teacher_boundary"])[None], 0.1)
    assert group_end[0].tolist() == [False, True, False, False, True]  # {c1}, {c2, c3}: 0.08 <= gamma
    assert group_start[0, 1] == 0 and group_start[0, 4] == 1


def test_alm_reproduces_the_worked_example_under_the_paper_defaults():
    row, token, boundary = _example_row()
    losses, lt, ls = alm_group_losses(token, boundary, _batch(row), PAPER)
    assert lt.tolist() == pytest.approx([-2.0 + LN(0.95), -7.1 + LN(0.60)], abs=1e-6)
    assert ls.tolist() == pytest.approx([-2.5 + LN(0.90), -7.5 + LN(0.50)], abs=1e-6)
    assert losses.tolist() == pytest.approx([0.09985306, 0.26225868], abs=1e-7)
    assert float(losses.mean()) == pytest.approx(0.18105587, abs=1e-7)
    no_merge = alm_group_losses(token, boundary, _batch(row), ALMSettings(100.0, 0.0, True))[0]
    assert float(no_merge.mean()) == pytest.approx(0.16545302, abs=1e-7)
    naive = alm_group_losses(token, boundary, _batch(row), ALMSettings(100.0, 0.0, False))[0]
    assert float(naive.mean()) == pytest.approx(0.13349521, abs=1e-7)  # the authors' notebook's version
    # the doc's plain-Python arithmetic, once more from the table (the teacher's side is float32, as read)
    want = (_spec_bce(-2.0 + LN(0.95), -2.5 + LN(0.90)) + _spec_bce(-7.1 + LN(0.60), -7.5 + LN(0.50))) / 2
    assert float(losses.mean()) == pytest.approx(want, abs=1e-8)


def test_binary_ce_is_the_papers_binarised_kl_plus_the_teachers_binary_entropy():
    """Appendix A.2: f(p^(1/tau) || q^(1/tau)) + f(1 - p^(1/tau) || 1 - q^(1/tau)) with f_KL; binary_ce adds
    H(Bernoulli(p^(1/tau))), constant for the student: the doc's 6.295e-4 + 0.09922358 for the first group."""
    lt, ls = torch.tensor(-2.0 + LN(0.95), dtype=torch.float64), torch.tensor(-2.5 + LN(0.90), dtype=torch.float64,
                                                                              requires_grad=True)
    p = math.exp(float(lt) / 100 - 1e-6)
    q = math.exp(float(ls.detach()) / 100 - 1e-6)
    kl = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert kl == pytest.approx(6.295e-4, rel=1e-3) and entropy == pytest.approx(0.09922358, abs=1e-8)
    value = binary_ce(lt, ls, 100.0)
    assert float(value.detach()) == pytest.approx(kl + entropy, abs=1e-12)
    value.backward()
    assert float(ls.grad) == pytest.approx(-2.1048e-3, rel=1e-4)  # the doc's dL_g / d lS_g


def test_groups_break_where_a_chunk_is_left_out():
    # chunk ends at 2 (from 0), 4 (from 2), 7 (from 5: the chunk 4..5 was left out); no boundary mass above gamma
    start = torch.tensor([[-1, -1, 0, -1, 2, -1, -1, 5]])
    low = torch.full((1, 8), LN(0.01))
    group_end, group_start = alm_groups(start, low, 0.1)
    assert group_end[0].nonzero().flatten().tolist() == [4, 7]
    assert group_start[0, 4] == 0 and group_start[0, 7] == 5
    every = alm_groups(start, low, 0.0)[0]  # gamma 0: each chunk its own group
    assert every[0].nonzero().flatten().tolist() == [2, 4, 7]


def test_student_values_are_its_next_token_logprob_and_boundary_mass_at_temperature_1():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    boundary = torch.tensor([True, False, True, False])
    token, mass = student_alm_logprobs(logits, torch.tensor([3]), boundary)
    assert float(token) == pytest.approx(LN(0.4), abs=1e-6) and float(mass) == pytest.approx(LN(0.4), abs=1e-6)


def _random_rows(b=3, s=12, seed=0):
    """Rows of two random tokenizations of one text each: the student's and teacher's byte ends, the alignment of
    equal ends, random teacher values straddling gamma."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(b):
        ends_s = np.sort(rng.choice(np.arange(1, 40), s, replace=False))
        ends_t = rng.choice(np.arange(1, ends_s[-1] + 1), min(15, int(ends_s[-1])), replace=False)
        ends_t = np.unique(np.append(ends_t, ends_s[-1]))
        where = {int(e): j for j, e in enumerate(ends_t)}
        token = -rng.exponential(2.0, len(ends_t)).astype(np.float32)
        token[0] = np.nan
        rows.append({"input_ids": rng.integers(0, 30, s), "alignment": np.array(
            [where.get(int(e), -1) for e in ends_s], dtype=np.int32), "teacher_token_logprob": token,
            "teacher_boundary_logprob": np.log(rng.uniform(0.02, 0.6, len(ends_t))).astype(np.float32)})
    items = [alm_targets(r) for r in rows]
    return {k: torch.from_numpy(np.stack([i[k] for i in items])) for k in items[0]}


def _head_inputs(seed: int):
    """(hidden (3, 12, 8), weight (30, 8), both float64 with gradients; labels (3, 12); boundary (30,) bool) for
    the chunked-loss tests: `_random_rows`' shapes."""
    g = torch.Generator().manual_seed(seed)
    b, s, h, v = 3, 12, 8, 30
    hidden = torch.randn(b, s, h, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, v, (b, s), generator=g)
    return hidden, weight, labels, torch.rand(v, generator=g) < 0.3


@pytest.mark.parametrize("settings, reduction, chunk_rows", [
    (PAPER, "token_mean", 5), (ALMSettings(5.0, 0.0, True), "babyllama", 5),
    (ALMSettings(100.0, 0.3, False), "token_mean", 5), (PAPER, "token_mean", 24), (PAPER, "babyllama", 30)])
def test_the_chunked_alm_loss_equals_the_full_logits_one_with_its_gradients(settings, reduction, chunk_rows):
    """chunk_rows 5 < S = 12: one window per chunk; 24 and 30: two (the normaliser spans chunks)."""
    import torch.nn.functional as F

    targets = _random_rows()
    assert int((targets["alm_start"] >= 0).sum()) >= 6
    hidden, weight, labels, boundary = _head_inputs(1)
    v = weight.shape[0]
    labels[0, 3] = -100
    loss, ce, kd = alm_head_loss(hidden, weight, labels, targets, boundary=boundary, settings=settings,
                                 ce_weight=0.3, kd_weight=0.7, reduction=reduction, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(loss, (hidden, weight))
    logits = hidden @ weight.T
    ref_ce = F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100)
    ref_kd = alm_loss(logits, targets, boundary, settings, reduction)
    ref = 0.3 * ref_ce + 0.7 * ref_kd
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    assert float(kd) > 0 and float(ce) == pytest.approx(float(ref_ce), rel=1e-10)
    assert float(kd) == pytest.approx(float(ref_kd), rel=1e-10)
    assert float(loss) == pytest.approx(float(ref), rel=1e-10)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    with torch.no_grad():  # the evaluation path: the same value without gradients
        assert float(alm_head_loss(hidden, weight, labels, targets, boundary=boundary, settings=settings,
                                   ce_weight=0.3, kd_weight=0.7, reduction=reduction)[0]) == \
            pytest.approx(float(ref), rel=1e-10)


def test_the_chunked_alm_loss_projects_the_head_once_per_chunk_of_whole_windows():
    """One (rows, V) projection per chunk, in the forward with its gradients (issue 41: the earlier two-pass form
    projected every chunk twice, 1.33x exact-match KL's step); chunk_rows 30 at S = 12 is two windows a chunk."""
    from torch.overrides import TorchFunctionMode

    class CountVocabProjections(TorchFunctionMode):
        def __init__(self, vocab):
            super().__init__()
            self.vocab, self.count = vocab, 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__) and out.shape[-1] == self.vocab:
                self.count += 1
            return out

    targets = _random_rows()
    hidden, weight, labels, boundary = _head_inputs(2)
    v = weight.shape[0]
    with CountVocabProjections(v) as mode:
        loss, _, _ = alm_head_loss(hidden, weight, labels, targets, boundary=boundary, settings=PAPER,
                                   ce_weight=0.5, kd_weight=0.5, chunk_rows=30)
        loss.backward()
    assert mode.count == 2  # windows 0-1, then window 2
    assert hidden.grad is not None and bool(hidden.grad.abs().sum() > 0)


@pytest.mark.parametrize("gap", [4.0, 60.0, 110.0])
def test_the_chunked_alm_loss_keeps_a_tiny_boundary_mass_exact_in_float32(gap):
    """The chunked path sums the boundary ids' probabilities; where that sum is below sqrt(float32's tiny) it takes
    the logsumexp instead, so values and gradients stay those of the full-logits loss, finite. A boundary logit gap
    of 60 nats (mass ~1e-26) is still summed; at 110 every boundary probability underflows to 0 in float32."""
    import torch.nn.functional as F

    targets = _random_rows()
    g = torch.Generator().manual_seed(3)
    b, s, h, v = 3, 12, 8, 30
    boundary = torch.rand(v, generator=g) < 0.3
    hidden = torch.randn(b, s, h, generator=g)
    hidden[..., 0] = 1.0
    weight = torch.randn(v, h, generator=g)
    weight[boundary, 0] = -gap
    hidden.requires_grad_(), weight.requires_grad_()
    labels = torch.randint(0, v, (b, s), generator=g)
    loss, _, kd = alm_head_loss(hidden, weight, labels, targets, boundary=boundary, settings=PAPER,
                                ce_weight=0.5, kd_weight=0.5, chunk_rows=12)
    grads = torch.autograd.grad(loss, (hidden, weight))
    logits = hidden @ weight.T
    ref = 0.5 * F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1)) + \
        0.5 * alm_loss(logits, targets, boundary, PAPER).float()
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    assert math.isfinite(float(kd)) and float(loss) == pytest.approx(float(ref), rel=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        assert bool(torch.isfinite(got).all())
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_gradmag_weighs_ce_and_alm_by_the_inverse_norms_of_their_hidden_state_gradients():
    """distill.alm_weighting=gradmag: L = (CE / ‖∇_h CE‖ + ALM / ‖∇_h ALM‖) / (1 / ‖∇_h CE‖ + 1 / ‖∇_h ALM‖), the
    weights held constant; its value and gradients from full logits by autograd, each term's norm over all hidden
    states. ce_weight and kd_weight do not enter."""
    import torch.nn.functional as F

    settings = ALMSettings(100.0, 0.1, True, gradmag=True)
    targets = _random_rows()
    hidden, weight, labels, boundary = _head_inputs(4)
    v = weight.shape[0]
    loss, ce, kd = alm_head_loss(hidden, weight, labels, targets, boundary=boundary, settings=settings,
                                 ce_weight=0.9, kd_weight=0.1, chunk_rows=24)
    grads = torch.autograd.grad(loss, (hidden, weight))
    logits = hidden @ weight.T
    ref_ce = F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1))
    ref_kd = alm_loss(logits, targets, boundary, settings)
    norms = [float(torch.autograd.grad(t, hidden, retain_graph=True)[0].detach().norm()) for t in (ref_ce, ref_kd)]
    assert norms[1] < norms[0] / 10  # at tau = 100 ALM's pull is a small fraction of CE's
    inv = [1 / (n + GRADMAG_EPSILON) for n in norms]
    w_ce, w_kd = inv[0] / sum(inv), inv[1] / sum(inv)
    ref = w_ce * ref_ce + w_kd * ref_kd
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    assert float(ce) == pytest.approx(float(ref_ce), rel=1e-10) and float(kd) == pytest.approx(float(ref_kd), rel=1e-10)
    assert float(loss) == pytest.approx(float(ref), rel=1e-10)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    with torch.no_grad():  # without autograd the same weighted value
        assert float(alm_head_loss(hidden, weight, labels, targets, boundary=boundary, settings=settings,
                                   ce_weight=0.9, kd_weight=0.1)[0]) == pytest.approx(float(ref), rel=1e-10)


def test_the_boundary_ids_start_with_a_space_newline_or_tab_or_are_special():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {"the": 0, "Ġthe": 1, "Ċ": 2, "ĉx": 3, "xĠ": 4, "<s>": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="the"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<s>", special=True)])
    assert boundary_mask(tok).tolist() == [False, True, True, True, False, True]
    assert boundary_mask(tok, 8).tolist() == [False, True, True, True, False, True, False, False]


@pytest.fixture(scope="module")
def foreign(prepared, tmp_path_factory):
    return foreign_teacher(prepared, tmp_path_factory.mktemp("alm") / "foreign")


@pytest.fixture(scope="module")
def alm_cache(foreign, prepared, tmp_path_factory):
    """A cross-tokenizer cache (8 student tokens of context, T = 1) of the tiny corpus."""
    out = tmp_path_factory.mktemp("alm-cache") / "x.zarr"
    config = CrossTokenizerConfig(top_k=8, seq_len=32, chunk_windows=4, batch_size=3, max_windows=16,
                                  context_tokens=8, temperature=1.0)
    dump_logits([foreign], prepared, out, config, progress=False, log=quiet)
    return out


def test_the_dump_stores_the_teachers_token_logprobs_and_boundary_mass_at_temperature_1(foreign, prepared,
                                                                                        alm_cache, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(foreign).eval()
    tokenizer = load_tokenizer(foreign)
    teacher_boundary = torch.from_numpy(boundary_mask(tokenizer, tokenizer.get_vocab_size()))
    reader = CacheReader(alm_cache)
    assert reader.attrs[ALM_ATTR] is True
    student = load_tokenizer(PreparedData(prepared).tokenizer_dir)
    assert np.array_equal(reader.read_static("student_boundary"), boundary_mask(student, reader.vocab_size))
    side = TeacherText(PreparedData(prepared), CrossTokenizerConfig.from_attrs(reader.attrs), tokenizer)
    checked = 0
    for r in range(reader.num_windows):
        row = {k: v[0] for k, v in reader.read(r, r + 1).items()}
        t = side.window(int(row["window_idx"]))
        length, offset = int(row["teacher_lengths"]), t["offset"]
        with torch.no_grad():
            logits = model(torch.from_numpy(t["input"][None])).logits[0, :, :tokenizer.get_vocab_size()]
        logp = torch.log_softmax(logits.double(), -1)
        want_token = [float(logp[offset + j - 1, t["ids"][j]]) if offset + j >= 1 else math.nan for j in range(length)]
        want_mass = torch.logsumexp(logp[offset:offset + length][:, teacher_boundary], -1).numpy()
        stored_token = row["teacher_token_logprob"][:length].astype(np.float64)
        assert np.array_equal(np.isnan(stored_token), np.isnan(want_token))
        np.testing.assert_allclose(stored_token, want_token, atol=2 ** -7 + 1e-4)  # the 2^-6 grid
        np.testing.assert_allclose(row["teacher_boundary_logprob"][:length], want_mass, atol=2 ** -7 + 1e-4)
        checked += offset >= 1
    assert checked  # some rows had left context: their first token's log-prob was read there


def _old_cache(cache, out):
    """`cache` as a cross-tokenizer dump from before ALM's arrays wrote it: those arrays and the attribute gone."""
    import shutil

    import zarr

    shutil.copytree(cache, out)
    group = zarr.open_group(out, mode="r+")
    for name in (*ALM_ARRAYS, *ALM_STATIC):
        del group[name]
    attrs = dict(group.attrs)
    attrs.pop(ALM_ATTR)
    attrs["settings"] = {k: v for k, v in attrs["settings"].items() if k != ALM_ATTR}
    group.attrs.put(attrs)
    return out


def _metrics(out):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "kd_loss" in r]


def test_a_tiny_distillation_trains_with_alm_from_a_cross_tokenizer_cache(alm_cache, prepared, tmp_path):
    from bbl.config import load_config
    from bbl.distill.recipe import distill

    kd = {}
    for impl in ("chunked", "hf"):
        cfg = load_config("student-tiny", ["training.max_train_windows=null", "training.max_steps=3",
                                           "training.logging_steps=1", "distill.kd_variant=alm",
                                           f"training.loss_impl={impl}"])
        out = distill(cfg, prepared, tmp_path / impl, cache_path=alm_cache, log=quiet)
        run = json.loads((out / "bbl_run.json").read_text())
        assert run["complete"] and run["kd_variant"] == "alm"
        assert (run["alm_temperature"], run["alm_gamma"], run["alm_debias"]) == (100.0, 0.1, True)
        kd[impl] = [r["kd_loss"] for r in _metrics(out)]
        assert len(kd[impl]) == 3 and all(np.isfinite(kd[impl])) and min(kd[impl]) > 0
    assert kd["hf"] == pytest.approx(kd["chunked"], rel=1e-4)  # the chunked path trains as the full-logits one


def test_gradmag_trains_from_the_cache_and_is_refused_on_the_full_logits_path(alm_cache, prepared, tmp_path):
    from bbl.config import load_config
    from bbl.distill.recipe import distill

    sets = ["training.max_train_windows=null", "training.max_steps=2", "training.logging_steps=1",
            "distill.kd_variant=alm", "distill.alm_weighting=gradmag"]
    out = distill(load_config("student-tiny", sets), prepared, tmp_path / "gradmag", cache_path=alm_cache, log=quiet)
    run = json.loads((out / "bbl_run.json").read_text())
    assert run["complete"] and run["alm_weighting"] == "gradmag"
    assert all(np.isfinite(r["loss"]) for r in _metrics(out))
    with pytest.raises(BblError) as e:
        distill(load_config("student-tiny", [*sets, "training.loss_impl=hf"]), prepared, tmp_path / "hf",
                cache_path=alm_cache, log=quiet)
    assert "loss_impl=chunked" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "hf").exists()


def test_a_cache_from_before_alm_reads_as_before_and_alm_is_refused_in_one_line(alm_cache, prepared, tmp_path):
    from bbl.config import load_config
    from bbl.distill.recipe import distill

    old = _old_cache(alm_cache, tmp_path / "old.zarr")
    reader, new = CacheReader(old), CacheReader(alm_cache)
    assert set(reader.arrays) == set(new.arrays) - set(ALM_ARRAYS) and set(reader.static) == set(new.static) - {"student_boundary"}
    assert not reader.scan()
    rows = reader.read(0, 4)
    assert all(np.array_equal(rows[k], new.read(0, 4)[k]) for k in rows)
    cfg = load_config("student-tiny", ["training.max_train_windows=null", "training.max_steps=1",
                                       "distill.kd_variant=exact_match"])
    assert json.loads((distill(cfg, prepared, tmp_path / "exact", cache_path=old, log=quiet)
                       / "bbl_run.json").read_text())["complete"]
    with pytest.raises(BblError) as e:
        distill(load_config("student-tiny", ["distill.kd_variant=alm"]), prepared, tmp_path / "alm", cache_path=old,
                log=quiet)
    assert "re-dump" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "alm").exists()
