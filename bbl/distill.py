"""`bbl distill`: train the student with L = alpha*CE + (1-alpha)*T^2*KD on the transformers Trainer.

Cached (default): input ids and soft targets stream from the Zarr cache in its chunk-shuffled order; the
teachers are never loaded. Online (`--teacher DIR ...`, no cache): the teachers stay resident and the KD term is
the full-vocabulary KL to their logit-mean ensemble, exactly the original method; it exists to prove the
cache right and to measure what the cache saves.
"""

from __future__ import annotations

from pathlib import Path

from bbl.config import Config
from bbl.errors import BblError


def make_distill_trainer():
    """A Trainer whose `compute_loss` adds the KD term (cached or online) and logs ce_loss / kd_loss."""
    import torch

    from bbl.chunked_loss import KDTargets, chunked_head_loss
    from bbl.losses import (
        distillation_loss,
        full_kl,
        hybrid_targets,
        reduce_kd,
        retemper,
        sampled_targets,
        topk_renorm_kl,
        topk_tail_kl,
    )
    from bbl.trainer_loss import make_loss_trainer

    kd_functions = {"topk_tail": topk_tail_kl, "topk_renorm": topk_renorm_kl}

    class DistillTrainer(make_loss_trainer()):
        def __init__(self, *args, distill=None, temperature: float = 2.0, cache_temperature: float | None = None,
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
                    logits = torch.stack([t(input_ids=input_ids).logits.float() for t in self.teachers]).mean(0)
                return KDTargets("full", teacher_logits=logits)
            variant = self.distill.kd_variant
            if variant in ("sampled", "hybrid"):  # exact-target forms of topk_tail (bbl.losses.sampled_kl, hybrid_kl)
                ids, top, tail = (sampled_targets(targets["sample_ids"]) if variant == "sampled" else
                                  hybrid_targets(targets["topk_ids"], targets["topk_logprobs"],
                                                 targets["tail_logprob"], targets["sample_ids"]))
                return KDTargets("topk_tail", topk_ids=ids, topk_logprobs=top, tail_logprob=tail)
            top, tail = targets["topk_logprobs"], targets["tail_logprob"]
            if self.cache_temperature is not None and abs(self.cache_temperature - self.temperature) > 1e-9:
                top, tail = retemper(top, tail, from_temperature=self.cache_temperature,
                                     to_temperature=self.temperature)
            return KDTargets(variant, topk_ids=targets["topk_ids"], topk_logprobs=top, tail_logprob=tail)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = {k: inputs.pop(k) for k in ("topk_ids", "topk_logprobs", "tail_logprob", "sample_ids")
                       if k in inputs}
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


def distill(cfg: Config, data_dir: Path, out: Path, *, cache_path=None, teacher_dirs=(), resume: bool = False,
            log=print) -> Path:
    """Distill `cfg`'s student from a cache (or, with `teacher_dirs` and no cache, from resident teachers).

    Raises:
        BblError: neither or both of cache and teachers; cache incomplete or not matching the prepared data,
            tokenizer, seq_len, vocab or temperature (see `CacheReader.validate`); a cache whose targets kind
            `distill.kd_variant` does not read (`bbl.config.KD_VARIANTS_OF_CACHE`); plus `train_lm`'s errors.
    """
    from bbl.cache import CacheDataset, open_cache
    from bbl.config import KD_VARIANTS_OF_CACHE
    from bbl.data import PreparedData
    from bbl.tokenizer import tokenizer_fingerprint
    from bbl.train import train_lm

    if bool(cache_path) == bool(teacher_dirs):
        raise BblError("pass exactly one of --cache (cached distillation) or --teacher ... (online reference)")
    data = PreparedData(data_dir)
    d = cfg.distill
    kwargs: dict = {"distill": d}
    if cache_path:
        reader = open_cache(cache_path)
        if d.kd_variant not in KD_VARIANTS_OF_CACHE[reader.targets]:
            fits = " or ".join(KD_VARIANTS_OF_CACHE[reader.targets])
            raise BblError(f"{cache_path}: holds {reader.targets} targets, which distill.kd_variant={d.kd_variant} "
                           f"does not read; set distill.kd_variant={fits} or dump a cache with --targets "
                           f"{'topk' if d.kd_variant.startswith('topk') else d.kd_variant}")
        if reader.targets != "topk" and d.temperature is not None and abs(d.temperature - reader.temperature) > 1e-9:
            raise BblError(f"{cache_path}: {reader.targets} targets were drawn at temperature {reader.temperature} "
                           f"and cannot be re-tempered; drop distill.temperature or dump at {d.temperature}")
        reader.validate(tokenizer_fingerprint=tokenizer_fingerprint(data.tokenizer_dir),
                        train_stream_sha256=data.stream_sha256("train"), seq_len=cfg.training.seq_len,
                        temperature=d.temperature, allow_retemper=d.allow_retemper, vocab_size=data.vocab_size)
        damaged = reader.scan()  # decode every chunk once (crc32c) so damage stops the run before its first step
        if damaged:
            from bbl.cache_integrity import damage_message

            raise BblError(damage_message(cache_path, damaged, reader.attrs))
        dataset = CacheDataset(reader, seed=cfg.training.seed)
        kwargs.update(temperature=d.temperature or reader.temperature, cache_temperature=reader.temperature)
        provenance = {"distill_mode": "cached", "cache": str(cache_path), "cache_temperature": reader.temperature,
                      "cache_top_k": reader.top_k, "cache_targets": reader.targets,
                      "cache_num_samples": reader.num_samples}
    else:
        from bbl.teachers import load_teachers

        teachers, infos = load_teachers(list(teacher_dirs), "cpu", seq_len=cfg.training.seq_len)
        if infos[0]["tokenizer_fingerprint"] != tokenizer_fingerprint(data.tokenizer_dir):
            raise BblError(f"{teacher_dirs[0]}: teacher tokenizer differs from {data.tokenizer_dir}")
        dataset = None  # the same windows and order as plain training
        kwargs.update(temperature=d.temperature or 2.0, teachers=teachers)
        provenance = {"distill_mode": "online", "teachers": infos}
    from bbl.ledger import teacher_ledgers

    teacher_paths = [t["path"] for t in reader.attrs.get("teachers", [])] if cache_path else list(teacher_dirs)
    provenance["teacher_ledgers"] = teacher_ledgers(teacher_paths)  # the ledger counts the teachers' words too
    provenance.update(alpha=d.alpha, temperature=kwargs["temperature"], kd_variant=d.kd_variant,
                      reduction=d.reduction)
    return train_lm(cfg, data_dir, out, resume=resume, kind="student_distilled", train_dataset=dataset,
                    trainer_base=make_distill_trainer(), trainer_kwargs=kwargs, provenance=provenance, log=log)
