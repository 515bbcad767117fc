"""The (k+1)-outcome coarsening of a top-k cache's row: the k cached ids and "any other id" (the tail).

The teacher's side comes from the cache (`teacher_coarse_logprobs`, as `distill.kd_variant` reads it); the
student's is a function of its logits, log q_i = z_i / T - logsumexp(z / T) at the ids and log q_rest =
log Σ_{j ∉ I} q_j for the rest (`student_coarse_logprobs`). `chain_rule` carries a gradient on those k+1 outcomes
back to the (..., V) logits, derived once: the unfused losses' autograd and the chunked loss both use it, for every
divergence (`bbl.losses.divergences`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

REST_EXACT_BELOW = 1e-2
"""The student's tail mass is 1 - Σ_I q_i in float64 (no pass over V) where that is at least this; below it (a
confident student, or k = V) it is a logsumexp over the ids outside I, exact (-inf when there are none). The
float64 difference carries the float32 error of the k log-probs (~1e-6 absolute), so at 1e-2 its relative error
is ~1e-4."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The float type the losses compute in: float32 for float32 / bf16 / fp16 inputs, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def teacher_coarse_logprobs(topk_logprobs: torch.Tensor, tail_logprob: torch.Tensor, *,
                            renorm: bool = False) -> torch.Tensor:
    """The teacher's (k+1)-outcome log-distribution as `distill.kd_variant` reads a cache row.

    Args:
        topk_logprobs: (..., K) float log p_T at the cached ids (nats). tail_logprob: (...) log of the rest's mass.
        renorm: False (topk_tail): the k log-probs and the tail as stored. True (topk_renorm): the k log-probs
            renormalised over the ids and the tail given no mass (-inf).
    Returns:
        (..., K + 1) float32 (float64 for float64 input) log-probabilities, the tail last.
    """
    dtype = compute_dtype(topk_logprobs.dtype)
    top = topk_logprobs.to(dtype)
    if renorm:
        return torch.cat([top - torch.logsumexp(top, -1, keepdim=True),
                          torch.full_like(top[..., :1], float("-inf"))], -1)
    return torch.cat([top, tail_logprob.to(dtype).unsqueeze(-1)], -1)


def student_rest_logprob(log_q_top: torch.Tensor, ids: torch.Tensor,
                         rows_log_q: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """log q_rest = log Σ_{j ∉ I} q_j, the student's log mass outside the ids (see `REST_EXACT_BELOW`).

    Args:
        log_q_top: (..., K) float log q_T at `ids` (nats). ids: (..., K) int64, distinct per position.
        rows_log_q: boolean mask (...) -> (n, V) log q_T of the masked positions (asked only for confident rows).
    Returns:
        (...) log-probabilities in log_q_top's dtype; -inf where the ids cover the whole vocabulary.
    """
    rest = 1.0 - log_q_top.double().exp().sum(-1)
    out = rest.clamp_min(1e-300).log()
    narrow = rest < REST_EXACT_BELOW
    if bool(narrow.any()):
        masked = rows_log_q(narrow).scatter(-1, ids[narrow], float("-inf"))
        out[narrow] = torch.logsumexp(masked, -1).double()
    return out.to(log_q_top.dtype)


def chain_rule(grad: torch.Tensor, log_q: torch.Tensor, *, rest: bool = True):
    """The logits' gradient from a gradient on the student's outcomes: d/dz of Σ_o grad_o · log q_o.

    With q = softmax(z / T), d log q_i / d z_j = (δ_ij - q_j) / T for an outcome that is one id i, and
    d log q_rest / d z_j = (1[j ∉ I] q_j / q_rest - q_j) / T for the rest. Summed with G = Σ_o grad_o and
    ρ = grad_rest / q_rest:

        T · dL/dz_j = q_j (ρ - G) + 1[j ∈ I] (grad_j - q_j ρ),

    i.e. (q ⊙ coef + scatter(ids, at_ids)) / T, which this returns as (coef, at_ids) so that the caller can build
    it in place over a (rows, V) buffer. Without a rest (online: the outcomes are the whole vocabulary), coef = -G
    and at_ids = grad.

    Args:
        grad: (..., K + 1) float d loss / d log q_o (the rest last), or (..., V) without a rest.
        log_q: the student's log-probabilities of the same outcomes (as `grad`).
        rest: whether the last outcome is "every other id".
    Returns:
        (coef (..., 1), at_ids (..., K)), or (coef, grad) without a rest.
    """
    total = grad.sum(-1, keepdim=True)
    if not rest:
        return -total, grad
    q_rest = log_q[..., -1:].exp()
    ratio = torch.where(q_rest > 0, grad[..., -1:] / q_rest, torch.zeros_like(q_rest))
    return ratio - total, grad[..., :-1] - log_q[..., :-1].exp() * ratio


class _CoarseLogSoftmax(torch.autograd.Function):
    """y = [log_softmax(z / T).gather(ids), log q_rest] with `chain_rule` as its backward."""

    @staticmethod
    def forward(ctx, logits, ids, temperature):
        log_q = torch.log_softmax(logits.to(compute_dtype(logits.dtype)) / temperature, dim=-1)
        log_q_top = log_q.gather(-1, ids)
        log_q_rest = student_rest_logprob(log_q_top, ids, lambda rows: log_q[rows])
        coarse = torch.cat([log_q_top, log_q_rest.unsqueeze(-1)], -1)
        ctx.save_for_backward(log_q, ids, coarse)
        ctx.temperature, ctx.in_dtype = temperature, logits.dtype
        return coarse

    @staticmethod
    def backward(ctx, grad):
        log_q, ids, coarse = ctx.saved_tensors
        coef, at_ids = chain_rule(grad, coarse)
        out = log_q.exp().mul_(coef).scatter_add_(-1, ids, at_ids).div_(ctx.temperature)
        return out.to(ctx.in_dtype), None, None


def student_coarse_logprobs(student_logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student's (k+1)-outcome log-distribution at the temperature, differentiable in the logits.

    Args:
        student_logits: (..., V) float raw logits. ids: (..., K) int64 distinct ids in [0, V). temperature: T > 0.
    Returns:
        (..., K + 1) float32 (float64 for float64 logits): log q_T at the ids, then log q_rest (`student_rest_logprob`).
    """
    return _CoarseLogSoftmax.apply(student_logits, ids, float(temperature))
