"""Losses over cross-tokenizer targets: exact-match KL, ULD and the GOLD hybrid, against hand-computed values."""

import math

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
