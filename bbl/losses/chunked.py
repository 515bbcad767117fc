"""A chunked LM head + CE + KD loss that never holds the (B, S, V) logits (issue 11; DESIGN.md, "Performance").

The student's last hidden states (B, S, H) and its head weight (V, H) go in; rows are projected to logits a chunk
at a time, each chunk's CE on the hard labels and KD against the teacher are reduced at once, and their gradients
with respect to the hidden states and the head weight are accumulated in the same pass (the approach of
Liger-Kernel's FusedLinearCrossEntropy and fused linear JSD, written here in plain PyTorch so it runs on CPU and
GPU alike). Peak memory is a few (chunk, V) fp32 buffers instead of the model's (B, S, V) logits, their
log-softmaxes and autograd's (B, S, V) gradient.

Values and gradients equal the unfused `bbl.losses` path to fp32 tolerance (tests/test_chunked_loss.py):

    L = alpha * CE + (1 - alpha) * T^2 * reduce(KL_T)          (Baby Llama, Section 3.2)

with CE the HF causal-LM loss (position s predicts label s + 1, -100 ignored, mean over the counted labels) and
KL_T one of `topk_tail_kl`, `topk_renorm_kl` (cached targets) or `full_kl` (an online teacher's logits) at every
position, reduced by `reduce_kd` (`token_mean` or `babyllama`). Another `divergence` (`bbl.losses.divergences`)
takes KL_T's place, as `topk_divergence` / `full_divergence` compute it.

Forward KL has hand-fused gradients, per row with z the logits, q = softmax(z / T), p the teacher:
    CE:           softmax(z) - onehot(label)
    topk_tail:    (q - r) / T, r_i = p_i on the k cached ids, r_j = p_tail * q_j / q_tail elsewhere (for
                  cached masses summing to 1; the code keeps the general form for fp16-rounded ones)
    topk_renorm:  (q - p~) / T, p~ the teacher renormalised over its k ids, 0 elsewhere
    full:         (q - p) / T
Every other divergence is differentiated by autograd on the chunk's small (rows, k+1) coarsened log-probabilities
(or (rows, V) online), and that gradient reaches the logits through `bbl.losses.coarse.chain_rule`, built in place
over the same (rows, V) buffer as forward KL's. The gradients are computed during the forward (the loss must then
be used linearly, as `loss.backward()` or a GA / AMP scale does) and scaled by the incoming gradient in the
backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bbl.config import REDUCTIONS, Reduction
from bbl.losses.coarse import chain_rule, compute_dtype, student_rest_logprob, teacher_coarse_logprobs
from bbl.losses.divergences import FORWARD_KL, Divergence, coarse_kl, xlogx_term

IGNORE_INDEX = -100
KD_KINDS = ("topk_tail", "topk_renorm", "full")


def default_chunk_rows(vocab_size: int, budget_elements: int = 1 << 24, max_rows: int = 1024) -> int:
    """Rows per chunk: 1,024, fewer when one (rows, V) fp32 buffer would pass `budget_elements` (64 MiB); >= 64.

    Measured on a 2-core CPU (BENCHMARKS.md, "The chunked loss"): 1,024 rows was the fastest of 128...4,096 for
    both (H 128, V 4,096) and (H 512, V 16,000).
    """
    return max(64, min(max_rows, budget_elements // max(1, vocab_size)))


@dataclass
class KDTargets:
    """The teacher side of the KD term for a batch.

    kind: "topk_tail" / "topk_renorm" with `topk_ids` (B, S, K) int64, `topk_logprobs` (B, S, K) float and
    `tail_logprob` (B, S) float, all log p_T in nats (the cache's arrays); or "full" with `teacher_logits`
    (B, S, V) float raw logits (the online ensemble's logit mean). Sampled and hybrid targets arrive as topk_tail
    with repeated ids (`bbl.losses.sampled_targets`), which only forward KL reads (`divergences.reading_problem`).
    """

    kind: str
    topk_ids: torch.Tensor | None = None
    topk_logprobs: torch.Tensor | None = None
    tail_logprob: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None

    def __post_init__(self):
        if self.kind not in KD_KINDS:
            raise ValueError(f"unknown KD kind {self.kind!r}; use one of {', '.join(KD_KINDS)}")
        need = ("teacher_logits",) if self.kind == "full" else ("topk_ids", "topk_logprobs", "tail_logprob")
        missing = [n for n in need if getattr(self, n) is None]
        if missing:
            raise ValueError(f"KD kind {self.kind!r} needs {', '.join(missing)}")

    def rows(self, n: int) -> dict:
        """The targets flattened to n rows: (n, K) / (n,) / (n, V)."""
        if self.kind == "full":
            return {"teacher_logits": self.teacher_logits.reshape(n, -1)}
        return {"topk_ids": self.topk_ids.reshape(n, -1), "topk_logprobs": self.topk_logprobs.reshape(n, -1),
                "tail_logprob": self.tail_logprob.reshape(n)}


def check_loss_settings(temperature: float, alpha: float, reduction: str) -> None:
    """Raises ValueError: T <= 0, alpha outside [0, 1] or an unknown reduction (one line naming the value)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; use one of {', '.join(REDUCTIONS)}")


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """(B, S) labels → (B, S) targets of each position: labels[:, 1:] then IGNORE_INDEX (as HF's ForCausalLMLoss)."""
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat([labels[:, 1:], pad], dim=1)


def chunked_head_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *, kd: KDTargets | None = None,
                      alpha: float = 0.5, temperature: float = 1.0, reduction: Reduction = "token_mean",
                      chunk_rows: int | None = None, shift: bool = True, divergence: Divergence = FORWARD_KL,
                      kd_positions: int | None = None):
    """The student's loss from its last hidden states without materialising the (B, S, V) logits.

    Args:
        hidden: (B, S, H) float, the final hidden states (after the last norm), any float dtype.
        weight: (V, H), the LM head weight (tied or not; no bias, as GPT-2 and LLaMA).
        labels: (B, S) int64 HF causal-LM labels (unshifted; -100 ignored).
        kd: the teacher targets, or None for plain CE (then alpha is not used).
        alpha: weight of the CE in [0, 1] (the paper: 0.5).
        temperature: T > 0 of the KD term (the CE is at T = 1).
        reduction: "token_mean" (mean over B*S positions) or "babyllama" (sum / B), as `bbl.losses.reduce_kd`.
        chunk_rows: rows projected at once (default: `default_chunk_rows(V)`).
        shift: True (causal LM): position s predicts labels[s + 1]; False: position s predicts labels[s] (a masked
            LM whose masked position predicts its own token, `training.mlm_target: own`, or rows the caller has
            already aligned). KD row s is always position s's target.
        divergence: what KD measures (`bbl.losses.divergences.Divergence`; default forward KL, the paper's).
        kd_positions: the token_mean denominator of the KD term (default B * S; a cross-tokenizer cache's aligned
            positions, `bbl.losses.cross_tokenizer.reduce_aligned`).
    Returns:
        (loss, ce, kd_value): fp32 scalars (fp64 for fp64 inputs); `loss` is differentiable w.r.t. hidden and weight, `ce` and `kd_value`
        are detached (kd_value is None without kd).
    Raises:
        ValueError: bad temperature, alpha, reduction, shapes, or ids outside [0, V).
    """
    check_loss_settings(temperature, alpha, reduction)
    b, s, h = hidden.shape
    v = weight.shape[0]
    if weight.shape[1] != h or labels.shape != (b, s):
        raise ValueError(f"shapes disagree: hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, "
                         f"labels {tuple(labels.shape)}")
    n = b * s
    per_token = max(kd_positions, 1) if kd_positions is not None else n
    targets = kd.rows(n) if kd is not None else {}
    if "topk_ids" in targets:
        ids = targets["topk_ids"]
        if ids.shape[0] != n or targets["tail_logprob"].shape[0] != n:
            raise ValueError(f"KD targets do not cover the ({b}, {s}) positions")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= v):
            raise ValueError(f"topk_ids outside [0, {v})")
    if "teacher_logits" in targets and targets["teacher_logits"].shape != (n, v):
        raise ValueError(f"teacher logits {tuple(kd.teacher_logits.shape)} do not match ({b}, {s}, {v})")
    target = (shift_labels(labels) if shift else labels).reshape(n)
    n_valid = int((target != IGNORE_INDEX).sum())
    spec = _Spec(kind=kd.kind if kd is not None else None, divergence=divergence, temperature=float(temperature),
                 ce_weight=(alpha if kd is not None else 1.0) / max(n_valid, 1),
                 kd_weight=0.0 if kd is None else (1 - alpha) * temperature ** 2 / (per_token if reduction == "token_mean" else b),
                 chunk_rows=chunk_rows or default_chunk_rows(v))
    tensors = [targets.get(k) for k in ("topk_ids", "topk_logprobs", "tail_logprob", "teacher_logits")]
    flat = hidden.reshape(n, h)
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    if not need_grad:
        loss, ce_sum, kl_sum, _, _ = _passes(flat, weight, target, tensors, spec, want_grad=False)
        return loss, *_parts(spec, ce_sum, kl_sum, n_valid, per_token, b, reduction)
    loss, ce_sum, kl_sum = GradientsInForward.apply(
        lambda hid, w: _passes(hid, w, target, tensors, spec, want_grad=True), flat, weight)
    return loss, *_parts(spec, ce_sum, kl_sum, n_valid, per_token, b, reduction)


def _parts(spec, ce_sum, kl_sum, n_valid, n, b, reduction):
    ce = ce_sum / max(n_valid, 1)
    if spec.kind is None:
        return ce, None
    return ce, kl_sum / (n if reduction == "token_mean" else b)


@dataclass(frozen=True)
class _Spec:
    kind: str | None
    divergence: Divergence
    temperature: float
    ce_weight: float  # d loss / d (sum of CE rows)
    kd_weight: float  # d loss / d (sum of KL rows)
    chunk_rows: int


class GradientsInForward(torch.autograd.Function):
    """(loss, Σ CE, Σ KD) of a chunked head loss whose gradients w.r.t. the hidden states and the head weight are
    computed in the forward, chunk by chunk, by `passes(hidden, weight)` -> (loss, Σ CE, Σ KD, grad_hidden,
    grad_weight), and only scaled in the backward: no (B, S, V) tensor is kept for it. Used as
    `GradientsInForward.apply(passes, hidden, weight)` (here and `bbl.losses.chunked_rows`)."""

    @staticmethod
    def forward(ctx, passes, hidden, weight):
        loss, ce_sum, kd_sum, grad_hidden, grad_weight = passes(hidden, weight)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.mark_non_differentiable(ce_sum, kd_sum)
        return loss, ce_sum, kd_sum

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_kd):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_loss.to(grad_hidden.dtype)
        return None, grad_hidden * scale, grad_weight * scale.to(grad_weight.dtype)


def project_chunks(hidden, weight, chunk_rows: int, step, *, want_grad: bool):
    """The row-chunk loop of both chunked losses (`_passes` here, `bbl.losses.chunked_rows`): per chunk of rows r0:r1,
    h = hidden[r0:r1] and its logits h @ W^T (c, V), both in the compute dtype and detached, go to
    `step(r0, r1, logits)` -> (Σ CE, Σ KD or None, dz = d loss / d logits (c, V) or None), and dz's gradients
    dz @ W and dz^T h are accumulated.

    Returns:
        (Σ CE, Σ KD, grad_hidden | None, grad_weight | None): sums in the compute dtype (fp32; fp64 for fp64
        inputs), the gradients in hidden's and weight's dtypes when `want_grad`.
    """
    n = hidden.shape[0]
    dtype = compute_dtype(hidden.dtype)
    w = weight.detach().to(dtype)
    ce_sum = torch.zeros((), dtype=dtype, device=hidden.device)
    kd_sum = torch.zeros((), dtype=dtype, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if want_grad else None
    grad_weight = torch.zeros_like(w) if want_grad else None
    for r0 in range(0, n, chunk_rows):
        r1 = min(n, r0 + chunk_rows)
        h = hidden[r0:r1].detach().to(dtype)
        ce, kd, dz = step(r0, r1, h @ w.T)
        ce_sum += ce
        if kd is not None:
            kd_sum += kd
        if want_grad:
            grad_hidden[r0:r1] = (dz @ w).to(hidden.dtype)
            grad_weight.addmm_(dz.T, h)
    if want_grad:
        grad_weight = grad_weight.to(weight.dtype)
    return ce_sum, kd_sum, grad_hidden, grad_weight


def _passes(hidden, weight, target, tensors, spec: _Spec, *, want_grad: bool):
    """One pass over row chunks (`project_chunks`): (loss, Σ CE, Σ KL, grad_hidden | None, grad_weight | None), sums
    in fp32 (fp64 for fp64 inputs).

    Per chunk the (c, V) work is: the projection, one logsumexp, one exp into a buffer that becomes the gradient
    in place (shared by CE and KD at T = 1), and K-wide gathers and scatters; the backward's two matmuls follow.
    """
    targets = {k: v for k, v in zip(("topk_ids", "topk_logprobs", "tail_logprob", "teacher_logits"), tensors,
                                    strict=True) if v is not None}
    dtype = compute_dtype(hidden.dtype)

    def step(r0, r1, logits):
        tgt = target[r0:r1]
        valid = tgt != IGNORE_INDEX
        safe = torch.where(valid, tgt, 0).unsqueeze(-1)
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        ce = ((lse - logits.gather(-1, safe)).squeeze(-1) * valid).sum()
        row_ce = (valid.to(dtype) * spec.ce_weight).unsqueeze(-1)  # d loss / d CE row
        kl = None
        if spec.kind is None:
            dz = logits.sub_(lse).exp_().mul_(row_ce) if want_grad else None
        else:
            chunk = _kd_chunk if spec.divergence.uses_fused_path else _divergence_chunk
            kl_rows, dz = chunk(spec, logits, lse, {k: v[r0:r1] for k, v in targets.items()}, row_ce, want_grad)
            kl = kl_rows.sum()
        if want_grad:
            dz.scatter_add_(-1, safe, -row_ce)  # the CE's "- onehot(label)"
        return ce, kl, dz

    ce_sum, kl_sum, grad_hidden, grad_weight = project_chunks(hidden, weight, spec.chunk_rows, step,
                                                              want_grad=want_grad)
    loss = spec.ce_weight * ce_sum + spec.kd_weight * kl_sum
    return loss, ce_sum, kl_sum, grad_hidden, grad_weight


def _kd_chunk(spec: _Spec, logits, lse, tg: dict, row_ce, want_grad: bool):
    """Forward KL's fused path: per-row KL (c,) of one chunk and, if wanted, d loss / d logits of CE and KD together
    except the CE's "- onehot" (c, V), built in place over `logits`. Same values as `bbl.losses`."""
    t, kind, dtype = spec.temperature, spec.kind, logits.dtype  # fp32 (fp64 for fp64 inputs)
    lse_t = lse if t == 1.0 else torch.logsumexp(logits / t, dim=-1, keepdim=True)
    scale = spec.kd_weight / t  # d loss / d (q - r) per unit of the KD's logit gradient
    if kind == "full":
        log_p = torch.log_softmax(tg["teacher_logits"].to(dtype) / t, dim=-1)
        log_q = logits / t - lse_t
        kl = xlogx_term(log_p, log_p - log_q).sum(-1)
        if not want_grad:
            return kl, None
        q = log_q.exp_()
        dz = _ce_softmax_plus(logits, lse, row_ce, q, t, lse_t, scale)
        return kl, dz.sub_(log_p.exp_().mul_(scale))
    ids = tg["topk_ids"].long()
    log_p_top = tg["topk_logprobs"].to(dtype)
    log_q_top = logits.gather(-1, ids) / t - lse_t
    if kind == "topk_tail":
        # A slot of teacher log-prob -inf carries no mass on either side: its q stays in the student's tail (an
        # exact-match slot without a student twin, `bbl.losses.cross_tokenizer`; for a repeated draw or a row
        # without targets p_tail = 0 too, so q_tail does not enter the value or the gradient, bit for bit).
        q_top64 = log_q_top.double().exp().masked_fill(torch.isneginf(log_p_top), 0.0)
        q_tail = (1.0 - q_top64.sum(-1)).clamp_min(1e-300)
        log_p_tail = tg["tail_logprob"].to(dtype)
        kl = coarse_kl(log_p_top, log_p_tail, log_q_top, q_tail.log().to(dtype))
        if not want_grad:
            return kl, None
        # The cached masses need not sum to 1 exactly (fp16 rounding), so keep the general form: with
        # P = Σ_I p + p_tail, d KL / d z_j = (q_j (P - p_tail / q_tail)) / T off I and (q_i P - p_i) / T on I.
        p_top, p_tail = log_p_top.exp(), log_p_tail.double().exp()
        ratio = p_tail / q_tail
        off = (p_top.double().sum(-1) + p_tail - ratio).to(dtype).unsqueeze(-1)
        dz = _ce_softmax_plus(logits, lse, row_ce, None, t, lse_t, scale * off)
        q_top = q_top64.to(dtype)
        return kl, dz.scatter_add_(-1, ids, (q_top * ratio.to(dtype).unsqueeze(-1) - p_top) * scale)
    # topk_renorm: d KL / d z = (q - p~) / T with p~ the teacher renormalised over its k ids
    log_p = log_p_top - torch.logsumexp(log_p_top, dim=-1, keepdim=True)
    no_tail = torch.full_like(log_p[..., 0], float("-inf"))
    kl = coarse_kl(log_p, no_tail, log_q_top, torch.zeros_like(no_tail))
    if not want_grad:
        return kl, None
    dz = _ce_softmax_plus(logits, lse, row_ce, None, t, lse_t, scale)
    return kl, dz.scatter_add_(-1, ids, log_p.exp().mul_(-scale))


def _divergence_chunk(spec: _Spec, logits, lse, tg: dict, row_ce, want_grad: bool):
    """Any divergence (the generic path): per-row values (c,) of one chunk and, if wanted, d loss / d logits of CE
    and KD together except the CE's "- onehot" (c, V), built in place over `logits`.

    The student's coarsened log-probabilities (rows, K+1) (or its (rows, V) log-softmax online) are a leaf of a
    small autograd graph through the divergence; `chain_rule` turns their gradient into the logits' as a multiple
    of q_T per row plus K-wide scatters, so the (c, V) work is forward KL's. Same values as `topk_divergence` /
    `full_divergence`.
    """
    t, divergence = spec.temperature, spec.divergence
    lse_t = lse if t == 1.0 else torch.logsumexp(logits / t, dim=-1, keepdim=True)
    if spec.kind == "full":
        ids = None
        log_p = torch.log_softmax(tg["teacher_logits"].to(logits.dtype) / t, dim=-1)
        log_q = logits / t - lse_t
    else:
        ids = tg["topk_ids"].long()
        log_q_top = logits.gather(-1, ids) / t - lse_t
        log_q_rest = student_rest_logprob(log_q_top, ids, lambda rows: logits[rows] / t - lse_t[rows])
        log_q = torch.cat([log_q_top, log_q_rest.unsqueeze(-1)], -1)
        log_p = teacher_coarse_logprobs(tg["topk_logprobs"], tg["tail_logprob"],
                                        renorm=spec.kind == "topk_renorm").to(logits.dtype)
    if not want_grad:
        return divergence(log_p, log_q), None
    with torch.enable_grad():
        leaf = log_q.detach().requires_grad_()
        value = divergence(log_p, leaf)
        (grad,) = torch.autograd.grad(value.sum(), leaf)
    scale = spec.kd_weight / t  # d loss / d (Σ divergence rows), over T from d log q / d z
    coef, at_ids = chain_rule(grad, log_q, rest=ids is not None)
    if ids is None:  # online: at_ids is the (c, V) gradient itself
        dz = _ce_softmax_plus(logits, lse, row_ce, log_q.exp_(), t, lse_t, coef * scale)
        return value.detach(), dz.add_(at_ids.mul_(scale))
    dz = _ce_softmax_plus(logits, lse, row_ce, None, t, lse_t, coef * scale)
    return value.detach(), dz.scatter_add_(-1, ids, at_ids * scale)


def _ce_softmax_plus(logits, lse, row_ce, q, t, lse_t, coef):
    """softmax(z) * row_ce + q_T * coef, (c, V), in place over `logits` (q_T = softmax(z / T), shared at T = 1)."""
    if t == 1.0:
        return logits.sub_(lse).exp_().mul_(row_ce + coef)
    q = q if q is not None else (logits / t).sub_(lse_t).exp_()
    return logits.sub_(lse).exp_().mul_(row_ce).add_(q.mul_(coef))
