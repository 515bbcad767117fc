"""Divergences between the teacher's distribution p and the student's q, registered by name (`distill.divergence`).

Each is written once, as a function of two log-distributions over the same outcomes, (..., n) -> (...) nats: the
(k+1)-outcome coarsenings of a top-k cache (the k cached ids and "any other id", `bbl.losses.coarse`) or the full
vocabulary (online distillation). On a coarsening each f-divergence here (all but akl) is a lower bound of the
full-vocabulary one (data-processing inequality) and equals it at k = V. The chunked loss differentiates them with
autograd on the small coarsened tensors and carries the gradient to the logits through one chain rule
(`bbl.losses.coarse.chain_rule`); forward KL keeps its hand-fused path. Which cache readings (`distill.kd_variant`)
each divergence supports, and why: `reading_problem` (docs/cache-format.md, "Divergences").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

LOG_ZERO = -1e4
"""A log-probability below every real one (nats): where a mixture takes the log of a zero-mass outcome
(log p = -inf), the operand is raised to this, so 0 * log 0 terms and their gradients are exactly 0, never NaN."""
AKL_HEAD_MASS = 0.5
"""AKL's mu (Wu et al. 2025): the head is the teacher's most probable outcomes whose cumulative mass stays within
mu (the first always in). The paper's and the authors' code's value."""


def xlogx_term(log_p: torch.Tensor, log_p_minus_log_q: torch.Tensor) -> torch.Tensor:
    """p * (log p - log q), with 0 where p == 0 (log p = -inf), never NaN (nor a NaN gradient)."""
    zero = torch.isneginf(log_p)
    return torch.where(zero, torch.zeros_like(log_p), log_p.exp() * torch.where(zero, 0.0, log_p_minus_log_q))


def coarse_kl(log_p_top: torch.Tensor, log_p_tail: torch.Tensor, log_q_top: torch.Tensor,
              log_q_tail: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) of two (k+1)-outcome distributions {k ids, tail}:
    Σ_i p_i log(p_i / q_i) + p_tail log(p_tail / q_tail).

    The one (k+1) KL of bbl: the cached KD loss (`topk_tail_kl`, the chunked loss) and the cache's fidelity check
    (`bbl.cache.verify.coarse_kl`) call it. Outcomes with p = 0 (log p = -inf) contribute 0.

    Args:
        log_p_top, log_q_top: (..., K) float log-probabilities of the k ids (nats).
        log_p_tail, log_q_tail: (...) float log-probabilities of the tail (-inf for no mass).
    Returns:
        (...) KL per position, nats, in the inputs' dtype.
    """
    return xlogx_term(log_p_top, log_p_top - log_q_top).sum(-1) + xlogx_term(log_p_tail, log_p_tail - log_q_tail)


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ_o p_o (log p_o - log q_o) over the last axis, (..., n) -> (...) nats (`coarse_kl`, its last
    outcome as the tail)."""
    return coarse_kl(log_p[..., :-1], log_p[..., -1], log_q[..., :-1], log_q[..., -1])


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w a + (1 - w) b) for w in [0, 1], zero-mass operands raised to `LOG_ZERO` (finite gradients)."""
    log_w = math.log(weight_a) if weight_a > 0 else -math.inf
    log_1mw = math.log1p(-weight_a) if weight_a < 1 else -math.inf
    return torch.logaddexp(log_a.clamp_min(LOG_ZERO) + log_w, log_b.clamp_min(LOG_ZERO) + log_1mw)


@dataclass(frozen=True)
class Registered:
    """A divergence in the registry: its function and what it supports.

    fn(log_p, log_q, **settings) -> (...) nats, with `settings` the `Divergence` fields it reads. `from_draws` /
    `zero_teacher_mass`: None where the divergence supports sampled and hybrid targets (a sound estimator from
    draws of p_T) / a teacher outcome of zero mass (topk_renorm's tail), else why not. `fused`: the chunked loss
    has a hand-fused path for it (forward KL).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    settings: tuple[str, ...] = ()
    from_draws: str | None = None
    zero_teacher_mass: str | None = None
    fused: bool = False


DIVERGENCES: dict[str, Registered] = {}
"""Every divergence by name; `bbl.config.DivergenceName` lists the same names (tests/test_divergences.py)."""


def register(name: str, *, settings: tuple[str, ...] = (), from_draws: str | None = None,
             zero_teacher_mass: str | None = None, fused: bool = False):
    """Decorator: add `fn(log_p, log_q, **settings)` to `DIVERGENCES` under `name` (`Registered` says the rest)."""
    def add(fn):
        DIVERGENCES[name] = Registered(name, fn, settings, from_draws, zero_teacher_mass, fused)
        return fn
    return add


@register("forward_kl", fused=True)
def forward_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ p log(p / q): the paper's KD term (Hinton et al. 2015; Baby Llama, Section 3.2).

    Sampled / hybrid targets: supported. Its gradient in the logits, (q - p) / T, is linear in p, so the draws'
    empirical p̂ (E[p̂] = p) gives an unbiased estimate of it (Anshumann et al. 2025, Section 3; tests/
    test_sparse_targets.py). A zero-mass teacher outcome contributes 0. Args / returns: see the module docstring.
    """
    return kl(log_p, log_q)


@register("reverse_kl",
          from_draws="KL(q ‖ p) needs log p_T at every id the student gives mass to, but the draws' "
                     "empirical p̂ is 0 (log -inf) at every id not drawn and E[log p̂] != log p, so neither it "
                     "nor its gradient has an unbiased estimate from draws",
          zero_teacher_mass="the renormalised teacher gives the tail no mass while the student's softmax always "
                            "gives it some, so KL(q ‖ p) is infinite")
def reverse_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ p) = Σ q log(q / p), the mode-seeking direction (MiniLLM, Gu et al., ICLR 2024, arXiv
    2306.08543; GKD's beta = 1, Agarwal et al., ICLR 2024). Infinite where p = 0 < q.

    Sampled / hybrid targets: refused (log p at undrawn ids is unknown: no unbiased estimator). topk_renorm:
    refused (infinite: the renormalised teacher's tail has no mass).
    """
    return kl(log_q, log_p)


@register("jsd", settings=("jsd_beta",),
          from_draws="the generalised JSD depends on p through log(beta p + (1 - beta) q), not linearly, so "
                     "its value and gradient from the draws' empirical p̂ are biased (Jensen's inequality)")
def jsd(log_p: torch.Tensor, log_q: torch.Tensor, *, jsd_beta: float = 0.5) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence, GKD (Agarwal et al., ICLR 2024, arXiv 2306.13649, Eq. 1) as TRL's
    `GKDTrainer.generalized_jsd_loss` computes it:

        JSD(beta) = beta KL(p ‖ m) + (1 - beta) KL(q ‖ m),   m = beta p + (1 - beta) q,

    and, as TRL, KL(p ‖ q) at beta = 0 and KL(q ‖ p) at beta = 1 (the formula itself vanishes at both ends).
    0 <= JSD(beta) <= H(beta) (the binary entropy; ln 2 at beta = 0.5). Finite for any p, q with 0 < beta < 1.

    Sampled / hybrid targets: refused (log m is not linear in p: the plug-in p̂ is biased). topk_renorm: supported
    (the tail term is (1 - beta) q log(q / m) <= -(1 - beta) log(1 - beta) q).
    """
    if jsd_beta == 0:
        return kl(log_p, log_q)
    if jsd_beta == 1:
        return kl(log_q, log_p)
    log_m = _log_mixture(log_p, log_q, jsd_beta)
    return jsd_beta * kl(log_p, log_m) + (1 - jsd_beta) * kl(log_q, log_m)


@register("skew_kl", settings=("skew",),
          from_draws="the skew KL's gradient -(1 - skew) Σ p q / (skew p + (1 - skew) q) is not linear in "
                     "p, so the draws' empirical p̂ gives a biased estimate")
def skew_kl(log_p: torch.Tensor, log_q: torch.Tensor, *, skew: float = 0.1) -> torch.Tensor:
    """Skew KL of DistiLLM (Ko et al., ICML 2024, arXiv 2402.03898, the alpha-skew KLD):
    KL(p ‖ s p + (1 - s) q), s = `skew` (the paper's alpha, 0.1 by default; not bbl's `alpha`, the CE weight).
    s = 0 is KL(p ‖ q); the mixture keeps the ratio p / m <= 1 / s, bounding the gradient. The authors'
    `skewed_forward_kl` drops the constant Σ p log p; this is the divergence itself (>= 0, 0 at p = q).

    Sampled / hybrid targets: refused (not linear in p). topk_renorm: supported (zero-mass outcomes contribute 0).
    """
    return kl(log_p, _log_mixture(log_p, log_q, skew))


@register("skew_rkl", settings=("skew",),
          from_draws="the skew reverse KL depends on p through log((1 - skew) p + skew q), not linearly, so the "
                     "draws' empirical p̂ gives a biased estimate (and p̂ = 0 at every undrawn id)")
def skew_rkl(log_p: torch.Tensor, log_q: torch.Tensor, *, skew: float = 0.1) -> torch.Tensor:
    """Skew reverse KL of DistiLLM (Ko et al., ICML 2024, the alpha-skew RKLD): KL(q ‖ (1 - s) p + s q),
    s = `skew`. s = 0 is KL(q ‖ p); s > 0 keeps it finite where p = 0 (at most q log(1 / s)).

    Sampled / hybrid targets: refused (not linear in p). topk_renorm: supported with skew > 0 (the config's range).
    """
    return kl(log_q, _log_mixture(log_p, log_q, 1.0 - skew))


@register("tvd",
          from_draws="|p̂ - q| is a biased estimate of |p - q| (E|p̂ - q| >= |p - q|, and the gradient's "
                     "sign(p - q) flips with the draws)")
def tvd(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Total variation distance ½ Σ |p - q|, in [0, 1] (the f-divergence f(t) = ½ |t - 1|; token-level TVD of Wen
    et al., "f-Divergence Minimization for Sequence-Level Knowledge Distillation", ACL 2023). Its gradient in q is
    the subgradient -½ sign(p - q) (0 where p = q).

    Sampled / hybrid targets: refused (biased). topk_renorm: supported (bounded).
    """
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


@register("akl",
          from_draws="AKL mixes in reverse KL (no estimator from draws) with weights that are not linear in p",
          zero_teacher_mass="AKL mixes in reverse KL, which is infinite against a teacher whose tail has no mass")
def akl(log_p: torch.Tensor, log_q: torch.Tensor, *, head_mass: float = AKL_HEAD_MASS) -> torch.Tensor:
    """Adaptive KL (Wu et al., "Rethinking Kullback-Leibler Divergence in Knowledge Distillation for Large
    Language Models", COLING 2025, arXiv 2404.02657): the gaps on the teacher's head H (its most probable outcomes
    whose cumulative mass stays within mu = `head_mass`, the first always in) and on the rest,

        g_head = Σ_{o ∈ H} |p_o - q_o|,   g_tail = Σ_{o ∉ H} |p_o - q_o|,

    weigh forward and reverse KL:

        AKL = g_head / (g_head + g_tail) KL(p ‖ q) + g_tail / (g_head + g_tail) KL(q ‖ p).

    The weights are constants of the gradient (the authors' `AKL.py` `get_ratio` detaches the student), and ½ each
    where p = q. Not an f-divergence: on a coarsening its head is the coarse outcomes' (the tail is one outcome).

    Sampled / hybrid targets: refused (reverse KL, weights not linear in p). topk_renorm: refused (reverse KL is
    infinite there).
    """
    with torch.no_grad():
        p, q = log_p.exp(), log_q.exp()
        gap = (p - q).abs()
        sorted_p, order = p.sort(dim=-1, descending=True, stable=True)
        head_sorted = sorted_p.cumsum(-1) <= head_mass
        head_sorted[..., 0] = True
        head = torch.zeros_like(head_sorted).scatter(-1, order, head_sorted)
        g_head, total = (gap * head).sum(-1), gap.sum(-1)
        w_head = torch.where(total > 0, g_head / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)
    return w_head * kl(log_p, log_q) + (1 - w_head) * kl(log_q, log_p)


@dataclass(frozen=True)
class Divergence:
    """A divergence chosen by name with its settings: `DistillConfig.divergence`, `jsd_beta`, `skew`.

    Called as `divergence(log_p, log_q)` on (..., n) log-distributions over the same outcomes, returns (...) nats.
    `fused` False makes the chunked loss take the generic autograd path even for forward KL (tests check the shared
    chain rule against the hand-fused gradient that way).
    """

    name: str = "forward_kl"
    jsd_beta: float = 0.5
    skew: float = 0.1
    fused: bool = True

    def __post_init__(self):
        if self.name not in DIVERGENCES:
            raise ValueError(f"unknown divergence {self.name!r}; use one of {', '.join(DIVERGENCES)}")
        for setting in ("jsd_beta", "skew"):
            if not 0.0 <= getattr(self, setting) <= 1.0:
                raise ValueError(f"{setting} must be in [0, 1], got {getattr(self, setting)}")

    @classmethod
    def from_config(cls, distill) -> Divergence:
        """The divergence a `DistillConfig` asks for."""
        return cls(distill.divergence, jsd_beta=distill.jsd_beta, skew=distill.skew)

    @property
    def registered(self) -> Registered:
        return DIVERGENCES[self.name]

    @property
    def uses_fused_path(self) -> bool:
        """Whether the losses take the divergence's hand-fused path (forward KL's) instead of the generic one."""
        return self.fused and self.registered.fused

    def __call__(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        reg = self.registered
        return reg.fn(log_p, log_q, **{s: getattr(self, s) for s in reg.settings})


FORWARD_KL = Divergence()
"""The default: forward KL, today's (and the paper's) KD term."""
