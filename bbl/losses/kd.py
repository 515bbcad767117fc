"""Distillation losses as pure tensor functions (fp32 inside, whatever the input dtype).

p = teacher, q = student, both softened at the temperature T. Per-position KLs return (B, S); `reduce_kd`
turns them into a scalar the way bbl (`token_mean`) or the original Baby Llama code (`babyllama`) does, and
`distillation_loss` combines CE and KD as in the paper: L = alpha * CE + (1 - alpha) * T^2 * KD. The other
divergences (`distill.divergence`, `bbl.losses.divergences`) enter through `topk_divergence` (cached) and
`full_divergence` (online), with the same reduction and weights.
"""

from __future__ import annotations

import torch

from bbl.config import REDUCTIONS, Reduction
from bbl.losses.coarse import compute_dtype, student_coarse_logprobs, teacher_coarse_logprobs
from bbl.losses.divergences import FORWARD_KL, Divergence, coarse_kl, xlogx_term


def _check(student_logits, topk_ids, topk_logprobs, tail_logprob, temperature):
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, s, v = student_logits.shape
    if topk_ids.shape[:2] != (b, s) or topk_logprobs.shape != topk_ids.shape or tail_logprob.shape != (b, s):
        raise ValueError(f"shapes disagree: student {tuple(student_logits.shape)}, topk_ids {tuple(topk_ids.shape)}, "
                         f"topk_logprobs {tuple(topk_logprobs.shape)}, tail_logprob {tuple(tail_logprob.shape)}")
    if topk_ids.numel() and (int(topk_ids.min()) < 0 or int(topk_ids.max()) >= v):
        raise ValueError(f"topk_ids outside [0, {v})")


def topk_tail_kl(student_logits, topk_ids, topk_logprobs, tail_logprob, temperature):
    """KL(p ‖ q) between the teacher's and student's (k+1)-outcome coarsenings at one temperature.

    The outcomes are the k cached ids and "any other id". By the data-processing inequality this is a lower
    bound of the full-vocabulary KL, and equals it when K == V (tail_logprob = -inf). DESIGN.md, "The cache".

    Args:
        student_logits: (B, S, V) float, raw student logits.
        topk_ids: (B, S, K) int64, teacher's top-k token ids.
        topk_logprobs: (B, S, K) float, teacher log p_T of those ids (nats).
        tail_logprob: (B, S) float, teacher log of the mass outside the top k (nats; -inf for none).
        temperature: T > 0; the student is softened as softmax(logits / T).
    Returns:
        (B, S) float32 KL per position, in nats.
    Raises:
        ValueError: if shapes disagree, an id is outside [0, V), or T <= 0.
    """
    _check(student_logits, topk_ids, topk_logprobs, tail_logprob, temperature)
    log_q_top = _student_top_logprobs(student_logits, topk_ids, temperature)
    # q's tail mass from the K top probabilities in float64 (exact to ~1e-16), instead of a second pass over V.
    q_tail = (1.0 - log_q_top.double().exp().sum(-1)).clamp_min(1e-300)
    log_q_tail = q_tail.log().float()
    return coarse_kl(topk_logprobs.float(), tail_logprob.float(), log_q_top, log_q_tail)


def _student_top_logprobs(student_logits, topk_ids, temperature):
    """log q_T at the top-k ids (B, S, K), through `_TopLogSoftmax` (two passes over V forward, two backward)."""
    return _TopLogSoftmax.apply(student_logits, topk_ids, float(temperature))


class _TopLogSoftmax(torch.autograd.Function):
    """y = log_softmax(z / T).gather(ids), with a hand-fused backward.

    dy/dz = (scatter(g) - softmax(z/T) * sum(g)) / T, computed in place from the saved log-softmax: 4 passes
    over (B, S, V) in all, where autograd's generic path (div, log_softmax, gather and their backwards) makes ~8.
    """

    @staticmethod
    def forward(ctx, logits, ids, temperature):
        log_q = torch.log_softmax(logits.float() / temperature, dim=-1)
        ctx.save_for_backward(log_q, ids)
        ctx.temperature, ctx.in_dtype = temperature, logits.dtype
        return log_q.gather(-1, ids)

    @staticmethod
    def backward(ctx, grad_top):
        log_q, ids = ctx.saved_tensors
        scale = grad_top / ctx.temperature
        grad = torch.exp(log_q).mul_(-scale.sum(-1, keepdim=True))
        grad.scatter_add_(-1, ids, scale)
        return grad.to(ctx.in_dtype), None, None


def topk_renorm_kl(student_logits, topk_ids, topk_logprobs, tail_logprob, temperature):
    """Σ_{i∈I} p̃_i (log p̃_i − log q_i) with the teacher renormalised over its top k (p̃ = p / Σ_I p).

    What most top-k distillation tools compute; the student keeps its full-vocabulary softmax. Ignores the tail.
    Same arguments, returns and errors as `topk_tail_kl`.
    """
    _check(student_logits, topk_ids, topk_logprobs, tail_logprob, temperature)
    log_q_top = _student_top_logprobs(student_logits, topk_ids, temperature)
    log_p = topk_logprobs.float()
    log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
    # the (k+1) KL with no teacher mass on the tail, whose term is then 0 whatever the student's tail
    no_tail = torch.full_like(log_p[..., 0], float("-inf"))
    return coarse_kl(log_p, no_tail, log_q_top, torch.zeros_like(no_tail))


def topk_divergence(student_logits, topk_ids, topk_logprobs, tail_logprob, temperature,
                    divergence: Divergence = FORWARD_KL, *, renorm: bool = False):
    """`divergence` between the teacher's and student's (k+1)-outcome coarsenings at one temperature.

    The teacher's coarsening is the cache row as `distill.kd_variant` reads it (`teacher_coarse_logprobs`: the
    tail as stored, or with `renorm` the k ids renormalised and no tail mass); the student's is its softmax at T
    over the k ids and the rest (`student_coarse_logprobs`). Forward KL is `topk_tail_kl` / `topk_renorm_kl`
    exactly; every other divergence is differentiated through the shared `bbl.losses.coarse.chain_rule`. Equals
    the full-vocabulary divergence when K == V.

    Args: as `topk_tail_kl`, plus the `Divergence` and `renorm` (topk_renorm's reading); ids distinct per position.
    Returns:
        (B, S) float32 divergence per position, nats (float64 for float64 logits).
    Raises:
        ValueError: as `topk_tail_kl`.
    """
    if divergence.uses_fused_path:
        return (topk_renorm_kl if renorm else topk_tail_kl)(student_logits, topk_ids, topk_logprobs, tail_logprob,
                                                            temperature)
    _check(student_logits, topk_ids, topk_logprobs, tail_logprob, temperature)
    log_q = student_coarse_logprobs(student_logits, topk_ids, temperature)
    log_p = teacher_coarse_logprobs(topk_logprobs, tail_logprob, renorm=renorm).to(log_q.dtype)
    return divergence(log_p, log_q)


def sampled_logprobs(sample_ids: torch.Tensor, log_mass: torch.Tensor | None = None) -> torch.Tensor:
    """Log of the empirical target each slot of `sample_ids` carries: log(m * c_i / S) at the first slot holding
    id i (c_i its count among the S draws), -inf at its repeats (so each id is counted once).

    Args:
        sample_ids: (B, S, N) int64, N ids drawn with replacement per position (the cache's `sample_ids`).
        log_mass: (B, S) float, log of the mass the draws stand for (hybrid: the tail's); None for 1 (sampled).
    Returns:
        (B, S, N) float32; exp sums to m over each position's slots.
    """
    n = sample_ids.shape[-1]
    equal = sample_ids.unsqueeze(-1) == sample_ids.unsqueeze(-2)  # (B, S, N, N)
    counts = equal.sum(-1)
    first = ~equal.tril(-1).any(-1)  # no equal id in an earlier slot
    log_p = torch.where(first, (counts.double() / n).log(), float("-inf")).float()
    return log_p if log_mass is None else log_p + log_mass.float().unsqueeze(-1)


def sampled_kl(student_logits, sample_ids, temperature):
    """KL(p̂ ‖ q) to the empirical distribution p̂ of N ids drawn from the teacher's p_T (sparse logit sampling).

    Anshumann et al. 2025 ("Sparse Logit Sampling: Accelerating Knowledge Distillation in LLMs", Section 3, the
    random-sampling KD estimator with the teacher itself as the proposal, so every draw weighs 1 / N): p̂_i =
    c_i / N with E[p̂_i] = p_i, and the gradient (q - p̂) / T is an unbiased estimate of the full KL's (q - p) / T
    (tested in tests/test_sparse_targets.py). Its value is not an unbiased estimate of KL(p ‖ q) (the Σ p̂ log p̂
    term), only its gradient is. Computed as `topk_tail_kl` over the distinct drawn ids with no tail.

    Args:
        student_logits: (B, S, V) float raw logits. sample_ids: (B, S, N) int64 in [0, V). temperature: T > 0.
    Returns:
        (B, S) float32 KL per position, nats.
    """
    return topk_tail_kl(student_logits, *sampled_targets(sample_ids), temperature)


def sampled_targets(sample_ids):
    """The sampled cache's targets as (ids (B, S, N), log-probs (B, S, N), tail (B, S) = -inf) for `topk_tail_kl`:
    the draws' empirical distribution (`sampled_logprobs`), nothing lumped."""
    log_p = sampled_logprobs(sample_ids)
    return sample_ids, log_p, torch.full(sample_ids.shape[:2], float("-inf"), device=log_p.device)


def hybrid_targets(topk_ids, topk_logprobs, tail_logprob, sample_ids):
    """The hybrid cache's targets as (ids (B, S, K + N), log-probs (B, S, K + N), tail (B, S)) for `topk_tail_kl`.

    The k ids keep their exact log-probs; the tail's mass is spread over the N ids drawn from the tail
    renormalised, m * c_j / N each (`sampled_logprobs`), so nothing is lumped (tail -inf). With N == 0 the
    tail stays one lumped outcome: exactly the top-k cache's targets.
    """
    if sample_ids.shape[-1] == 0:
        return topk_ids, topk_logprobs, tail_logprob
    ids = torch.cat([topk_ids, sample_ids], dim=-1)
    log_p = torch.cat([topk_logprobs.float(), sampled_logprobs(sample_ids, tail_logprob)], dim=-1)
    return ids, log_p, torch.full_like(tail_logprob, float("-inf"), dtype=torch.float32)


def hybrid_kl(student_logits, topk_ids, topk_logprobs, tail_logprob, sample_ids, temperature):
    """KL to the hybrid target: the exact top k plus N draws from the renormalised tail carrying its mass.

    Unbiased like `sampled_kl` in the tail (E[m c_j / N] = p_j for every tail id j), exact on the top k; equals
    `topk_tail_kl` when N == 0 and the full-vocabulary KL when K == V (no tail mass). Anshumann et al. 2025
    discuss top-k plus sampling as a variant; this form is bbl's (issue 15).

    Args: as `topk_tail_kl`, plus sample_ids (B, S, N) int64 ids drawn from the tail. Returns (B, S) float32, nats.
    """
    return topk_tail_kl(student_logits, *hybrid_targets(topk_ids, topk_logprobs, tail_logprob, sample_ids),
                        temperature)


def full_kl(student_logits, teacher_logits, temperature):
    """Full-vocabulary KL(p_T ‖ q_T) per position, p from `teacher_logits` (the online reference).

    Args:
        student_logits, teacher_logits: (B, S, V) float raw logits (teacher: the ensemble's logit mean).
        temperature: T > 0.
    Returns:
        (B, S) float32, nats.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return xlogx_term(log_p, log_p - log_q).sum(-1)


def full_divergence(student_logits, teacher_logits, temperature, divergence: Divergence = FORWARD_KL):
    """`divergence` between the teacher's and student's full-vocabulary distributions at one temperature (online
    distillation); forward KL is `full_kl` exactly.

    Args:
        student_logits, teacher_logits: (B, S, V) float raw logits. temperature: T > 0. divergence: the choice.
    Returns:
        (B, S) float32 (float64 for float64 logits), nats.
    """
    if divergence.uses_fused_path:
        return full_kl(student_logits, teacher_logits, temperature)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    dtype = compute_dtype(student_logits.dtype)
    log_q = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p = torch.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    return divergence(log_p, log_q)


def reduce_kd(kl: torch.Tensor, reduction: Reduction = "token_mean") -> torch.Tensor:
    """Scalar KD term from per-position KLs (B, S).

    `token_mean`: mean over all B*S positions, on the same per-token scale as the CE.
    `babyllama`: sum over positions / B, which is exactly `nn.KLDivLoss(reduction="batchmean")` applied to
    (B, S, V) tensors in the original Baby Llama code (batchmean divides by input.size(0) = B only), so the KD
    term weighs ~S times its nominal weight against the per-token CE.
    """
    if reduction == "token_mean":
        return kl.mean()
    if reduction == "babyllama":
        return kl.sum() / kl.shape[0]
    raise ValueError(f"unknown reduction {reduction!r}; use one of {', '.join(REDUCTIONS)}")


def distillation_loss(ce_loss, kd_loss, *, alpha: float, temperature: float):
    """L = alpha * CE + (1 - alpha) * T^2 * KD (Baby Llama, Section 3.2; Hinton et al. 2015 for the T^2).

    alpha is the weight of the hard-label CE (the paper: 0.5).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * ce_loss + (1.0 - alpha) * temperature ** 2 * kd_loss


def retemper(topk_logprobs, tail_logprob, *, from_temperature: float, to_temperature: float):
    """Re-soften cached (k+1)-outcome log-probs from one temperature to another.

    log p_T'(i) = (T / T') log p_T(i) - log Z over the k ids and the tail treated as one outcome. Exact for the
    k ids' ratios; the tail is approximated as a single token (its inner spread is not stored), so prefer
    dumping a cache at the temperature you train with. Returns (topk_logprobs, tail_logprob), float32.
    """
    scale = from_temperature / to_temperature
    top, tail = topk_logprobs.float() * scale, tail_logprob.float() * scale
    log_z = torch.logsumexp(torch.cat([top, tail.unsqueeze(-1)], dim=-1), dim=-1)
    return top - log_z.unsqueeze(-1), tail - log_z
