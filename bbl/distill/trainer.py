"""The distillation Trainer: the train room's Trainer whose `compute_loss` adds the KD term to the CE,
L = alpha*CE + (1-alpha)*T^2*KD (Baby Llama, Section 3.2), from the cache's targets or resident teachers, and logs
ce_loss / kd_loss beside the loss. KD is `distill.divergence` (forward KL by default) between the teacher's and the
student's distributions (`bbl.losses.divergences`); cached targets are read as `distill.kd_variant`'s registered
`KDReading` says (`bbl.losses.readings`). In a masked-LM phase of `training.objective_schedule` there is no
KD term: the cache holds causal next-token targets, and resident teachers are not run.

From several caches (`CacheTerm`s, e.g. teachers of two tokenizers), L = alpha*CE + (1-alpha) * sum_c w_c * T_c^2 *
KD_c, each KD_c read through its own cache's reading, logged as kd_loss_<c> beside kd_loss = sum_c w_c * KD_c.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from bbl.config import PAPER_TEMPERATURE, DistillConfig
from bbl.losses.chunked import IGNORE_INDEX, KDTargets, chunked_head_loss, shift_labels
from bbl.losses.divergences import Divergence
from bbl.losses.kd import distillation_loss, full_divergence, reduce_kd
from bbl.losses.readings import READINGS, KDContext, KDReading, get_reading
from bbl.models.ensemble import ensemble_logits
from bbl.train.trainer import WindowTrainer


@dataclass(frozen=True)
class CacheTerm:
    """One cache's KD term in a run that distils from several: the w_c * T_c^2 * KD_c of L = alpha*CE + (1-alpha) *
    sum_c w_c * T_c^2 * KD_c.

    Attributes:
        prefix: the batch-key prefix of its targets (`bbl.cache.dataset.cache_prefix`).
        distill: the settings it is read with (`DistillConfig.for_cache`: kd_variant, reduction, divergence, ...).
        weight: w_c >= 0 (the run's weights sum to 1). temperature: T_c > 0 (`kd_temperature` of its cache).
        cache_temperature: its cache's T (to re-temper, where the reading may).
        reading_extras: what its reading's `prepare` made from its cache (`KDContext.extras`).
    """

    prefix: str
    distill: DistillConfig
    weight: float
    temperature: float
    cache_temperature: float
    reading_extras: dict = field(default_factory=dict)

    @property
    def reading(self) -> KDReading:
        return get_reading(self.distill.kd_variant)


class DistillTrainer(WindowTrainer):
    """`WindowTrainer` whose `compute_loss` adds the KD term (cached or online) and logs ce_loss / kd_loss.

    Args (beyond `LossTrainer`'s and the `Trainer`'s):
        distill: the run's `DistillConfig` (alpha, kd_variant, reduction, divergence and its settings, mlm_kd).
        temperature: T > 0 of the KD term (the cache's unless the config sets another).
        cache_temperature: the cache's T, to re-temper its log-probs when `temperature` differs; None online.
        teachers: resident teacher models (online distillation); empty for cached distillation.
        reading_extras: what the reading's `prepare` made from the cache (`KDContext.extras`; e.g. GOLD's student
            twins and weights); its tensors are moved to the device once.
        caches: the `CacheTerm`s of a run from several caches (a `bbl.cache.dataset.MultiCacheDataset`'s batches);
            then `distill` gives alpha only, and temperature, cache_temperature and reading_extras are unused.
    """

    def __init__(self, *args, distill: DistillConfig, temperature: float = PAPER_TEMPERATURE,
                 cache_temperature: float | None = None, teachers: Sequence[torch.nn.Module] = (),
                 reading_extras: dict | None = None, caches: Sequence[CacheTerm] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = False  # both paths return a per-micro-batch mean
        self.distill, self.temperature, self.cache_temperature = distill, temperature, cache_temperature
        self.reading_extras = _on_device(reading_extras, self.args.device)
        self.teachers = [t.to(self.args.device).eval() for t in teachers or []]
        self.caches = [CacheTerm(t.prefix, t.distill, t.weight, t.temperature, t.cache_temperature,
                                 _on_device(t.reading_extras, self.args.device)) for t in caches]
        self._parts: dict[str, list[float]] = {"ce_loss": [], "kd_loss": [],
                                               **{f"kd_loss_{c}": [] for c in range(len(self.caches))}}

    @property
    def divergence(self) -> Divergence:
        """The KD term's divergence, as `distill` says (read at each use: tests swap `distill`)."""
        return Divergence.from_config(self.distill)

    @property
    def reading(self) -> KDReading:
        """The KD reading of the cached targets (`distill.kd_variant`, read at each use: tests swap `distill`)."""
        return get_reading(self.distill.kd_variant)

    def kd_context(self) -> KDContext:
        """The run's loss settings as the reading takes them."""
        return KDContext(alpha=self.distill.alpha, temperature=self.temperature,
                         cache_temperature=self.cache_temperature, reduction=self.distill.reduction,
                         divergence=self.divergence, chunk_rows=self.loss_chunk_rows, extras=self.reading_extras)

    def _online_targets(self, input_ids) -> KDTargets:
        """The resident teachers' logit mean (the student's vocabulary: a padded teacher's extra outputs dropped)."""
        with torch.no_grad():
            logits = ensemble_logits(self.teachers, input_ids, vocab_size=self.model.config.vocab_size)
        return KDTargets("full", teacher_logits=logits)

    def cache_context(self, term: CacheTerm, alpha: float) -> KDContext:
        """Cache `term`'s loss settings as its reading takes them, with the CE weighted by `alpha`."""
        d = term.distill
        return KDContext(alpha=alpha, temperature=term.temperature, cache_temperature=term.cache_temperature,
                         reduction=d.reduction, divergence=Divergence.from_config(d), chunk_rows=self.loss_chunk_rows,
                         extras=term.reading_extras)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        keys = {k for r in READINGS.values() for k in r.target_keys}  # every reading's batch keys
        keys |= {t.prefix + k for t in self.caches for k in t.reading.target_keys}  # each cache's, several
        targets = {k: inputs.pop(k) for k in list(inputs) if k in keys}
        if self.pop_mlm(inputs):  # an mlm phase: KD only with distill.mlm_kd
            if targets and model.training:
                return self.masked_kd_loss(model, inputs, targets, return_outputs)
            return self.masked_lm_loss(model, inputs, return_outputs, num_items_in_batch)
        return self.causal_loss(model, inputs, targets, return_outputs)

    def masked_kd_loss(self, model, inputs, targets, return_outputs=False):
        """`distill.mlm_kd`: at the positions p that predict a masked token p+1 (bidirectional forward), the
        masked CE plus the KD to the cache's row p (the teacher's next-token distribution there), both a mean
        over those positions: L = alpha*CE + (1-alpha)*T^2*KD."""
        outputs, hidden, weight = self.student_hidden(model, inputs["input_ids"], bidirectional=True)
        predicted = shift_labels(inputs["labels"])  # (B, S): the masked token position p predicts, or -100
        rows = predicted != IGNORE_INDEX
        kd = self.reading.coarse_targets(targets, self.kd_context())
        picked = KDTargets(kd.kind, topk_ids=kd.topk_ids[rows][None], topk_logprobs=kd.topk_logprobs[rows][None],
                           tail_logprob=kd.tail_logprob[rows][None])
        loss, ce, kd_value = chunked_head_loss(
            hidden[rows][None], weight, predicted[rows][None], kd=picked, alpha=self.distill.alpha,
            temperature=self.temperature, reduction="token_mean", chunk_rows=self.loss_chunk_rows, shift=False,
            divergence=self.divergence)
        self._parts["ce_loss"].append(float(ce))
        self._parts["kd_loss"].append(float(kd_value))
        return (loss, outputs) if return_outputs else loss

    def causal_loss(self, model, inputs, targets, return_outputs=False):
        """The CE plus KD of a clm batch: cached targets through the run's `KDReading` (chunked, or on the full
        logits with `loss_impl: hf`, the reference), or the resident teachers' full-vocabulary divergence."""
        distilling = model.training and (targets or self.teachers)
        if distilling and self.caches:
            return self.caches_loss(model, inputs, targets, return_outputs)
        if self.loss_impl == "chunked":
            outputs, hidden, weight = self.student_hidden(model, inputs["input_ids"])
            if distilling and not self.teachers:
                loss, ce, kd_value = self.reading.chunked_loss(hidden, weight, inputs["labels"], targets,
                                                               self.kd_context())
            else:
                kd = self._online_targets(inputs["input_ids"]) if distilling else None
                loss, ce, kd_value = chunked_head_loss(
                    hidden, weight, inputs["labels"], kd=kd, alpha=self.distill.alpha, temperature=self.temperature,
                    reduction=self.distill.reduction, chunk_rows=self.loss_chunk_rows, divergence=self.divergence)
        else:  # the reference: the model's (B, S, V) logits and the unfused losses
            outputs = model(input_ids=inputs["input_ids"], labels=inputs["labels"])
            loss = ce = outputs.loss
            if distilling:
                if self.teachers:
                    kl = full_divergence(outputs.logits, self._online_targets(inputs["input_ids"]).teacher_logits,
                                         self.temperature, self.divergence)
                    kd_value = reduce_kd(kl, self.distill.reduction)
                    loss = distillation_loss(ce, kd_value, alpha=self.distill.alpha, temperature=self.temperature)
                else:  # the reading says how CE and KD combine (alpha*CE + (1-alpha)*T^2*KD unless its own)
                    ctx = self.kd_context()
                    kd_value = self.reading.logits_kd(outputs.logits, targets, ctx)
                    ce_weight, kd_weight = self.reading.loss_weights(ctx)
                    loss = ce_weight * ce + kd_weight * kd_value
        if distilling:
            self._parts["ce_loss"].append(float(ce.detach()))
            self._parts["kd_loss"].append(float(kd_value.detach()))
        return (loss, outputs) if return_outputs else loss

    def caches_loss(self, model, inputs, targets, return_outputs=False):
        """L = alpha*CE + (1-alpha) * sum_c w_c * T_c^2 * KD_c of a clm batch from several caches, each KD_c through
        its cache's reading (`CacheTerm`).

        Chunked: each reading's `chunked_loss` on the same hidden states, weighted so that their sum is L: cache 0's
        with CE weight alpha_0 = alpha / s_0, scaled by s_0 = alpha + (1-alpha) w_0 (so it carries alpha*CE and
        (1-alpha) w_0 T_0^2 KD_0), every other cache's with CE weight 0, scaled by (1-alpha) w_c. Values and
        gradients are then exactly L's (each chunked loss's gradient is its own value's); the CE gradient is formed
        once, and the LM head is projected once per cache. A term of weight 0 is computed without gradients, for
        its log only. `loss_impl: hf` sums the readings' `logits_kd` on the model's full logits (the reference).
        """
        labels, alpha = inputs["labels"], self.distill.alpha
        split = [{k[len(t.prefix):]: v for k, v in targets.items() if k.startswith(t.prefix)} for t in self.caches]
        kds = []
        if self.loss_impl == "chunked":
            outputs, hidden, weight = self.student_hidden(model, inputs["input_ids"])
            loss = ce = None
            for c, (term, tg) in enumerate(zip(self.caches, split, strict=True)):
                scale = (1 - alpha) * term.weight + (alpha if c == 0 else 0.0)
                ctx = self.cache_context(term, alpha / scale if c == 0 and scale > 0 else 0.0)
                if scale > 0:
                    value, ce_c, kd_c = term.reading.chunked_loss(hidden, weight, labels, tg, ctx)
                    loss = scale * value if loss is None else loss + scale * value
                else:
                    with torch.no_grad():
                        _, ce_c, kd_c = term.reading.chunked_loss(hidden, weight, labels, tg, ctx)
                ce = ce_c if c == 0 else ce
                kds.append(kd_c)
        else:  # the reference: the model's (B, S, V) logits and the unfused losses
            outputs = model(input_ids=inputs["input_ids"], labels=labels)
            ce = outputs.loss
            kds = [t.reading.logits_kd(outputs.logits, tg, self.cache_context(t, alpha))
                   for t, tg in zip(self.caches, split, strict=True)]
            loss = alpha * ce + (1 - alpha) * sum(t.weight * t.temperature ** 2 * kd
                                                  for t, kd in zip(self.caches, kds, strict=True))
        kds = [float(kd.detach()) for kd in kds]
        self._parts["ce_loss"].append(float(ce.detach()))
        self._parts["kd_loss"].append(sum(t.weight * kd for t, kd in zip(self.caches, kds, strict=True)))
        for c, kd in enumerate(kds):
            self._parts[f"kd_loss_{c}"].append(kd)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, start_time=None):
        if "loss" in logs and self._parts["ce_loss"]:
            for k, v in self._parts.items():
                logs[k] = sum(v) / len(v)
                v.clear()
        super().log(logs, start_time)


def _on_device(extras: dict | None, device) -> dict:
    """A reading's extras with its tensors moved to `device` (once, when the trainer is built)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in (extras or {}).items()}
