"""Loss functions: hand-computed values, k = V equivalence with the full KL, and the original code's reduction."""

import math

import pytest
import torch

from bbl.losses import distillation_loss, full_kl, reduce_kd, retemper, topk_renorm_kl, topk_tail_kl
from bbl.models.ensemble import ensemble_topk


def test_topk_tail_hand_computed():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.5, 0.3, 0.2])
    kl = topk_tail_kl(q.log().view(1, 1, 3), torch.tensor([[[0]]]), p[:1].log().view(1, 1, 1),
                      torch.tensor([[math.log(0.3)]]), temperature=1.0)
    expected = 0.7 * math.log(0.7 / 0.5) + 0.3 * math.log(0.3 / 0.5)
    assert kl.shape == (1, 1) and kl.item() == pytest.approx(expected, rel=1e-6)


def test_topk_renorm_hand_computed():
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.5, 0.3, 0.2])
    kl = topk_renorm_kl(q.log().view(1, 1, 3), torch.tensor([[[0, 1]]]), p[:2].log().view(1, 1, 2),
                        torch.tensor([[math.log(0.1)]]), temperature=1.0)
    pr = [0.6 / 0.9, 0.3 / 0.9]
    expected = pr[0] * math.log(pr[0] / 0.5) + pr[1] * math.log(pr[1] / 0.3)
    assert kl.item() == pytest.approx(expected, rel=1e-6)


def test_temperature_softens_the_student():
    logits = torch.tensor([[[2.0, 0.0, -2.0]]])
    p = torch.softmax(logits / 2.0, -1)
    ids = torch.tensor([[[0, 1, 2]]])
    kl = topk_tail_kl(logits, ids, p.log(), torch.tensor([[float("-inf")]]), temperature=2.0)
    assert kl.abs().item() < 1e-6  # the student equals the teacher at the same temperature


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_tail_at_k_equals_v_is_the_full_kl_with_equal_gradients(temperature):
    g = torch.Generator().manual_seed(0)
    b, s, v = 2, 5, 13
    teachers = [torch.randn(b, s, v, generator=g) * 3 for _ in range(2)]
    student = torch.randn(b, s, v, generator=g, requires_grad=True)
    ids, lp, tail = ensemble_topk(teachers, temperature=temperature, top_k=v)
    assert torch.isneginf(tail).all()
    mean = torch.stack(teachers).mean(0)
    cached = topk_tail_kl(student, ids, lp, tail, temperature)
    online = full_kl(student, mean, temperature)
    torch.testing.assert_close(cached, online, rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(reduce_kd(cached), student)
    (g2,) = torch.autograd.grad(reduce_kd(online), student)
    assert torch.isfinite(g1).all()
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)
    # fp16 storage (the cache's dtype) on the 2^-6 grid stays close
    from bbl.cache.format import quantize_logprobs

    lp16 = torch.from_numpy(quantize_logprobs(lp.numpy()).astype("float32"))
    torch.testing.assert_close(topk_tail_kl(student, ids, lp16, tail, temperature), online, rtol=2e-2, atol=1e-3)


def test_topk_tail_is_a_lower_bound_of_the_full_kl():
    g = torch.Generator().manual_seed(1)
    teacher, student = torch.randn(3, 4, 50, generator=g) * 2, torch.randn(3, 4, 50, generator=g)
    ids, lp, tail = ensemble_topk([teacher], temperature=2.0, top_k=8)
    assert (topk_tail_kl(student, ids, lp, tail, 2.0) <= full_kl(student, teacher, 2.0) + 1e-6).all()


def test_babyllama_reduction_equals_kldivloss_batchmean_on_bsv():
    g = torch.Generator().manual_seed(2)
    b, s, v, temperature = 4, 7, 11, 2.0
    teacher, student = torch.randn(b, s, v, generator=g), torch.randn(b, s, v, generator=g)
    original = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(student / temperature, -1),
                                                         torch.softmax(teacher / temperature, -1))
    ours = reduce_kd(full_kl(student, teacher, temperature), "babyllama")
    torch.testing.assert_close(ours, original, rtol=1e-6, atol=1e-7)
    ids, lp, tail = ensemble_topk([teacher], temperature=temperature, top_k=v)
    torch.testing.assert_close(reduce_kd(topk_tail_kl(student, ids, lp, tail, temperature), "babyllama"), original,
                               rtol=1e-5, atol=1e-6)
    assert ours.item() == pytest.approx(s * reduce_kd(full_kl(student, teacher, temperature)).item(), rel=1e-5)


def test_distillation_loss_weights():
    ce, kd = torch.tensor(3.0), torch.tensor(0.5)
    assert distillation_loss(ce, kd, alpha=0.5, temperature=2.0).item() == pytest.approx(0.5 * 3 + 0.5 * 4 * 0.5)
    assert distillation_loss(ce, kd, alpha=1.0, temperature=2.0).item() == 3.0
    with pytest.raises(ValueError):
        distillation_loss(ce, kd, alpha=1.5, temperature=2.0)


def test_bad_shapes_and_ids_raise():
    with pytest.raises(ValueError, match="shapes"):
        topk_tail_kl(torch.zeros(1, 2, 5), torch.zeros(1, 3, 2, dtype=torch.long), torch.zeros(1, 3, 2),
                     torch.zeros(1, 3), 1.0)
    with pytest.raises(ValueError, match="outside"):
        topk_tail_kl(torch.zeros(1, 2, 5), torch.full((1, 2, 2), 7), torch.zeros(1, 2, 2), torch.zeros(1, 2), 1.0)


def test_retemper_to_same_temperature_is_identity_and_normalised():
    g = torch.Generator().manual_seed(3)
    ids, lp, tail = ensemble_topk([torch.randn(1, 3, 20, generator=g)], temperature=2.0, top_k=5)
    lp2, tail2 = retemper(lp, tail, from_temperature=2.0, to_temperature=2.0)
    torch.testing.assert_close(lp2, lp, atol=1e-6, rtol=0)
    lp1, tail1 = retemper(lp, tail, from_temperature=2.0, to_temperature=1.0)
    torch.testing.assert_close(lp1.exp().sum(-1) + tail1.exp(), torch.ones(1, 3))
