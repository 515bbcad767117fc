"""CE plus any per-position KD term from the student's last hidden states, chunk by chunk, without the (B, S, V)
logits: the cross-tokenizer losses' path (`bbl.losses.cross_tokenizer`), which `chunked_head_loss`'s fused forms
do not cover.

Each chunk of rows is projected to its (c, V) logits, the loss of those rows is differentiated by autograd on that
chunk alone, and the logits' gradient becomes the hidden states' and the head's at once (dz @ W, dz^T h), so the
peak is a few (c, V) buffers whatever B * S is. The values and gradients are the full-logits functions' own: the KD
term calls them on (1, c, V) slices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bbl.config import Reduction
from bbl.losses.chunked import (
    IGNORE_INDEX,
    GradientsInForward,
    check_loss_settings,
    default_chunk_rows,
    project_chunks,
    shift_labels,
)

RowLoss = Callable[[torch.Tensor, dict], torch.Tensor]

ROW_BUDGET = 1 << 20
"""(rows, V) elements per chunk by default (256 rows at V = 4,096): autograd keeps several such buffers per chunk.
At 1,024 rows a GOLD step's peak RSS was 1.21x the same-tokenizer step's, at 256 rows 1.00x (BENCHMARKS.md,
"Cross-tokenizer cache"); a one-off timing on the 2-core CPU (not kept) found 256 rows no slower."""


def chunked_row_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, kd_rows: RowLoss,
                     targets: dict, aligned: torch.Tensor, *, alpha: float = 0.5, temperature: float = 1.0,
                     reduction: Reduction = "token_mean", chunk_rows: int | None = None,
                     weights: tuple[float, float] | None = None):
    """L = alpha * CE + (1 - alpha) * T^2 * KD (or w_ce * CE + w_kd * KD with `weights`), KD reduced over the
    aligned positions (`reduce_aligned`), chunked.

    Args:
        hidden: (B, S, H) float, the final hidden states (after the last norm).
        weight: (V, H), the LM head weight (no bias).
        labels: (B, S) int64 HF causal-LM labels (unshifted; -100 ignored): position s predicts labels[s + 1].
        kd_rows: f(logits (1, c, V) float, targets sliced to (1, c, ...)) -> (1, c) per-position KD, 0 off the
            aligned positions; differentiable (e.g. `exact_match_kl` with its other arguments bound).
        targets: tensors whose first two dims are (B, S), sliced per chunk for `kd_rows`.
        aligned: (B, S) bool, the positions the KD term covers (its token_mean denominator).
        alpha: CE weight in [0, 1]. temperature: T > 0 (the KD term's T^2 factor; `kd_rows` softens itself).
        reduction: "token_mean" (KD over aligned positions) or "babyllama" (sum / B), as `reduce_aligned`.
        chunk_rows: rows projected at once (default `default_chunk_rows(V, ROW_BUDGET)`).
        weights: (w_ce, w_kd) >= 0 in place of (alpha, (1 - alpha) * T^2), e.g. ULD's CE + lambda * ULD.
    Returns:
        (loss, ce, kd): fp32 scalars; `loss` is differentiable w.r.t. hidden and weight, `ce` (the mean CE over the
        labelled positions, HF's) and `kd` (the reduced KD) are detached.
    Raises:
        ValueError: bad alpha, temperature, reduction or shapes.
    """
    check_loss_settings(temperature, alpha, reduction)
    b, s, h = hidden.shape
    if weight.shape[1] != h or labels.shape != (b, s) or aligned.shape != (b, s):
        raise ValueError(f"shapes disagree: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, "
                         f"labels {tuple(labels.shape)}, aligned {tuple(aligned.shape)}")
    n = b * s
    target = shift_labels(labels).reshape(n)
    n_valid = int((target != IGNORE_INDEX).sum())
    kd_denominator = max(int(aligned.sum()), 1) if reduction == "token_mean" else b
    w_ce, w_kd = weights if weights is not None else (alpha, (1 - alpha) * temperature ** 2)
    spec = _Spec(kd_rows, w_ce / max(n_valid, 1), w_kd / kd_denominator,
                 chunk_rows or default_chunk_rows(weight.shape[0], budget_elements=ROW_BUDGET))
    names = sorted(targets)
    flat = [targets[k].reshape(n, *targets[k].shape[2:]) for k in names]
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    if need_grad:
        loss, ce_sum, kd_sum = GradientsInForward.apply(
            lambda hid, w: _passes(hid, w, target, spec, names, flat, want_grad=True), hidden.reshape(n, h), weight)
    else:
        loss, ce_sum, kd_sum, _, _ = _passes(hidden.reshape(n, h), weight, target, spec, names, flat, want_grad=False)
    ce = ce_sum / max(n_valid, 1)
    kd = kd_sum / kd_denominator
    return loss, ce, kd


@dataclass(frozen=True)
class _Spec:
    kd_rows: RowLoss
    ce_weight: float  # d loss / d (sum of CE rows)
    kd_weight: float  # d loss / d (sum of KD rows)
    chunk_rows: int


def _passes(hidden, weight, target, spec: _Spec, names, flat, *, want_grad: bool):
    """(loss, Σ CE, Σ KD, grad_hidden | None, grad_weight | None) in one pass over row chunks (`project_chunks`),
    each chunk's logits differentiated by autograd."""

    def step(r0, r1, logits):
        chunk = {k: t[r0:r1].unsqueeze(0) for k, t in zip(names, flat, strict=True)}
        with torch.enable_grad() if want_grad else torch.no_grad():
            logits.requires_grad_(want_grad)
            ce = F.cross_entropy(logits, target[r0:r1], ignore_index=IGNORE_INDEX, reduction="sum")
            kd = spec.kd_rows(logits.unsqueeze(0), chunk).sum()
            dz = (torch.autograd.grad(spec.ce_weight * ce + spec.kd_weight * kd, logits)[0] if want_grad else None)
        return ce.detach(), kd.detach().to(ce.dtype), dz

    ce_sum, kd_sum, grad_hidden, grad_weight = project_chunks(hidden, weight, spec.chunk_rows, step,
                                                              want_grad=want_grad)
    return spec.ce_weight * ce_sum + spec.kd_weight * kd_sum, ce_sum, kd_sum, grad_hidden, grad_weight
