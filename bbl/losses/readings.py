"""How distillation reads a batch of cached targets (`distill.kd_variant`), registered by name: each `KDReading` is
the KD term's two forms (chunked from the last hidden states, and on full logits for `training.loss_impl: hf`),
which divergences it can carry, and what it needs once from the cache's static arrays. The trainer and the recipe
look a reading up (`get_reading`) instead of branching on its name; a third-party reading registers the same way
(`register_reading`). Which readings a cache kind admits is the kind's (`bbl.cache.kinds.base.CacheKind`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bbl.errors import BblError
from bbl.losses.alm import TARGET_KEYS as ALM_TARGET_KEYS
from bbl.losses.alm import ALMSettings, alm_head_loss, alm_loss
from bbl.losses.chunked import KDTargets, chunked_head_loss
from bbl.losses.cross_tokenizer import (
    cross_tokenizer_head_loss,
    cross_tokenizer_kd,
    gold_weights,
    reduce_aligned,
    student_twin_mask,
)
from bbl.losses.divergences import DIVERGENCES, Divergence
from bbl.losses.kd import hybrid_targets, reduce_kd, retemper, sampled_targets, topk_divergence


@dataclass
class KDContext:
    """What a reading needs besides the batch: the run's loss settings and what its `prepare` made.

    Attributes:
        alpha: weight of the hard-label CE (the paper's alpha). temperature: T of the KD term.
        cache_temperature: the cache's T (to re-temper stored log-probs where the reading may); None online.
        reduction: `distill.reduction`. divergence: `distill.divergence`. chunk_rows: rows per chunk of the
        chunked loss (None: its default). extras: what `KDReading.prepare` returned (tensors on the device).
    """

    alpha: float
    temperature: float
    cache_temperature: float | None = None
    reduction: str = "token_mean"
    divergence: Divergence = field(default_factory=Divergence)
    chunk_rows: int | None = None
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class KDReading:
    """One way of reading cached targets into the KD term (`distill.kd_variant`).

    Attributes:
        name: the `distill.kd_variant` value.
        chunked_loss: (hidden (B, S, H), weight (V, H), labels (B, S), targets {name: (B, S, ...) tensor}, ctx) ->
            (loss, ce, kd) fp32 scalars, L = alpha*CE + (1-alpha)*T^2*KD, without the (B, S, V) logits.
        logits_kd: (logits (B, S, V), targets, ctx) -> the reduced KD scalar (the reference path, loss_impl hf).
        target_keys: the batch keys it reads (`CacheKind.training_item` provides them).
        coarse_targets: (targets, ctx) -> `KDTargets` where the reading is a (k+1)-outcome coarsening (the fused
            path, `distill.mlm_kd`); None for a reading with a loss of its own.
        divergence_support: which `distill.divergence`s it carries: "any" (every registered one), an attribute of
            `bbl.losses.divergences.Registered` ("from_draws", "zero_teacher_mass") whose value is a divergence's
            refusal reason, or "forward_kl" (its own loss: the divergence setting has no meaning for it).
        prepare: (the cache's static arrays, `DistillConfig`, student vocab_size) -> (extras for `KDContext`,
            provenance for the run's ledger), run once before training; None: nothing to prepare.
        weights: ctx -> (w_ce, w_kd) of L = w_ce*CE + w_kd*KD (the full-logits path combines its CE and KD so; the
            chunked loss uses the same); None: the paper's (alpha, (1-alpha)*T^2) (`loss_weights`).
        check_cache: (the cache's attributes, `DistillConfig`) -> why this reading cannot train on that cache with
            the fix, or None; asked before anything is loaded (`cache_problem`). None: every cache of the kinds
            that admit it.
    """

    name: str
    chunked_loss: Callable
    logits_kd: Callable
    target_keys: tuple[str, ...]
    coarse_targets: Callable | None = None
    divergence_support: str = "any"
    prepare: Callable | None = None
    weights: Callable | None = None
    check_cache: Callable | None = None

    def loss_weights(self, ctx: KDContext) -> tuple[float, float]:
        """(w_ce, w_kd) of L = w_ce*CE + w_kd*KD: the reading's own, else alpha*CE + (1-alpha)*T^2*KD (Baby Llama,
        Section 3.2; `bbl.losses.kd.distillation_loss`)."""
        if self.weights is not None:
            return self.weights(ctx)
        return ctx.alpha, (1.0 - ctx.alpha) * ctx.temperature ** 2

    def cache_problem(self, attrs: dict, distill) -> str | None:
        """Why this reading cannot train on a cache of these attributes with `distill`'s settings, with the fix;
        None if it can."""
        return None if self.check_cache is None else self.check_cache(attrs, distill)

    def divergence_problem(self, divergence: str) -> str | None:
        """Why `distill.divergence=divergence` cannot be trained through this reading, with the fix; None if it can."""
        if self.divergence_support == "any":
            return None
        if self.divergence_support == "forward_kl":
            if divergence == "forward_kl":
                return None
            return (f"distill.divergence={divergence} has no form for kd_variant={self.name}, which is its own loss; "
                    f"drop distill.divergence")
        reason = getattr(DIVERGENCES[divergence], self.divergence_support)
        if reason is None:
            return None
        return f"distill.divergence={divergence} cannot train on {self.name} targets: {reason}; {_FIXES[self.divergence_support]}"


_FIXES = {"from_draws": "set distill.divergence=forward_kl, or read a top-k cache (`dump-logits --targets topk`, or "
                        "distill.kd_variant=topk_tail on a hybrid cache)",
          "zero_teacher_mass": "set distill.kd_variant=topk_tail (the tail-aware reading) or another divergence"}

READINGS: dict[str, KDReading] = {}


def register_reading(reading: KDReading, *, replace: bool = False) -> KDReading:
    """Make `reading` the meaning of `distill.kd_variant=reading.name`.

    Raises:
        ValueError: a reading of that name is registered already (unless `replace`).
    """
    if reading.name in READINGS and not replace:
        raise ValueError(f"KD reading {reading.name!r} is registered already; pass replace=True to replace it")
    READINGS[reading.name] = reading
    return reading


def get_reading(name: str) -> KDReading:
    """The reading called `name`. Raises `BblError` (one line naming distill.kd_variant and the known names)."""
    if name not in READINGS:
        raise BblError(f"distill.kd_variant={name}: not a KD reading; use one of {', '.join(READINGS)}")
    return READINGS[name]


def reading_problem(divergence: str, kd_variant: str | None) -> str | None:
    """Why `distill.divergence=divergence` cannot be trained on cache rows read as `kd_variant`, with the fix; None
    if it can (online distillation, `kd_variant` None, takes every divergence). Top-k targets read tail-aware
    (topk_tail) support every divergence; sampled and hybrid targets only those with a sound estimator from draws
    (forward KL); topk_renorm, whose teacher gives the tail outcome zero mass, those that stay finite there (all but
    reverse_kl and akl); a reading that is its own loss (exact_match, uld, gold, alm) only forward_kl."""
    return None if kd_variant is None else get_reading(kd_variant).divergence_problem(divergence)


# --- the (k+1)-outcome readings of the ensemble's own-vocabulary caches (topk, sampled, hybrid)

def _coarse(name: str):
    """`KDTargets` of a batch read as `name`: sampled / hybrid as their exact topk_tail forms (`sampled_targets`,
    `hybrid_targets`: nothing lumped), topk_* re-tempered from the cache's T where the run asks another; with a
    `--kd-fraction` cache, a position left out holds no mass, so its KL and gradient are 0."""
    def targets_of(targets: dict, ctx: KDContext) -> KDTargets:
        ids = targets.get("topk_ids")
        kind = name
        if name in ("sampled", "hybrid"):
            ids, top, tail = (sampled_targets(targets["sample_ids"]) if name == "sampled" else
                              hybrid_targets(targets["topk_ids"], targets["topk_logprobs"], targets["tail_logprob"],
                                             targets["sample_ids"]))
            kind = "topk_tail"
        else:
            top, tail = targets["topk_logprobs"], targets["tail_logprob"]
            if ctx.cache_temperature is not None and abs(ctx.cache_temperature - ctx.temperature) > 1e-9:
                top, tail = retemper(top, tail, from_temperature=ctx.cache_temperature, to_temperature=ctx.temperature)
        if "kd_mask" in targets:
            keep = targets["kd_mask"].bool()
            top = top.float().masked_fill(~keep.unsqueeze(-1), float("-inf"))
            tail = tail.float().masked_fill(~keep, float("-inf"))
        return KDTargets(kind, topk_ids=ids, topk_logprobs=top, tail_logprob=tail)
    return targets_of


def _coarse_reading(name: str, keys: tuple[str, ...], support: str) -> KDReading:
    targets_of = _coarse(name)

    def chunked_loss(hidden, weight, labels, targets, ctx: KDContext):
        return chunked_head_loss(hidden, weight, labels, kd=targets_of(targets, ctx), alpha=ctx.alpha,
                                 temperature=ctx.temperature, reduction=ctx.reduction, chunk_rows=ctx.chunk_rows,
                                 divergence=ctx.divergence)

    def logits_kd(logits, targets, ctx: KDContext):
        kd = targets_of(targets, ctx)
        kl = topk_divergence(logits, kd.topk_ids, kd.topk_logprobs, kd.tail_logprob, ctx.temperature, ctx.divergence,
                             renorm=kd.kind == "topk_renorm")
        return reduce_kd(kl, ctx.reduction)

    return KDReading(name, chunked_loss, logits_kd, keys, coarse_targets=targets_of, divergence_support=support)


_TOPK_KEYS = ("topk_ids", "topk_logprobs", "tail_logprob", "kd_mask")
for _reading in (_coarse_reading("topk_tail", _TOPK_KEYS, "any"),
                 _coarse_reading("topk_renorm", _TOPK_KEYS, "zero_teacher_mass"),
                 _coarse_reading("sampled", ("sample_ids", "kd_mask"), "from_draws"),
                 _coarse_reading("hybrid", (*_TOPK_KEYS, "sample_ids"), "from_draws")):
    register_reading(_reading)


# --- the readings of a cross-tokenizer cache (`bbl.losses.cross_tokenizer`)

_CROSS_KEYS = ("aligned", "topk_ids", "topk_logprobs", "tail_logprob", "uld_topk_logprobs", "uld_tail_logprob",
               "uld_matched")


def _cross_reading(name: str, prepare=None) -> KDReading:
    def chunked_loss(hidden, weight, labels, targets, ctx: KDContext):
        return cross_tokenizer_head_loss(hidden, weight, labels, targets, variant=name, alpha=ctx.alpha,
                                         temperature=ctx.temperature, reduction=ctx.reduction,
                                         chunk_rows=ctx.chunk_rows, **ctx.extras)

    def logits_kd(logits, targets, ctx: KDContext):
        kd_rows = cross_tokenizer_kd(name, ctx.temperature, **ctx.extras)
        return reduce_aligned(kd_rows(logits, targets), targets["aligned"], ctx.reduction)

    return KDReading(name, chunked_loss, logits_kd, _CROSS_KEYS, divergence_support="forward_kl", prepare=prepare)


def _prepare_gold(static: dict, distill, vocab_size: int) -> tuple[dict, dict]:
    """GOLD's unmatched part needs the student ids that have a teacher twin, and its (w_m, w_u) weights."""
    twins = static["teacher_to_student"]
    w_m, w_u = gold_weights(float((twins >= 0).mean()), distill.gold_matched_weight, distill.gold_unmatched_weight)
    extras = {"student_twins": torch.from_numpy(student_twin_mask(twins, vocab_size)), "gold_weights": (w_m, w_u)}
    return extras, {"gold_matched_weight": w_m, "gold_unmatched_weight": w_u}


def _prepare_uld(static: dict, distill, vocab_size: int) -> tuple[dict, dict]:
    """ULD's form and weight (`distill.uld_form`, `distill.uld_weight`), the run's to record."""
    return ({"uld_form": distill.uld_form, "uld_weight": distill.uld_weight},
            {"uld_form": distill.uld_form, "uld_weight": distill.uld_weight})


def _uld_settings(ctx: KDContext) -> tuple[float, tuple[float, float]]:
    """(temperature of both sides, (w_ce, w_kd)) of ULD in the run's `distill.uld_form`: boizard = Boizard et al.'s
    code (Nicolas-BZRD/llm-recipes, configs/distillation.py:15-18 and train/train_utils.py:52: T = 1 on both sides,
    cross-entropy weight 1, `distil_factor` lambda); tempered = bbl's earlier form (the cache's T on both sides,
    alpha*CE + (1-alpha)*T^2*ULD)."""
    if "uld_form" not in ctx.extras:
        raise ValueError("kd_variant uld needs its settings in KDContext.extras (its KDReading.prepare)")
    if ctx.extras["uld_form"] == "boizard":
        return 1.0, (1.0, ctx.extras["uld_weight"])
    return ctx.temperature, (ctx.alpha, (1.0 - ctx.alpha) * ctx.temperature ** 2)


def _uld_cache_problem(attrs: dict, distill) -> str | None:
    """Boizard et al.'s ULD compares the T = 1 distributions: a cache of other targets cannot give the teacher's."""
    temperature = float(attrs.get("temperature", 1.0))
    if distill.uld_form == "boizard" and abs(temperature - 1.0) > 1e-9:
        return (f"distill.kd_variant=uld compares the T = 1 distributions (Boizard et al., distill.uld_form=boizard), "
                f"but the cache holds targets at temperature {temperature:g}; dump with --temperature 1, or set "
                f"distill.uld_form=tempered (ULD at the cache's T, alpha*CE + (1-alpha)*T^2*ULD)")
    return None


def _uld_reading() -> KDReading:
    def chunked_loss(hidden, weight, labels, targets, ctx: KDContext):
        temperature, weights = _uld_settings(ctx)
        return cross_tokenizer_head_loss(hidden, weight, labels, targets, variant="uld", alpha=ctx.alpha,
                                         temperature=temperature, reduction=ctx.reduction, chunk_rows=ctx.chunk_rows,
                                         weights=weights)

    def logits_kd(logits, targets, ctx: KDContext):
        temperature, _ = _uld_settings(ctx)
        return reduce_aligned(cross_tokenizer_kd("uld", temperature)(logits, targets), targets["aligned"],
                              ctx.reduction)

    return KDReading("uld", chunked_loss, logits_kd, _CROSS_KEYS, divergence_support="forward_kl",
                     prepare=_prepare_uld, weights=lambda ctx: _uld_settings(ctx)[1], check_cache=_uld_cache_problem)


for _reading in (_cross_reading("exact_match"), _uld_reading(), _cross_reading("gold", _prepare_gold)):
    register_reading(_reading)


# --- ALM over a cross-tokenizer cache with ALM's arrays (`bbl.losses.alm`)

def _prepare_alm(static: dict, distill, vocab_size: int) -> tuple[dict, dict]:
    """ALM's settings (`ALMSettings`) and the student's boundary ids (the cache's `student_boundary`)."""
    boundary = static["student_boundary"].astype(bool)
    if boundary.shape != (vocab_size,) or not boundary.any():
        raise BblError(f"the cache's student_boundary has {int(boundary.sum())} of {boundary.shape[0]} ids set, for a "
                       f"student of {vocab_size} ids; ALM's debiasing needs the student's boundary ids: re-dump the "
                       f"cache with this prepared dir")
    settings = ALMSettings.from_config(distill)
    return ({"alm": settings, "student_boundary": torch.from_numpy(boundary)},
            {"alm_temperature": settings.temperature, "alm_gamma": settings.gamma, "alm_debias": settings.debias,
             "alm_weighting": distill.alm_weighting})


def _alm_cache_problem(attrs: dict, distill) -> str | None:
    """A cross-tokenizer cache dumped before ALM's arrays existed cannot give ALM's teacher side."""
    if not attrs.get("alm_targets"):
        return ("distill.kd_variant=alm needs the teacher's token log-probs and boundary masses, which this "
                "cross-tokenizer cache (dumped before they were stored) lacks; re-dump it with `bbl dump-logits "
                "--cross-tokenizer`")
    return None


def _alm_reading() -> KDReading:
    def chunked_loss(hidden, weight, labels, targets, ctx: KDContext):
        w_ce, w_kd = _alm_weights(ctx)
        return alm_head_loss(hidden, weight, labels, targets, boundary=ctx.extras["student_boundary"],
                             settings=ctx.extras["alm"], ce_weight=w_ce, kd_weight=w_kd, reduction=ctx.reduction,
                             chunk_rows=ctx.chunk_rows)

    def logits_kd(logits, targets, ctx: KDContext):
        return alm_loss(logits, targets, ctx.extras["student_boundary"], ctx.extras["alm"], ctx.reduction).float()

    return KDReading("alm", chunked_loss, logits_kd, ALM_TARGET_KEYS, divergence_support="forward_kl",
                     prepare=_prepare_alm, weights=_alm_weights, check_cache=_alm_cache_problem)


def _alm_weights(ctx: KDContext) -> tuple[float, float]:
    """alpha*CE + (1-alpha)*ALM: no T^2. The T^2 of Hinton et al. offsets the 1/T^2 a softmax temperature puts on
    KD's gradients; ALM's token distributions are at T = 1 and its tau divides log-likelihoods, not logits, so
    the dump's temperature has no place in it (docs/cache-format.md, "ALM")."""
    return ctx.alpha, 1.0 - ctx.alpha


register_reading(_alm_reading())
