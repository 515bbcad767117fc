"""The distillation Trainer: the train room's Trainer whose `compute_loss` adds the KD term to the CE,
L = alpha*CE + (1-alpha)*T^2*KD (Baby Llama, Section 3.2), from the cache's targets or resident teachers, and logs
ce_loss / kd_loss beside the loss. KD is `distill.divergence` (forward KL by default) between the teacher's and the
student's distributions (`bbl.losses.divergences`). In a masked-LM phase of `training.objective_schedule` there is no
KD term: the cache holds causal next-token targets, and resident teachers are not run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bbl.config import PAPER_TEMPERATURE, DistillConfig
from bbl.losses.chunked import IGNORE_INDEX, KDTargets, chunked_head_loss, shift_labels
from bbl.losses.cross_tokenizer import cross_tokenizer_head_loss, cross_tokenizer_kd, reduce_aligned
from bbl.losses.divergences import Divergence
from bbl.losses.kd import (
    distillation_loss,
    full_divergence,
    hybrid_targets,
    reduce_kd,
    retemper,
    sampled_targets,
    topk_divergence,
)
from bbl.models.ensemble import ensemble_logits
from bbl.train.trainer import WindowTrainer


class DistillTrainer(WindowTrainer):
    """`WindowTrainer` whose `compute_loss` adds the KD term (cached or online) and logs ce_loss / kd_loss.

    Args (beyond `LossTrainer`'s and the `Trainer`'s):
        distill: the run's `DistillConfig` (alpha, kd_variant, reduction, divergence and its settings, mlm_kd).
        temperature: T > 0 of the KD term (the cache's unless the config sets another).
        cache_temperature: the cache's T, to re-temper its log-probs when `temperature` differs; None online.
        teachers: resident teacher models (online distillation); empty for cached distillation.
        student_twins: `kd_variant: gold`: (V,) bool numpy array, the student ids with a teacher twin
            (`bbl.cache.kinds.cross_tokenizer.student_twin_mask`).
        gold_weights: `kd_variant: gold`: (w_m, w_u) (`bbl.losses.cross_tokenizer.gold_weights`).
    """

    def __init__(self, *args, distill: DistillConfig, temperature: float = PAPER_TEMPERATURE,
                 cache_temperature: float | None = None, teachers: Sequence[torch.nn.Module] = (),
                 student_twins=None, gold_weights: tuple[float, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = False  # both paths return a per-micro-batch mean
        self.distill, self.temperature, self.cache_temperature = distill, temperature, cache_temperature
        self.student_twins = (None if student_twins is None else  # on the device once, not at every step
                              torch.as_tensor(student_twins, dtype=torch.bool).to(self.args.device))
        self.gold_weights = gold_weights
        self.teachers = [t.to(self.args.device).eval() for t in teachers or []]
        self._parts: dict[str, list[float]] = {"ce_loss": [], "kd_loss": []}

    @property
    def divergence(self) -> Divergence:
        """The KD term's divergence, as `distill` says (read at each use: tests swap `distill`)."""
        return Divergence.from_config(self.distill)

    def _teacher_targets(self, input_ids, targets):
        """The KD targets at the training temperature: the teachers' logit mean, or the (re-tempered) cache; with a
        `--kd-fraction` cache, a position left out holds no mass, so its KL and gradient are 0 (forward KL only:
        `check_distill_inputs` refuses the other divergences on such a cache)."""
        if self.teachers:
            with torch.no_grad():
                # the student's vocabulary is the tokenizer's: a padded teacher's extra outputs are dropped
                logits = ensemble_logits(self.teachers, input_ids, vocab_size=self.model.config.vocab_size)
            return KDTargets("full", teacher_logits=logits)
        variant = self.distill.kd_variant
        ids = targets.get("topk_ids")
        if variant in ("sampled", "hybrid"):  # exact-target forms of topk_tail (bbl.losses.sampled_kl, hybrid_kl)
            ids, top, tail = (sampled_targets(targets["sample_ids"]) if variant == "sampled" else
                              hybrid_targets(targets["topk_ids"], targets["topk_logprobs"],
                                             targets["tail_logprob"], targets["sample_ids"]))
            variant = "topk_tail"
        else:
            top, tail = targets["topk_logprobs"], targets["tail_logprob"]
            if self.cache_temperature is not None and abs(self.cache_temperature - self.temperature) > 1e-9:
                top, tail = retemper(top, tail, from_temperature=self.cache_temperature,
                                     to_temperature=self.temperature)
        if "kd_mask" in targets:  # --kd-fraction: a position left out holds no mass, so its KL and gradient are 0
            keep = targets["kd_mask"].bool()
            top = top.float().masked_fill(~keep.unsqueeze(-1), float("-inf"))
            tail = tail.float().masked_fill(~keep, float("-inf"))
        return KDTargets(variant, topk_ids=ids, topk_logprobs=top, tail_logprob=tail)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = {k: inputs.pop(k) for k in ("topk_ids", "topk_logprobs", "tail_logprob", "sample_ids", "kd_mask",
                                              "aligned", "uld_topk_logprobs", "uld_tail_logprob", "uld_matched") if k in inputs}
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
        kd = self._teacher_targets(inputs["input_ids"], targets)
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
        """The CE plus KD of a clm batch (cached targets or resident teachers)."""
        distilling = model.training and (targets or self.teachers)
        if distilling and "aligned" in targets:  # a cross-tokenizer cache
            return self.cross_tokenizer_loss(model, inputs, targets, return_outputs)
        if self.loss_impl == "chunked":
            outputs, hidden, weight = self.student_hidden(model, inputs["input_ids"])
            kd = self._teacher_targets(inputs["input_ids"], targets) if distilling else None
            loss, ce, kd_value = chunked_head_loss(
                hidden, weight, inputs["labels"], kd=kd, alpha=self.distill.alpha, temperature=self.temperature,
                reduction=self.distill.reduction, chunk_rows=self.loss_chunk_rows, divergence=self.divergence)
        else:  # the reference: the model's (B, S, V) logits and the unfused losses
            outputs = model(input_ids=inputs["input_ids"], labels=inputs["labels"])
            loss = ce = outputs.loss
            if distilling:
                kd = self._teacher_targets(inputs["input_ids"], targets)
                if kd.kind == "full":
                    kl = full_divergence(outputs.logits, kd.teacher_logits, self.temperature, self.divergence)
                else:  # sampled / hybrid arrive as topk_tail targets (sampled_kl / hybrid_kl's own reduction)
                    kl = topk_divergence(outputs.logits, kd.topk_ids, kd.topk_logprobs, kd.tail_logprob,
                                         self.temperature, self.divergence, renorm=kd.kind == "topk_renorm")
                kd_value = reduce_kd(kl, self.distill.reduction)
                loss = distillation_loss(ce, kd_value, alpha=self.distill.alpha, temperature=self.temperature)
        if distilling:
            self._parts["ce_loss"].append(float(ce.detach()))
            self._parts["kd_loss"].append(float(kd_value.detach()))
        return (loss, outputs) if return_outputs else loss

    def cross_tokenizer_loss(self, model, inputs, targets, return_outputs=False):
        """CE plus exact-match KL, ULD or GOLD (`distill.kd_variant`) at the aligned positions: chunked from the last
        hidden states (`cross_tokenizer_head_loss`), or on the model's full logits with `loss_impl: hf` (the reference);
        `distill.divergence` other than forward KL is refused for them by `check_distill_inputs`."""
        variant, twins, weights = self.distill.kd_variant, self.student_twins, self.gold_weights
        if self.loss_impl == "chunked":
            outputs, hidden, weight = self.student_hidden(model, inputs["input_ids"])
            loss, ce, kd_value = cross_tokenizer_head_loss(
                hidden, weight, inputs["labels"], targets, variant=variant, alpha=self.distill.alpha,
                temperature=self.temperature, reduction=self.distill.reduction, chunk_rows=self.loss_chunk_rows,
                student_twins=twins, gold_weights=weights)
        else:
            outputs = model(input_ids=inputs["input_ids"], labels=inputs["labels"])
            ce = outputs.loss
            kd_rows = cross_tokenizer_kd(variant, self.temperature, student_twins=twins, gold_weights=weights)
            kd_value = reduce_aligned(kd_rows(outputs.logits, targets), targets["aligned"], self.distill.reduction)
            loss = distillation_loss(ce, kd_value, alpha=self.distill.alpha, temperature=self.temperature)
        self._parts["ce_loss"].append(float(ce.detach()))
        self._parts["kd_loss"].append(float(kd_value.detach()))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, start_time=None):
        if "loss" in logs and self._parts["ce_loss"]:
            for k, v in self._parts.items():
                logs[k] = sum(v) / len(v)
                v.clear()
        super().log(logs, start_time)


def make_distill_trainer() -> type[DistillTrainer]:
    """`DistillTrainer` (kept for callers of the factory this module had before the class moved to module level)."""
    return DistillTrainer
