"""The distillation Trainer: the train room's Trainer whose `compute_loss` adds the KD term to the CE,
L = alpha*CE + (1-alpha)*T^2*KD (Baby Llama, Section 3.2), from the cache's targets or resident teachers, and logs
ce_loss / kd_loss beside the loss. In a masked-LM phase of `training.objective_schedule` there is no KD term: the
cache holds causal next-token targets, and resident teachers are not run.
"""

from __future__ import annotations

from bbl.config import PAPER_TEMPERATURE
from bbl.losses.chunked import IGNORE_INDEX, KDTargets, chunked_head_loss, shift_labels
from bbl.losses.kd import (
    distillation_loss,
    full_kl,
    hybrid_targets,
    reduce_kd,
    retemper,
    sampled_targets,
    topk_renorm_kl,
    topk_tail_kl,
)
from bbl.models.ensemble import ensemble_logits
from bbl.train.trainer import make_loss_trainer


def make_distill_trainer():
    """A Trainer whose `compute_loss` adds the KD term (cached or online) and logs ce_loss / kd_loss."""
    import torch

    kd_functions = {"topk_tail": topk_tail_kl, "topk_renorm": topk_renorm_kl}

    class DistillTrainer(make_loss_trainer()):
        def __init__(self, *args, distill=None, temperature: float = PAPER_TEMPERATURE, cache_temperature: float | None = None,
                     teachers=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_is_scaled_for_ga = False  # both paths return a per-micro-batch mean
            self.distill, self.temperature, self.cache_temperature = distill, temperature, cache_temperature
            self.teachers = [t.to(self.args.device).eval() for t in teachers or []]
            self._parts: dict[str, list[float]] = {"ce_loss": [], "kd_loss": []}

        def _teacher_targets(self, input_ids, targets):
            """The KD targets at the training temperature: the teachers' logit mean, or the (re-tempered) cache."""
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
            targets = {k: inputs.pop(k) for k in ("topk_ids", "topk_logprobs", "tail_logprob", "sample_ids",
                                                  "kd_mask") if k in inputs}
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
                temperature=self.temperature, reduction="token_mean", chunk_rows=self.loss_chunk_rows, shift=False)
            self._parts["ce_loss"].append(float(ce))
            self._parts["kd_loss"].append(float(kd_value))
            return (loss, outputs) if return_outputs else loss

        def causal_loss(self, model, inputs, targets, return_outputs=False):
            """The CE plus KD of a clm batch (cached targets or resident teachers)."""
            distilling = model.training and (targets or self.teachers)
            if self.loss_impl == "chunked":
                outputs, hidden, weight = self.student_hidden(model, inputs["input_ids"])
                kd = self._teacher_targets(inputs["input_ids"], targets) if distilling else None
                loss, ce, kd_value = chunked_head_loss(
                    hidden, weight, inputs["labels"], kd=kd, alpha=self.distill.alpha, temperature=self.temperature,
                    reduction=self.distill.reduction, chunk_rows=self.loss_chunk_rows)
            else:  # the reference: the model's (B, S, V) logits and the unfused losses
                outputs = model(input_ids=inputs["input_ids"], labels=inputs["labels"])
                loss = ce = outputs.loss
                if distilling:
                    kd_targets = self._teacher_targets(inputs["input_ids"], targets)
                    if kd_targets.kind == "full":
                        kl = full_kl(outputs.logits, kd_targets.teacher_logits, self.temperature)
                    else:  # sampled / hybrid arrive as topk_tail targets (sampled_kl / hybrid_kl's own reduction)
                        kl = kd_functions[kd_targets.kind](outputs.logits, kd_targets.topk_ids,
                                                           kd_targets.topk_logprobs, kd_targets.tail_logprob,
                                                           self.temperature)
                    kd_value = reduce_kd(kl, self.distill.reduction)
                    loss = distillation_loss(ce, kd_value, alpha=self.distill.alpha, temperature=self.temperature)
            if distilling:
                self._parts["ce_loss"].append(float(ce.detach()))
                self._parts["kd_loss"].append(float(kd_value.detach()))
            return (loss, outputs) if return_outputs else loss

        def log(self, logs, start_time=None):
            if "loss" in logs and self._parts["ce_loss"]:
                for k, v in self._parts.items():
                    logs[k] = sum(v) / len(v)
                    v.clear()
            super().log(logs, start_time)

    return DistillTrainer
