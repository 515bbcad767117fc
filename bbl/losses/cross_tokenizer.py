"""Losses that read a cross-tokenizer cache (issue 31), at the student positions aligned with a teacher position
(`bbl.cache.kinds.cross_tokenizer`: both tokens end on the same byte); other positions get 0 and a mask.

- `exact_match_kl`: the teacher's top-k ids with a student id of the same byte string keep their mass under that
  id, all other teacher mass joins the tail, then bbl's (k+1)-outcome KL (`bbl.losses.kd.topk_tail_kl`).
- `uld_loss`: Universal Logit Distillation (Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the
  Universal Logit Distillation Loss for LLMs", Section 3): L1 between the sorted teacher and student
  probabilities, which needs no shared vocabulary; here over the k largest of each plus the rest. How it joins the
  CE (`distill.uld_form`: Boizard et al.'s CE + lambda * ULD at T = 1, or alpha*CE + (1-alpha)*T^2*ULD) is the uld
  reading's (`bbl.losses.readings`).
- `gold_loss`: the hybrid of TRL's GOLD trainer (Patiño et al. 2025, "Unlocking On-Policy Distillation for Any
  Model Family"; trl `GOLDConfig.uld_use_hybrid_loss`): the teacher ids with a student twin by a divergence (here
  the exact-match KL above), the ids without one by ULD over the sorted probabilities of the unmatched ids of each
  side, weighted w_m * matched + w_u * unmatched (GOLD's adaptive default: w_m = the share of teacher ids with a
  twin, w_u = 1 - w_m).
"""

from __future__ import annotations

import numpy as np
import torch

from bbl.config import Reduction
from bbl.losses.chunked import KDTargets, chunked_head_loss
from bbl.losses.chunked_rows import chunked_row_loss
from bbl.losses.kd import topk_tail_kl


def exact_match_kl(student_logits, topk_ids, topk_logprobs, tail_logprob, aligned, temperature):
    """(k+1)-outcome KL(p ‖ q) of exact-match targets, 0 at unaligned positions.

    Args:
        student_logits: (B, S, V) float, raw student logits.
        topk_ids: (B, S, K) int64 student ids (`exact_match_targets`); a slot whose log-prob is -inf (a teacher id
            without a student twin, whose mass is already in the tail) is ignored whatever its id.
        topk_logprobs: (B, S, K) float, teacher log p_T (nats); -inf for ignored slots.
        tail_logprob: (B, S) float, log of the teacher mass outside the mapped ids (nats).
        aligned: (B, S) bool, positions with an aligned teacher position.
        temperature: T > 0.
    Returns:
        (B, S) float32 KL in nats (0 where not aligned); with every slot mapped it equals `topk_tail_kl`.
    Raises:
        ValueError: as `topk_tail_kl`.
    """
    b, s, v = student_logits.shape
    ignored = torch.isneginf(topk_logprobs.float())
    if not bool(ignored.any()):
        kl = topk_tail_kl(student_logits, topk_ids, topk_logprobs, tail_logprob.float(), temperature)
    else:  # an extra student outcome of probability 0 takes the ignored slots: it removes no mass from q's tail
        padded = torch.cat([student_logits, student_logits.new_full((b, s, 1), float("-inf"))], -1)
        ids = torch.where(ignored, torch.full_like(topk_ids, v), topk_ids)
        kl = topk_tail_kl(padded, ids, topk_logprobs, tail_logprob.float(), temperature)
    return torch.where(aligned, kl, torch.zeros_like(kl))


def student_probs(student_logits, temperature: float):
    """softmax(z / T) in fp32 (..., V); at T = 1 without the division's copy (z / 1 is z, bit for bit)."""
    logits = student_logits.float()
    return torch.softmax(logits if temperature == 1.0 else logits / temperature, -1)


def largest(q, k: int):
    """(..., k): the k largest of the probabilities q (..., V), descending, zero-padded when V < k (the sorted
    student side of ULD, Boizard et al. 2024, Eq. 3: the shorter distribution padded with zeros)."""
    top = q.topk(min(k, q.shape[-1]), dim=-1).values
    if top.shape[-1] < k:
        top = torch.cat([top, top.new_zeros(*top.shape[:-1], k - top.shape[-1])], -1)
    return top


def uld_loss(student_logits, teacher_topk_logprobs, teacher_tail_logprob, aligned, temperature):
    """ULD: Σ_i |p_(i) − q_(i)| over the K largest probabilities of each, sorted, plus |p_rest − q_rest|.

    Boizard et al. (2024), Eq. 3, compare the whole sorted distributions (the shorter padded with zeros); with the
    teacher's top k cached, the ranks past k are lumped into one "rest" outcome on each side (the L1 over the
    lumped outcomes is a lower bound of the full one, equal at K = V).

    Args:
        student_logits: (B, S, V) float, raw student logits.
        teacher_topk_logprobs: (B, S, K) float, the aligned teacher position's top-k log p_T (its own vocabulary,
            any order).
        teacher_tail_logprob: (B, S) float, log of the teacher mass outside them.
        aligned: (B, S) bool. temperature: T > 0.
    Returns:
        (B, S) float32 in [0, 2] (0 where not aligned).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = teacher_topk_logprobs.shape[-1]
    q = student_probs(student_logits, temperature)
    q_top = largest(q, k)
    p_top = teacher_topk_logprobs.float().exp().sort(dim=-1, descending=True).values
    q_rest = (1.0 - q_top.sum(-1)).clamp_min(0.0)
    loss = (p_top - q_top).abs().sum(-1) + (teacher_tail_logprob.float().exp() - q_rest).abs()
    return torch.where(aligned, loss, torch.zeros_like(loss))


def gold_loss(student_logits, topk_ids, topk_logprobs, tail_logprob, teacher_topk_logprobs, teacher_matched,
              student_twins, aligned, temperature, *, matched_weight: float, unmatched_weight: float):
    """GOLD's hybrid: w_m * exact-match KL + w_u * ULD over the unmatched ids, 0 at unaligned positions.

    The matched part is `exact_match_kl` (the twins' mass exact, every other teacher mass in the tail: a sound
    (k+1)-outcome KL, where TRL's GOLD takes a JSD over the matched probabilities alone). The unmatched part is
    ULD (Boizard et al. 2024, Eq. 3) restricted as GOLD restricts it: Σ_i |p^u_(i) − q^u_(i)|, p^u the teacher's
    cached top-k probabilities whose ids have no student twin (sorted, 0 for twinned slots), q^u the K largest
    student probabilities among the ids that are no teacher id's twin. The teacher's unmatched mass past its top k
    is not known apart from its matched tail, so no "rest" term: a lower bound of GOLD's full-vocabulary L1 that
    grows to it as k grows.

    Args:
        student_logits: (B, S, V) float, raw student logits.
        topk_ids, topk_logprobs, tail_logprob: the exact-match targets (`exact_match_kl`).
        teacher_topk_logprobs: (B, S, K) float, the aligned teacher position's own top-k log p_T (nats).
        teacher_matched: (B, S, K) bool, which of those K teacher ids has a student twin.
        student_twins: (V,) bool, student ids that are some teacher id's twin (`teacher_to_student`'s image).
        aligned: (B, S) bool. temperature: T > 0.
        matched_weight, unmatched_weight: w_m, w_u >= 0 (`gold_weights`).
    Returns:
        (B, S) float32 (0 where not aligned).
    Raises:
        ValueError: temperature <= 0 (as `exact_match_kl`).
    """
    matched = exact_match_kl(student_logits, topk_ids, topk_logprobs, tail_logprob, aligned, temperature)
    k = teacher_topk_logprobs.shape[-1]
    q = student_probs(student_logits, temperature).masked_fill(student_twins.to(student_logits.device), 0.0)
    q_top = largest(q, k)
    p = teacher_topk_logprobs.float().exp().masked_fill(teacher_matched, 0.0)
    p_top = p.sort(dim=-1, descending=True).values
    unmatched = torch.where(aligned, (p_top - q_top).abs().sum(-1), torch.zeros_like(matched))
    return matched_weight * matched + unmatched_weight * unmatched


def gold_weights(twin_fraction: float, matched_weight: float | None, unmatched_weight: float | None):
    """(w_m, w_u) of `gold_loss`: the configured pair, else GOLD's adaptive one (trl `GOLDConfig`:
    uld_hybrid_matched_weight None): w_m = the share of teacher ids with a student twin, w_u = 1 - w_m."""
    if matched_weight is None:
        return twin_fraction, 1.0 - twin_fraction
    return matched_weight, unmatched_weight


def cross_tokenizer_kd(variant: str, temperature: float, *, student_twins=None,
                       gold_weights: tuple[float, float] | None = None):
    """The KD term of `distill.kd_variant` over a cross-tokenizer cache's batch, as one function of the logits.

    Args:
        variant: "exact_match", "uld" or "gold".
        temperature: T > 0.
        student_twins: "gold": (V,) bool tensor (`gold_loss`).
        gold_weights: "gold": (w_m, w_u) (`gold_weights`).
    Returns:
        f(student_logits (B, S, V), targets) -> (B, S) float32, 0 off the aligned positions; `targets` holds the
        batch's "aligned", "topk_ids", "topk_logprobs", "tail_logprob" and, for ULD / GOLD, "uld_topk_logprobs",
        "uld_tail_logprob", "uld_matched" (`bbl.cache.kinds.cross_tokenizer`), each (B, S, ...).
    Raises:
        ValueError: an unknown variant, or "gold" without its twins and weights.
    """
    if variant not in ROW_LOSSES:
        raise ValueError(f"kd_variant {variant!r} cannot read a cross-tokenizer cache; use {', '.join(ROW_LOSSES)}")
    return ROW_LOSSES[variant](temperature, student_twins=student_twins, gold_weights=gold_weights)


def _gold_rows(temperature, *, student_twins=None, gold_weights=None):
    if student_twins is None or gold_weights is None:
        raise ValueError("kd_variant gold needs the student twins and the (w_m, w_u) weights")
    w_m, w_u = gold_weights
    return lambda logits, t: gold_loss(logits, t["topk_ids"], t["topk_logprobs"], t["tail_logprob"],
                                       t["uld_topk_logprobs"], t["uld_matched"], student_twins, t["aligned"],
                                       temperature, matched_weight=w_m, unmatched_weight=w_u)


ROW_LOSSES = {
    "exact_match": lambda temperature, **_: lambda logits, t: exact_match_kl(
        logits, t["topk_ids"], t["topk_logprobs"], t["tail_logprob"], t["aligned"], temperature),
    "uld": lambda temperature, **_: lambda logits, t: uld_loss(
        logits, t["uld_topk_logprobs"], t["uld_tail_logprob"], t["aligned"], temperature),
    "gold": _gold_rows,
}
"""Each cross-tokenizer loss by its `distill.kd_variant` name: (temperature, student_twins, gold_weights) -> the
per-position loss of (logits, targets) (`cross_tokenizer_kd`)."""


def student_twin_mask(teacher_to_student: np.ndarray, vocab_size: int) -> np.ndarray:
    """(vocab_size,) bool: the student ids that are some teacher id's twin (same byte string; GOLD's matched
    student ids). `teacher_to_student` is the cache's (V_teacher,) int32 map, -1 where there is no twin."""
    mask = np.zeros(vocab_size, dtype=bool)
    mask[teacher_to_student[teacher_to_student >= 0]] = True
    return mask


def cross_tokenizer_head_loss(hidden, weight, labels, targets: dict, *, variant: str, alpha: float,
                              temperature: float, reduction: Reduction = "token_mean", chunk_rows: int | None = None,
                              student_twins=None, gold_weights: tuple[float, float] | None = None,
                              weights: tuple[float, float] | None = None):
    """L = alpha * CE + (1 - alpha) * T^2 * KD (or w_ce * CE + w_kd * KD with `weights`) of a cross-tokenizer batch
    from the student's last hidden states, without its (B, S, V) logits: the values and gradients of
    `cross_tokenizer_kd` on the full logits, reduced by `reduce_aligned`.

    exact_match runs through `chunked_head_loss`'s fused (k+1)-outcome KL (the one `topk_tail_kl` computes: a slot
    of log-prob -inf holds no mass on either side, an unaligned position none at all); ULD and GOLD, whose terms
    need sorted probabilities, through `chunked_row_loss` (autograd on each chunk).

    Args:
        hidden: (B, S, H) float final hidden states; weight: (V, H) LM head; labels: (B, S) HF causal-LM labels.
        targets: the batch's cross-tokenizer targets (`cross_tokenizer_kd`), each (B, S, ...).
        variant, temperature, student_twins, gold_weights: as `cross_tokenizer_kd`.
        alpha, reduction, chunk_rows: as `chunked_head_loss`.
        weights: ULD and GOLD: (w_ce, w_kd) in place of (alpha, (1 - alpha) * T^2) (`chunked_row_loss`).
    Returns:
        (loss, ce, kd) fp32 scalars, `loss` differentiable w.r.t. hidden and weight.
    Raises:
        ValueError: as `cross_tokenizer_kd` and `chunked_head_loss`; `weights` with exact_match.
    """
    aligned = targets["aligned"]
    if variant == "exact_match":
        if weights is not None:
            raise ValueError("exact_match takes alpha and T (the fused (k+1)-outcome path), not weights")
        none = float("-inf")
        kd = KDTargets("topk_tail", topk_ids=targets["topk_ids"],
                       topk_logprobs=targets["topk_logprobs"].float().masked_fill(~aligned.unsqueeze(-1), none),
                       tail_logprob=targets["tail_logprob"].float().masked_fill(~aligned, none))
        return chunked_head_loss(hidden, weight, labels, kd=kd, alpha=alpha, temperature=temperature,
                                 reduction=reduction, chunk_rows=chunk_rows, kd_positions=int(aligned.sum()))
    kd_rows = cross_tokenizer_kd(variant, temperature, student_twins=student_twins, gold_weights=gold_weights)
    return chunked_row_loss(hidden, weight, labels, kd_rows, targets, aligned, alpha=alpha, temperature=temperature,
                            reduction=reduction, chunk_rows=chunk_rows, weights=weights)


def reduce_aligned(per_position, aligned, reduction: Reduction = "token_mean"):
    """A scalar from a (B, S) loss that is 0 off the aligned positions: token_mean = the mean over aligned positions
    (0 when none), babyllama = the sum over positions / B (the original code's scaling, `bbl.losses.reduce_kd`)."""
    if reduction == "babyllama":
        return per_position.sum() / per_position.shape[0]
    return per_position.sum() / aligned.sum().clamp_min(1)
