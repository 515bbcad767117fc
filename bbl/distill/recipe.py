"""`bbl distill`: train the student with L = alpha*CE + (1-alpha)*T^2*KD on the transformers Trainer.

Cached (default): input ids and soft targets stream from the Zarr cache in its chunk-shuffled order; the
teachers are never loaded. Online (`--teacher DIR ...`, no cache): the teachers stay resident and the KD term is
the full-vocabulary KL to their logit-mean ensemble, exactly the original method; it exists to prove the
cache right and to measure what the cache saves.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bbl.cache.dataset import CacheDataset
from bbl.cache.integrity import damage_message
from bbl.cache.kinds.cross_tokenizer import student_twin_mask
from bbl.cache.reader import open_cache
from bbl.config import KD_VARIANTS_OF_CACHE, PAPER_TEMPERATURE, Config
from bbl.data.prepared import PreparedData
from bbl.data.tokenizer import check_same_tokenizer, tokenizer_fingerprint
from bbl.distill.trainer import DistillTrainer
from bbl.errors import BblError, UsageError
from bbl.losses.cross_tokenizer import gold_weights
from bbl.losses.divergences import reading_problem
from bbl.models.build import check_model_dir
from bbl.models.teachers import load_teachers
from bbl.train.ledger import teacher_ledgers
from bbl.train.objectives import has_mlm
from bbl.train.recipe import check_run_out, train_lm


def distill(cfg: Config, data_dir: Path, out: Path, *, cache_path=None, teacher_dirs=(), resume: bool = False,
            overwrite: bool = False, callbacks=(), log=print) -> Path:
    """Distill `cfg`'s student from a cache (or, with `teacher_dirs` and no cache, from resident teachers).

    Raises:
        BblError: neither or both of cache and teachers; cache incomplete or not matching the prepared data,
            tokenizer, seq_len, vocab or temperature (see `CacheReader.validate`); a cache whose targets kind
            `distill.kd_variant` does not read (`bbl.config.KD_VARIANTS_OF_CACHE`); a `distill.divergence` the
            reading does not support (`bbl.losses.divergences.reading_problem`); plus `train_lm`'s errors.
    """
    if bool(cache_path) == bool(teacher_dirs):
        raise UsageError("pass exactly one of --cache (cached distillation) or --teacher ... (online reference)")
    check_run_out(Path(out), resume=resume, overwrite=overwrite, kind="student_distilled")  # before the cache scan or the teachers load
    data = PreparedData(data_dir)
    if cache_path:
        reader = open_cache(cache_path)
        cfg = cached_train_windows(check_distill_inputs(cfg, data, reader=reader), reader, log=log)
        d = cfg.distill
        damaged = reader.scan()  # decode every chunk once (crc32c) so damage stops the run before its first step
        if damaged:
            raise BblError(damage_message(cache_path, damaged, reader.attrs))
        dataset = CacheDataset(reader, seed=cfg.training.seed)
        kwargs = {"distill": d, "temperature": d.temperature or reader.temperature,
                  "cache_temperature": reader.temperature}
        provenance = {"distill_mode": "cached", "cache": str(cache_path), "train_windows": reader.num_windows,
                      "cache_window_selection": reader.attrs.get("window_selection"),
                      "cache_temperature": reader.temperature,
                      "cache_top_k": reader.top_k, "cache_targets": reader.targets,
                      "cache_num_samples": reader.num_samples}
        if d.kd_variant == "gold":  # GOLD's unmatched part needs the student ids that have a teacher twin
            twins = reader.read_static("teacher_to_student")
            kwargs["student_twins"] = student_twin_mask(twins, data.vocab_size)
            w_m, w_u = gold_weights(float((twins >= 0).mean()), d.gold_matched_weight, d.gold_unmatched_weight)
            kwargs["gold_weights"] = (w_m, w_u)
            provenance.update(gold_matched_weight=w_m, gold_unmatched_weight=w_u)
    else:
        cfg = check_distill_inputs(cfg, data, teacher_dirs=teacher_dirs)
        d = cfg.distill
        teachers, infos = load_teachers(list(teacher_dirs), "cpu", seq_len=cfg.training.seq_len)
        dataset = None  # the same windows and order as plain training
        kwargs = {"distill": d, "temperature": d.temperature or PAPER_TEMPERATURE, "teachers": teachers}
        provenance = {"distill_mode": "online", "teachers": infos}
    teacher_infos = reader.attrs.get("teachers", []) if cache_path else infos
    provenance["teacher_ledgers"] = teacher_ledgers(teacher_infos)  # the ledger counts bbl's teachers' words too
    provenance.update(alpha=d.alpha, temperature=kwargs["temperature"], kd_variant=d.kd_variant,
                      reduction=d.reduction, divergence=d.divergence, jsd_beta=d.jsd_beta, skew=d.skew)
    return train_lm(cfg, data_dir, out, resume=resume, overwrite=overwrite, kind="student_distilled",
                    train_dataset=dataset, trainer_base=DistillTrainer, trainer_kwargs=kwargs, provenance=provenance,
                    callbacks=callbacks, log=log)


def check_distill_inputs(cfg: Config, data: PreparedData, *, reader=None, teacher_dirs=()) -> Config:
    """What `distill` checks of its config, cache or teachers before it loads a model or writes anything (`bbl
    study` calls it for each arm before its first run). Returns `cfg` with `distill.kd_variant` resolved.

    Args:
        reader: the opened cache (`open_cache`) of a cached run; None for an online run from `teacher_dirs`.
    Raises:
        BblError: `distill.mlm_kd` where it cannot apply; a cache whose kind `distill.kd_variant` does not read, whose
            sampled draws would need re-tempering, or that does not match the prepared data and the config
            (`CacheReader.validate`); a teacher that is not a model dir of the prepared tokenizer with the positions
            of `training.seq_len`.
    """
    _check_mlm_kd(cfg, cached=reader is not None)
    if reader is None:
        for t in teacher_dirs:
            check_model_dir(t, seq_len=cfg.training.seq_len, option="training.seq_len",
                            written_by="`bbl train-teacher`")
            check_same_tokenizer(tokenizer_fingerprint(t), data.tokenizer_fingerprint(), subject=f"{t}: teacher",
                                 reference=data.tokenizer_dir, fix="pass the --data the teachers were trained on")
        return resolve_kd_variant(cfg, "topk")  # unused by the full-vocabulary KL; recorded as the default
    cfg = resolve_kd_variant(cfg, reader.targets)
    d = cfg.distill
    if d.kd_variant not in KD_VARIANTS_OF_CACHE[reader.targets]:
        fits = " or ".join(KD_VARIANTS_OF_CACHE[reader.targets])
        raise BblError(f"{reader.path}: holds {reader.targets} targets, which distill.kd_variant={d.kd_variant} "
                       f"does not read; set distill.kd_variant={fits} or dump a cache with --targets "
                       f"{'topk' if d.kd_variant.startswith('topk') else d.kd_variant}")
    if reader.kd_fraction < 1 and d.kd_variant == "topk_renorm":
        raise BblError(f"{reader.path}: holds targets at {reader.kd_fraction:g} of the positions (--kd-fraction), "
                       f"which distill.kd_variant=topk_renorm cannot leave out; set distill.kd_variant=topk_tail")
    if reader.kd_fraction < 1 and d.divergence != "forward_kl":
        raise BblError(f"{reader.path}: holds targets at {reader.kd_fraction:g} of the positions (--kd-fraction); "
                       f"only distill.divergence=forward_kl is defined to skip the others so far; drop "
                       f"distill.divergence or dump without --kd-fraction")
    problem = reading_problem(d.divergence, d.kd_variant)
    if d.kd_variant in ("exact_match", "uld", "gold") and d.divergence != "forward_kl":
        problem = (f"distill.divergence={d.divergence} has no cross-tokenizer form yet: kd_variant={d.kd_variant} "
                   f"is its own loss (exact-match KL, ULD or GOLD); drop distill.divergence")
    if problem:
        raise BblError(f"{reader.path}: {problem}")
    if reader.targets != "topk" and d.temperature is not None and abs(d.temperature - reader.temperature) > 1e-9:
        raise BblError(f"{reader.path}: {reader.targets} targets were drawn at temperature {reader.temperature} "
                       f"and cannot be re-tempered; drop distill.temperature or dump at {d.temperature}")
    reader.validate(tokenizer_fingerprint=data.tokenizer_fingerprint(), train_stream_sha256=data.stream_sha256("train"),
                    seq_len=cfg.training.seq_len, temperature=d.temperature, allow_retemper=d.allow_retemper,
                    vocab_size=data.vocab_size)
    return cfg


def cached_train_windows(cfg: Config, reader, *, log=print) -> Config:
    """`cfg` with `training.max_train_windows` saying what a cached distillation trains on: the cache's windows
    (null when it holds every window, else their count), whatever the config asked; a `note:` line when that
    differs, so the run's recorded config never names windows it did not see."""
    dumped = (reader.attrs.get("window_selection") or {}).get("max_windows")
    trained = None if dumped is None else reader.num_windows
    asked = cfg.training.max_train_windows
    if asked == trained:
        return cfg
    log(f"note: training.max_train_windows {asked}: the cache {reader.path} holds {reader.num_windows} windows "
        f"({'every window' if dumped is None else f'dumped with --max-windows {dumped}'}), which a cached "
        f"distillation trains on; recorded as training.max_train_windows={trained}")
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, max_train_windows=trained))


def _check_mlm_kd(cfg: Config, *, cached: bool) -> None:
    """Refuse `distill.mlm_kd` where it has no meaning or no implementation (one line naming the fix)."""
    t = cfg.training
    if not cfg.distill.mlm_kd:
        return
    problem = ("it needs mlm phases in training.objective_schedule" if not has_mlm(t.phases) else
               "it needs training.mlm_target=previous (the positions that predict a masked next token)"
               if t.mlm_target != "previous" else "it reads a cache; drop --teacher and pass --cache" if not cached
               else "it needs training.loss_impl=chunked" if t.loss_impl != "chunked" else None)
    if problem:
        raise BblError(f"distill.mlm_kd: {problem}, or set distill.mlm_kd=false")


def resolve_kd_variant(cfg: Config, targets: str) -> Config:
    """`cfg` with `distill.kd_variant` set: as given, or (None) the default reader of a cache of kind `targets`
    (the first of `KD_VARIANTS_OF_CACHE[targets]`: topk_tail, sampled, hybrid). The run's saved config records the
    concrete variant, so a resumed run compares like with like."""
    if cfg.distill.kd_variant is not None:
        return cfg
    distill = dataclasses.replace(cfg.distill, kd_variant=KD_VARIANTS_OF_CACHE[targets][0])
    return dataclasses.replace(cfg, distill=distill)
