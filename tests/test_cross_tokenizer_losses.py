"""Losses over cross-tokenizer targets (issue 31 item 3): exact-match KL and ULD, against hand-computed values."""

import math

import pytest
import torch

from bbl.losses.cross_tokenizer import exact_match_kl, uld_loss
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
