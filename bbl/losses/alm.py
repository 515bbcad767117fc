"""ALM, Approximate Likelihood Matching (Minixhofer, Vulić & Ponti 2025, "Universal Cross-Tokenizer Distillation
via Approximate Likelihood Matching", arXiv 2503.20083), from a cross-tokenizer cache: the student's likelihood of
each chunk of text (a run of its tokens that ends where a run of the teacher's ends) is matched to the teacher's,
chunk by chunk, through a binarised divergence. The loss is the one tokenkit computes (bminixhofer/tokenkit@bcacdef,
`tokenkit/training/losses.py` `compute_alm_loss`, 232-607) with the paper's settings; docs/cache-format.md, "ALM",
states it in full and lists every difference.

For a group g of consecutive chunks (chunks merged until the teacher's boundary mass after one passes gamma):

    ℓT_g = Σ_{teacher tokens i in g} log p_T(t_i | t_<i) + log p_T(B | g)        (the debiasing term: `debias`)
    ℓS_g = Σ_{student tokens j in g} log p_S(s_j | s_<j) + log p_S(B | g)
    L_g  = -[ e^a · b + (1 - e^a) · log(1 - e^b) ],   a = ℓT_g / τ - ε,  b = ℓS_g / τ - ε
    L    = Σ_g L_g / (number of groups)

B is each side's set of pretoken-boundary ids (`bbl.data.boundary`), p(B | g) its mass after the group's last
token. The teacher's values come from the cache (`bbl.cache.kinds.cross_tokenizer.alm_targets`); the student's
from its logits at temperature 1 (`student_alm_logprobs`). `alm_loss` is the reference on full logits;
`alm_head_loss` the same values and gradients from the last hidden states without the (B, S, V) logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bbl.config import REDUCTIONS, Reduction
from bbl.losses.chunked import (
    IGNORE_INDEX,
    GradientsInForward,
    default_chunk_rows,
    project_chunks,
    shift_labels,
)
from bbl.losses.chunked_rows import ROW_BUDGET
from bbl.losses.coarse import compute_dtype

GRADMAG_EPSILON = 1e-8
"""Added to each gradient norm before its inverse is taken (tokenkit `multitask.compute_inv_global_grad_norm`)."""
ALM_EPSILON = 1e-6
"""ε subtracted after dividing a log-likelihood by τ, so log(1 - e^b) stays finite at a log-likelihood of 0
(tokenkit `compute_alm_loss(..., epsilon=1e-6)`, losses.py:232, 266-267)."""
TARGET_KEYS = ("alm_next_ids", "alm_start", "alm_teacher_logprob", "alm_teacher_boundary")
"""The batch keys ALM reads, each (B, S) (`bbl.cache.kinds.cross_tokenizer.alm_targets`)."""


@dataclass(frozen=True)
class ALMSettings:
    """ALM's settings, from `DistillConfig` (`from_config`; the defaults are its fields').

    Attributes:
        temperature: τ > 0, dividing chunk log-likelihoods before the binarisation (`distill.alm_temperature`).
        gamma: γ in [0, 1): a chunk ends a group when the teacher's boundary mass after it is > γ; 0 = no merging
            (`distill.alm_gamma`).
        debias: add each side's boundary log-mass after a group to its log-likelihood (`distill.alm_debias`).
        gradmag: weigh CE and ALM by the inverse norms of their gradients instead of fixed weights
            (`distill.alm_weighting: gradmag`; `alm_head_loss`).
    """

    temperature: float
    gamma: float
    debias: bool
    gradmag: bool = False

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"ALM's temperature (tau) must be > 0, got {self.temperature}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"ALM's gamma must be in [0, 1), got {self.gamma}")

    @classmethod
    def from_config(cls, distill) -> ALMSettings:
        return cls(temperature=distill.alm_temperature, gamma=distill.alm_gamma, debias=distill.alm_debias,
                   gradmag=distill.alm_weighting == "gradmag")


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, two-branch for accuracy (Mächler 2012; tokenkit losses.py:224-229): log1p(-e^x)
    below -log 2, log(-expm1(x)) above."""
    return torch.where(x < -math.log(2.0), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def binary_ce(teacher_loglik: torch.Tensor, student_loglik: torch.Tensor, temperature: float) -> torch.Tensor:
    """ALM's binarised divergence of chunk log-likelihoods (tokenkit `binary_ce`, losses.py:263-274).

    The binary cross-entropy between {P_T^(1/τ), 1 - P_T^(1/τ)} and {P_S^(1/τ), 1 - P_S^(1/τ)}: the paper's binarised
    forward KL with f = f_KL (Appendix A.2, B) plus the teacher's binary entropy, which does not depend on the
    student (same gradients; the value is not 0 at the optimum).

    Args:
        teacher_loglik, student_loglik: (...) float, log P_T and log P_S of the same chunks (nats, <= 0).
        temperature: τ > 0.
    Returns:
        (...) of the inputs' dtype, nats.
    """
    a = teacher_loglik / temperature - ALM_EPSILON
    b = student_loglik / temperature - ALM_EPSILON
    return -(torch.exp(a) * b + (-torch.expm1(a)) * log1mexp(b))


def student_alm_logprobs(logits: torch.Tensor, next_ids: torch.Tensor, boundary: torch.Tensor):
    """The student's side of ALM at each position, at temperature 1.

    Args:
        logits: (..., V) float raw student logits.
        next_ids: (...) int64, the token each position is scored at (the next token of the window).
        boundary: (V,) bool, the student's boundary ids (`bbl.data.boundary.boundary_mask`).
    Returns:
        (token_logprob, boundary_logprob): (...) each, in the logits' compute dtype (fp32, fp64 for fp64):
        log softmax(z)[next_ids] and log Σ_{v in boundary} softmax(z)_v (a logsumexp, never log of a sum of
        probabilities), nats.
    """
    z = logits.float() if logits.dtype not in (torch.float32, torch.float64) else logits
    log_z = torch.logsumexp(z, dim=-1)
    token = z.gather(-1, next_ids.unsqueeze(-1)).squeeze(-1) - log_z
    mass = torch.logsumexp(z.masked_fill(~boundary.to(z.device), float("-inf")), dim=-1) - log_z
    return token, mass


def _exclusive_cummax(x: torch.Tensor, fill: int) -> torch.Tensor:
    """y[:, s] = max(x[:, :s]) (fill where s = 0), along dim 1."""
    shifted = torch.cat([torch.full_like(x[:, :1], fill), x[:, :-1]], dim=1)
    return torch.cummax(shifted, dim=1).values


def alm_groups(start: torch.Tensor, teacher_boundary: torch.Tensor, gamma: float):
    """ALM's groups of a batch: the chunks merged by the teacher's boundary mass (tokenkit `merge_by_space_prob`,
    losses.py:444-491).

    A chunk (its last student position s has start[s] >= 0) ends a group when the teacher's boundary mass after it
    is > gamma (strict, as tokenkit), or when the next chunk does not continue it (none follows, or a left-out
    chunk lies between them). A group is the chunks since the previous group end.

    Args:
        start: (B, S) int64, the previous aligned position at each chunk's last student position, -1 elsewhere.
        teacher_boundary: (B, S) float, the teacher's boundary log-mass after each chunk (nats).
        gamma: γ in [0, 1); 0 makes every chunk its own group.
    Returns:
        (group_end (B, S) bool, group_start (B, S) int64): the groups' last student positions, and at each the
        position before the group's first student token (its student tokens are group_start+1..s; elsewhere 0).
    """
    b, s = start.shape
    pos = torch.arange(s, device=start.device).expand(b, s)
    end = start >= 0
    prev_end = _exclusive_cummax(torch.where(end, pos, -1), -1)
    continues = end & (prev_end >= 0) & (start == prev_end)
    after = torch.where(end, pos, s).flip(1)
    next_end = _exclusive_cummax(-after, -s).neg().flip(1)  # the next chunk end after each position, or s
    followed = (next_end < s) & continues.gather(1, next_end.clamp_max(s - 1))
    threshold = math.log(gamma) if gamma > 0 else float("-inf")
    group_end = end & ((teacher_boundary > threshold) | ~followed)
    after_group_end = (prev_end >= 0) & group_end.gather(1, prev_end.clamp_min(0))
    first = end & (~continues | after_group_end)
    first_at = torch.cummax(torch.where(first, pos, -1), dim=1).values
    group_start = torch.where(group_end, start.gather(1, first_at.clamp_min(0)), 0)
    return group_end, group_start


def alm_group_losses(token_logprob, boundary_logprob, targets: dict, settings: ALMSettings):
    """L_g of every group of a batch, from the student's per-position values and the cache's chunks.

    Args:
        token_logprob: (B, S) float, log p_S of the next token at each position (`student_alm_logprobs`).
        boundary_logprob: (B, S) float, the student's boundary log-mass at each position.
        targets: "alm_start", "alm_teacher_logprob", "alm_teacher_boundary" (B, S) (`TARGET_KEYS`).
        settings: `ALMSettings`.
    Returns:
        (losses (G,) float64, teacher_loglik (G,), student_loglik (G,)): L_g and the (debiased) ℓT_g, ℓS_g of the
        G groups in row-major order of their last positions; differentiable w.r.t. the student's inputs.
    """
    start = targets["alm_start"].long()
    teacher = targets["alm_teacher_logprob"].double()
    t_boundary = targets["alm_teacher_boundary"].double()
    group_end, group_start = alm_groups(start, t_boundary, settings.gamma)
    b, s = start.shape
    zero = torch.zeros(b, 1, dtype=torch.float64, device=start.device)
    student_cum = torch.cat([zero, token_logprob.double().cumsum(1)], dim=1)  # [i] = Σ_{p < i} log p_S
    teacher_cum = torch.cat([zero, teacher.cumsum(1)], dim=1)  # [i + 1] = Σ_{p <= i} chunk log-likelihoods
    rows, ends = group_end.nonzero(as_tuple=True)
    starts = group_start[rows, ends]
    student = (student_cum[rows, ends] - student_cum[rows, starts]).clamp_max(0.0)
    teacher_ll = (teacher_cum[rows, ends + 1] - teacher_cum[rows, starts + 1]).clamp_max(0.0)
    if settings.debias:
        student = student + boundary_logprob.double()[rows, ends].clamp_max(0.0)
        teacher_ll = teacher_ll + t_boundary[rows, ends].clamp_max(0.0)
    return binary_ce(teacher_ll, student, settings.temperature), teacher_ll, student


def reduce_groups(losses: torch.Tensor, batch_size: int, reduction: Reduction = "token_mean") -> torch.Tensor:
    """A scalar from the groups' L_g: token_mean = their mean (tokenkit's chunk-count normalisation; 0 when there
    is none), babyllama = their sum / B (the original code's scaling, as `bbl.losses.reduce_kd`)."""
    if reduction == "babyllama":
        return losses.sum() / batch_size
    return losses.sum() / max(losses.numel(), 1)


def alm_loss(student_logits, targets: dict, boundary, settings: ALMSettings, reduction: Reduction = "token_mean"):
    """The ALM term of a batch from the student's full logits (the reference; `training.loss_impl: hf`).

    Args:
        student_logits: (B, S, V) float raw logits.
        targets: the batch's `TARGET_KEYS`, each (B, S).
        boundary: (V,) bool, the student's boundary ids.
        settings: `ALMSettings`. reduction: as `reduce_groups`.
    Returns:
        fp64 scalar (nats), differentiable w.r.t. the logits.
    """
    token, mass = student_alm_logprobs(student_logits, targets["alm_next_ids"].long(), boundary)
    losses, _, _ = alm_group_losses(token, mass, targets, settings)
    return reduce_groups(losses, student_logits.shape[0], reduction)


def alm_head_loss(hidden, weight, labels, targets: dict, *, boundary, settings: ALMSettings, ce_weight: float,
                  kd_weight: float, reduction: Reduction = "token_mean", chunk_rows: int | None = None):
    """L = ce_weight * CE + kd_weight * ALM from the student's last hidden states, without its (B, S, V) logits: the
    values and gradients of `alm_loss` on the full logits (and of HF's mean CE).

    The rows are projected in chunks of whole windows, once each: a group never crosses a window (`alm_groups`
    works along each row), and the reduction's normaliser (the batch's group count, or B) follows from the cache's
    targets alone, so a chunk's group terms and their gradients g_tok, g_bnd w.r.t. its positions' token and
    boundary log-probs are final within the chunk. Its logits' gradient then follows in closed form by the chain
    rule (p = softmax(z), q = the softmax of z over the boundary ids, 0 elsewhere; w_ce' = ce_weight / the
    labelled positions):

        dL/dz = w_ce' (p - e_label) + kd_weight [g_tok (e_next - p) + g_bnd (q - p)]

    The boundary mass is Σ_{v in B} p_v from the same p that becomes dz (one matrix-vector product), and q = p /
    that mass on the ids; where the mass is below sqrt(the dtype's smallest normal), whose terms may be subnormal,
    the logsumexp over the boundary logits and q from the logits instead, as `student_alm_logprobs`. No autograd
    graph over (rows, V) is kept: per chunk one projection, one logsumexp, one exp and one (rows, V) factor.

    Args:
        hidden: (B, S, H) float final hidden states; weight: (V, H) LM head; labels: (B, S) HF causal-LM labels
            (the CE's; ALM scores the window's own tokens, `alm_next_ids`).
        targets: the batch's `TARGET_KEYS`, each (B, S).
        boundary: (V,) bool, the student's boundary ids. settings: `ALMSettings`.
        ce_weight, kd_weight: the weights of the mean CE and of the reduced ALM term; unused with
            `settings.gradmag`, where they are 1 / ‖∇_h CE‖ and 1 / ‖∇_h ALM‖ over the batch's hidden states,
            normalised to sum to 1 (GradMag, Minixhofer et al. 2025 Section 3.3; tokenkit
            `approx_gradmag_preserve_mag`, which takes the norms over the last block's parameters). Each term then
            takes its own pass over the chunks (two projections).
        reduction: as `reduce_groups`. chunk_rows: rows projected at once (default as `bbl.losses.chunked_rows`),
            rounded down to whole windows, at least one (a window longer than it is a chunk of its own).
    Returns:
        (loss, ce, kd): fp32 scalars (fp64 for fp64 inputs); `loss` differentiable w.r.t. hidden and weight.
    Raises:
        ValueError: an unknown reduction, or shapes that disagree.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; use one of {', '.join(REDUCTIONS)}")
    b, s, h = hidden.shape
    if weight.shape[1] != h or labels.shape != (b, s) or boundary.shape != (weight.shape[0],):
        raise ValueError(f"shapes disagree: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, "
                         f"labels {tuple(labels.shape)}, boundary {tuple(boundary.shape)}")
    n = b * s
    target = shift_labels(labels).reshape(n)
    n_valid = max(int((target != IGNORE_INDEX).sum()), 1)
    next_ids = targets["alm_next_ids"].long().reshape(n)
    mask = boundary.to(hidden.device)
    rows = chunk_rows or default_chunk_rows(weight.shape[0], budget_elements=ROW_BUDGET)
    rows = max(1, rows // s) * s
    if reduction == "babyllama":
        normaliser = b
    else:
        group_end, _ = alm_groups(targets["alm_start"].long(), targets["alm_teacher_boundary"].double(),
                                  settings.gamma)
        normaliser = max(int(group_end.sum()), 1)
    safe_target = target.clamp_min(0)
    labelled = (target != IGNORE_INDEX)

    def passes(hid, w, want_grad: bool, ce_weight: float, kd_weight: float):
        dtype = compute_dtype(hid.dtype)
        ce_scale = ce_weight / n_valid
        g_ce = ce_scale * labelled.to(dtype)
        low_mass = torch.finfo(dtype).tiny ** 0.5
        mask_f = mask.to(dtype)

        def step(r0, r1, logits):
            w0, w1 = r0 // s, r1 // s
            log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
            label_logprob = logits.gather(-1, safe_target[r0:r1, None]).squeeze(-1) - log_z.squeeze(-1)
            ce = -(label_logprob * labelled[r0:r1].to(logits.dtype)).sum()
            dz = torch.exp(logits - log_z)  # p, becoming the gradient in place
            boundary_p = dz @ mask_f
            log_boundary = torch.log(boundary_p)
            low = boundary_p < low_mass  # a sum of terms that may be subnormal: the exact logsumexp there
            if bool(low.any()):
                log_boundary[low] = torch.logsumexp(logits[low].masked_fill(~mask, float("-inf")), dim=-1) \
                    - log_z[low, 0]
            token = (logits.gather(-1, next_ids[r0:r1, None]).squeeze(-1) - log_z.squeeze(-1)).double()
            mass = log_boundary.double()
            with torch.enable_grad():
                token.requires_grad_(want_grad)
                mass.requires_grad_(want_grad)
                chunk = {k: targets[k][w0:w1] for k in TARGET_KEYS}
                losses, _, _ = alm_group_losses(token.view(-1, s), mass.view(-1, s), chunk, settings)
                kd = losses.sum() / normaliser
                if want_grad and losses.numel():
                    d_token, d_mass = torch.autograd.grad(kd, (token, mass), allow_unused=True)
                else:
                    d_token = d_mass = None
            kd = kd.detach().to(dtype)
            if not want_grad:
                return ce, kd, None
            g_tok = torch.zeros_like(token) if d_token is None else d_token
            g_bnd = torch.zeros_like(mass) if d_mass is None else d_mass
            g_tok, g_bnd = (kd_weight * g_tok).to(dtype), (kd_weight * g_bnd).to(dtype)
            # g_bnd (q - p) with q = p / boundary_p on the boundary ids: one (rows, V) factor for every term in p
            per_boundary_id = torch.where(low, 0.0, g_bnd / boundary_p)
            dz.mul_(torch.addcmul((g_ce[r0:r1] - g_tok - g_bnd).unsqueeze(-1), per_boundary_id.unsqueeze(-1), mask_f))
            at = low & (g_bnd != 0)
            if bool(at.any()):  # q from the logits where the boundary mass is too small for p / boundary_p
                q = torch.exp(logits[at] - (log_z[at] + log_boundary[at].unsqueeze(-1)))
                dz[at] += q.masked_fill_(~mask, 0.0) * g_bnd[at].unsqueeze(-1)
            dz.scatter_add_(-1, safe_target[r0:r1, None], -g_ce[r0:r1, None])
            dz.scatter_add_(-1, next_ids[r0:r1, None], g_tok[:, None])
            return ce, kd, dz

        ce_sum, kd, grad_hidden, grad_weight = project_chunks(hid, w, rows, step, want_grad=want_grad)
        return ce_scale * ce_sum + kd_weight * kd, ce_sum, kd, grad_hidden, grad_weight

    def gradmag(hid, w, want_grad: bool):
        """GradMag: each term alone, then L = Σ_i L_i / ‖∇_h L_i‖ / Σ_i 1 / ‖∇_h L_i‖ (weights without gradient)."""
        _, ce_sum, kd, h_ce, w_ce = passes(hid, w, True, 1.0, 0.0)
        _, _, _, h_kd, w_kd = passes(hid, w, True, 0.0, 1.0)
        inv = [1.0 / (float(torch.linalg.vector_norm(g.double())) + GRADMAG_EPSILON) for g in (h_ce, h_kd)]
        a, c = inv[0] / sum(inv), inv[1] / sum(inv)
        loss = a * ce_sum / n_valid + c * kd
        if not want_grad:
            return loss, ce_sum, kd, None, None
        return loss, ce_sum, kd, (a * h_ce + c * h_kd).to(hid.dtype), (a * w_ce + c * w_kd).to(w.dtype)

    flat = hidden.reshape(n, h)
    run = gradmag if settings.gradmag else lambda hid, w, g: passes(hid, w, g, ce_weight, kd_weight)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        loss, ce_sum, kd = GradientsInForward.apply(lambda hid, w: run(hid, w, True), flat, weight)
    else:
        loss, ce_sum, kd, _, _ = run(flat, weight, False)
    return loss, (ce_sum / n_valid).detach(), kd.detach()
