"""Losses over cross-tokenizer targets: exact-match KL, ULD and the GOLD hybrid, against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from bbl.config import DistillConfig
from bbl.errors import BblError
from bbl.losses.cross_tokenizer import exact_match_kl, gold_loss, gold_weights, uld_loss
from bbl.losses.kd import topk_tail_kl


def _logits(probs):
    return torch.tensor(probs, dtype=torch.float64).log().float().reshape(1, 1, -1)


def test_exact_match_kl_with_every_id_mapped_is_the_topk_tail_kl():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 40, generator=g)
    teacher = torch.log_softmax(torch.randn(2, 5, 40, generator=g), -1)
    lp, ids = teacher.topk(6, -1)
    tail = torch.logsumexp(teacher.scatter(-1, ids, float("-inf")), -1)
    aligned = torch.ones(2, 5, dtype=torch.bool)
    got = exact_match_kl(logits, ids, lp, tail, aligned, 2.0)
    assert torch.equal(got, topk_tail_kl(logits, ids, lp, tail, 2.0))
    aligned[0, 1] = False
    assert exact_match_kl(logits, ids, lp, tail, aligned, 2.0)[0, 1] == 0


def test_exact_match_kl_puts_unmapped_teacher_mass_in_the_tail_by_hand():
    # student q = (0.2, 0.3, 0.5); the teacher's id with a student twin (-> 1) has p = 0.6; another top id without
    # a twin (p = 0.1) is already in the stored tail with the rest (0.3): tail 0.4. Its slot points at student id 2
    # but must remove nothing from q's tail.
    logits = _logits([0.2, 0.3, 0.5]).requires_grad_()
    ids = torch.tensor([[[1, 2]]])
    lp = torch.tensor([[[math.log(0.6), float("-inf")]]])
    tail = torch.tensor([[math.log(0.4)]])
    kl = exact_match_kl(logits, ids, lp, tail, torch.ones(1, 1, dtype=torch.bool), 1.0)
    want = 0.6 * math.log(0.6 / 0.3) + 0.4 * math.log(0.4 / 0.7)
    assert float(kl.detach()) == pytest.approx(want, abs=1e-6)
    kl.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_uld_is_the_l1_between_sorted_probabilities_by_hand():
    logits = _logits([0.2, 0.3, 0.5])
    teacher = torch.tensor([[[math.log(0.1), math.log(0.7)]]])  # any order; its own vocabulary
    tail = torch.tensor([[math.log(0.2)]])
    aligned = torch.ones(1, 1, dtype=torch.bool)
    # sorted p (0.7, 0.1), sorted q top-2 (0.5, 0.3), rests 0.2 and 0.2
    assert float(uld_loss(logits, teacher, tail, aligned, 1.0)) == pytest.approx(0.2 + 0.2 + 0.0, abs=1e-6)
    assert float(uld_loss(logits, teacher, tail, ~aligned, 1.0)) == 0


def _gold_case():
    # student q = (0.2, 0.3, 0.5), student id 1 is a teacher id's twin. The teacher's top 2 at the aligned position:
    # one id with that twin (p = 0.6) and one without (p = 0.1); tail 0.3. Exact-match targets as in the test above.
    logits = _logits([0.2, 0.3, 0.5]).requires_grad_()
    exact = (torch.tensor([[[1, 2]]]), torch.tensor([[[math.log(0.6), float("-inf")]]]), torch.tensor([[math.log(0.4)]]))
    teacher = torch.tensor([[[math.log(0.6), math.log(0.1)]]])
    matched = torch.tensor([[[True, False]]])
    twins = torch.tensor([False, True, False])
    return logits, exact, teacher, matched, twins


def test_gold_is_weighted_exact_match_kl_plus_uld_over_the_unmatched_ids_by_hand():
    logits, exact, teacher, matched, twins = _gold_case()
    aligned = torch.ones(1, 1, dtype=torch.bool)
    kl = 0.6 * math.log(0.6 / 0.3) + 0.4 * math.log(0.4 / 0.7)
    # unmatched: the teacher's (0.1, 0) sorted against the student's largest without twins (0.5, 0.2)
    uld = abs(0.1 - 0.5) + abs(0.0 - 0.2)
    got = gold_loss(logits, *exact, teacher, matched, twins, aligned, 1.0, matched_weight=0.7, unmatched_weight=0.3)
    assert float(got.detach()) == pytest.approx(0.7 * kl + 0.3 * uld, abs=1e-6)
    got.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    only_matched = gold_loss(logits, *exact, teacher, matched, twins, aligned, 1.0, matched_weight=1.0,
                             unmatched_weight=0.0)
    assert torch.equal(only_matched, exact_match_kl(logits, *exact, aligned, 1.0))
    assert float(gold_loss(logits, *exact, teacher, matched, twins, ~aligned, 1.0, matched_weight=0.7,
                           unmatched_weight=0.3)) == 0


def test_gold_weights_are_the_adaptive_pair_unless_both_are_set():
    assert gold_weights(0.25, None, None) == (0.25, 0.75)  # trl GOLD: the share of teacher ids with a twin
    assert gold_weights(0.25, 1.0, 2.0) == (1.0, 2.0)
    with pytest.raises(BblError, match="set together"):
        DistillConfig(gold_matched_weight=1.0)
    with pytest.raises(BblError, match="must be >= 0"):
        DistillConfig(gold_matched_weight=-1.0, gold_unmatched_weight=1.0)


def _cross_batch(b=2, s=7, v=50, k=5, seed=0):
    """Random cross-tokenizer targets of every kind: some teacher slots without a twin (-inf), some positions not
    aligned, some labels ignored."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.log_softmax(torch.randn(b, s, 80, generator=g), -1)
    uld_top, _ = teacher.topk(k, -1)
    uld_tail = torch.logsumexp(teacher, -1).clamp_max(0) + torch.log1p(-uld_top.exp().sum(-1).clamp_max(0.999))
    matched = torch.rand(b, s, k, generator=g) < 0.6
    ids = torch.randint(0, v, (b, s, k), generator=g)
    lp = uld_top.masked_fill(~matched, float("-inf"))
    tail = torch.logsumexp(torch.cat([uld_top.masked_fill(matched, float("-inf")), uld_tail[..., None]], -1), -1)
    aligned = torch.rand(b, s, generator=g) < 0.7
    labels = torch.randint(0, v, (b, s), generator=g)
    labels[0, 2] = -100
    twins = torch.zeros(v, dtype=torch.bool)
    twins[ids[matched]] = True
    targets = {"aligned": aligned, "topk_ids": ids, "topk_logprobs": lp, "tail_logprob": tail,
               "uld_topk_logprobs": uld_top, "uld_tail_logprob": uld_tail, "uld_matched": matched}
    return targets, labels, twins


@pytest.mark.parametrize("variant", ["exact_match", "uld", "gold"])
@pytest.mark.parametrize("temperature, reduction", [(1.0, "token_mean"), (2.0, "babyllama")])
def test_the_chunked_cross_tokenizer_loss_equals_the_full_logits_one_with_its_gradients(variant, temperature,
                                                                                        reduction):
    import torch.nn.functional as F

    from bbl.losses.cross_tokenizer import cross_tokenizer_head_loss, cross_tokenizer_kd, reduce_aligned
    from bbl.losses.kd import distillation_loss

    targets, labels, twins = _cross_batch()
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 7, 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, dtype=torch.float64, requires_grad=True)
    kd_rows = cross_tokenizer_kd(variant, temperature, student_twins=twins, gold_weights=(0.6, 0.4))
    settings = {"variant": variant, "alpha": 0.3, "temperature": temperature, "reduction": reduction,
                "student_twins": twins, "gold_weights": (0.6, 0.4)}
    loss, ce, kd = cross_tokenizer_head_loss(hidden, weight, labels, targets, chunk_rows=3, **settings)
    grads = torch.autograd.grad(loss, (hidden, weight))
    logits = hidden @ weight.T
    ref_ce = F.cross_entropy(logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=-100)
    ref_kd = reduce_aligned(kd_rows(logits, targets), targets["aligned"], reduction)
    ref = distillation_loss(ref_ce, ref_kd, alpha=0.3, temperature=temperature)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    assert float(kd) > 0 and float(ce) == pytest.approx(float(ref_ce), rel=1e-6)
    assert float(kd) == pytest.approx(float(ref_kd), rel=1e-5)
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # the evaluation path computes the same value without gradients
        assert float(cross_tokenizer_head_loss(hidden, weight, labels, targets, chunk_rows=4, **settings)[0]) == \
            pytest.approx(float(ref), rel=1e-5)


def test_a_cache_kind_without_a_cross_tokenizer_loss_is_refused():
    from bbl.losses.cross_tokenizer import cross_tokenizer_kd

    with pytest.raises(ValueError, match="cannot read a cross-tokenizer cache"):
        cross_tokenizer_kd("topk_tail", 1.0)
    with pytest.raises(ValueError, match="needs the student twins"):
        cross_tokenizer_kd("gold", 1.0)


def _uld_step(uld_form: str, temperature: float, alpha: float = 0.5):
    """One position of `test_uld_is_the_l1_between_sorted_probabilities_by_hand` (student q = (0.2, 0.3, 0.5), label
    id 2; the teacher's top 2 (0.7, 0.1), tail 0.2) through the uld reading's chunked loss and its full-logits form
    (hidden = the logits, an identity head); position 1 has no label and no aligned teacher position."""
    from bbl.config import DistillConfig
    from bbl.losses.readings import KDContext, get_reading

    reading = get_reading("uld")
    extras, provenance = reading.prepare({}, DistillConfig(uld_form=uld_form), 3)
    ctx = KDContext(alpha=alpha, temperature=temperature, extras=extras)
    hidden = torch.tensor([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64).log()[None]
    targets = {"aligned": torch.tensor([[True, False]]),
               "uld_topk_logprobs": torch.tensor([[[0.1, 0.7], [0.5, 0.5]]]).log(),
               "uld_tail_logprob": torch.tensor([[0.2, 1e-9]]).log(),
               "topk_ids": torch.zeros(1, 2, 2, dtype=torch.long), "topk_logprobs": torch.zeros(1, 2, 2),
               "tail_logprob": torch.zeros(1, 2), "uld_matched": torch.zeros(1, 2, 2, dtype=torch.bool)}
    labels = torch.tensor([[0, 2]])
    loss, ce, kd = reading.chunked_loss(hidden, torch.eye(3, dtype=torch.float64), labels, targets, ctx)
    w_ce, w_kd = reading.loss_weights(ctx)
    full = w_ce * math.log(1 / 0.5) + w_kd * float(reading.logits_kd(hidden, targets, ctx))
    return float(loss), float(kd), full, provenance


def test_uld_by_default_is_boizard_et_al_s_ce_plus_1_5_uld_at_temperature_1_by_hand():
    # Nicolas-BZRD/llm-recipes: T = 1 on both sides, L = CE + distil_factor * ULD, distil_factor 1.5
    loss, kd, full, provenance = _uld_step("boizard", temperature=1.0)
    assert provenance == {"uld_form": "boizard", "uld_weight": 1.5}
    assert kd == pytest.approx(0.4, abs=1e-6)  # |0.7 - 0.5| + |0.1 - 0.3| + |0.2 - 0.2|
    assert loss == pytest.approx(-math.log(0.5) + 1.5 * 0.4, abs=1e-6)  # alpha plays no part
    assert full == pytest.approx(loss, abs=1e-6)


def test_uld_tempered_is_bbls_earlier_alpha_ce_plus_t2_uld_at_the_caches_temperature_by_hand():
    root = [math.sqrt(p) for p in (0.2, 0.3, 0.5)]  # the student at T = 2: q ∝ p^(1/2)
    q = [r / sum(root) for r in root]
    uld = abs(0.7 - q[2]) + abs(0.1 - q[1]) + abs(0.2 - q[0])
    loss, kd, full, _ = _uld_step("tempered", temperature=2.0, alpha=0.3)
    assert kd == pytest.approx(uld, abs=1e-6)
    assert loss == pytest.approx(0.3 * -math.log(0.5) + 0.7 * 4 * uld, abs=1e-6)
    assert full == pytest.approx(loss, abs=1e-6)


def test_boizard_uld_refuses_a_cache_of_another_temperature_in_one_line():
    from bbl.config import DistillConfig
    from bbl.losses.readings import get_reading

    reading = get_reading("uld")
    line = reading.cache_problem({"temperature": 2.0}, DistillConfig())
    assert "--temperature 1" in line and "distill.uld_form=tempered" in line and "\n" not in line
    assert reading.cache_problem({"temperature": 1.0}, DistillConfig()) is None
    assert reading.cache_problem({"temperature": 2.0}, DistillConfig(uld_form="tempered")) is None
    with pytest.raises(BblError, match="uld_weight"):
        DistillConfig(uld_weight=-1.0)


def _byte_fallback_teacher():
    """A Llama-2-style byte-fallback BPE (Metaspace, `<0x00>`..`<0xFF>`): it holds both `A` and `<0x41>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)),
                                         "\u2581", "A", "B", "\u2581A", "\u2581AB"])}
    merges = [("\u2581", "A"), ("\u2581A", "B")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tok


def test_exact_match_kl_merges_teacher_ids_of_one_byte_string_by_hand():
    # a byte-fallback teacher puts p = 0.5 on `A` and 0.3 on `<0x41>`, both the student's `A`; 0.1 on `B`; 0.05 on
    # `▁AB` (no student twin) and 0.05 in its tail. The student's outcomes: A (0.8), B (0.1), the rest (0.1).
    from bbl.cache.kinds.cross_tokenizer import training_item
    from bbl.data.tokenizer import train_tokenizer
    from bbl.data.vocab import vocab_correspondence
    from bbl.losses.cross_tokenizer import cross_tokenizer_head_loss

    teacher = _byte_fallback_teacher()
    assert teacher.encode("\u00e9").tokens == ["\u2581", "<0xC3>", "<0xA9>"]  # byte fallback at work
    student = train_tokenizer(["a cat sat on the mat\n"] * 40, vocab_size=262, show_progress=False)
    mapping = vocab_correspondence(teacher, student)
    t = {name: teacher.token_to_id(name) for name in ("A", "<0x41>", "B", "\u2581AB")}
    a, b = student.token_to_id("A"), student.token_to_id("B")
    assert mapping[t["A"]] == mapping[t["<0x41>"]] == a and mapping[t["B"]] == b and mapping[t["\u2581AB"]] == -1
    p = {"A": 0.5, "<0x41>": 0.3, "B": 0.1, "\u2581AB": 0.05}
    order = sorted(p, key=t.get)
    row = {"alignment": np.array([0, -1], dtype=np.int32),
           "teacher_topk_ids": np.array([[t[n] for n in order]] * 2, dtype=np.int32),
           "teacher_topk_logprobs": np.log(np.array([[p[n] for n in order]] * 2)).astype(np.float16),
           "teacher_tail_logprob": np.log(np.array([0.05, 0.05], dtype=np.float32))}
    item = training_item(row, {"teacher_to_student": mapping})

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 2, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(student.get_vocab_size(), 8, generator=g, dtype=torch.float64)
    q = torch.softmax(hidden[0, 0] @ weight.T, -1)
    stored = {n: float(np.exp(np.float64(row["teacher_topk_logprobs"][0, order.index(n)]))) for n in p}
    p_a, p_b = stored["A"] + stored["<0x41>"], stored["B"]
    p_rest = stored["\u2581AB"] + 0.05
    q_a, q_b = float(q[a]), float(q[b])
    want = (p_a * math.log(p_a / q_a) + p_b * math.log(p_b / q_b) + p_rest * math.log(p_rest / (1 - q_a - q_b)))
    targets = {k: torch.from_numpy(np.asarray(v))[None] for k, v in item.items()}
    full = exact_match_kl(hidden @ weight.T, targets["topk_ids"], targets["topk_logprobs"], targets["tail_logprob"],
                          targets["aligned"], 1.0)
    assert float(full[0, 0]) == pytest.approx(want, rel=1e-4) and float(full[0, 1]) == 0
    _, _, kd = cross_tokenizer_head_loss(hidden, weight, torch.zeros(1, 2, dtype=torch.long), targets,
                                         variant="exact_match", alpha=0.0, temperature=1.0)
    assert float(kd) == pytest.approx(want, rel=1e-4)  # the default chunked path, over the one aligned position
    ids, logp = item["topk_ids"][0], item["topk_logprobs"][0]
    assert sorted(ids[np.isfinite(logp)].tolist()) == [a, b]  # one slot per student id, the merged one first
