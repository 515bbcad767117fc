"""`bbl distill`: train the student with L = alpha*CE + (1-alpha)*T^2*KD on the transformers Trainer; from several
caches (teachers of other tokenizers each in its own), L = alpha*CE + (1-alpha) * sum_c w_c * T_c^2 * KD_c.

Cached (default): input ids and soft targets stream from the Zarr cache in its chunk-shuffled order; the
teachers are never loaded. Online (`--teacher DIR ...`, no cache): the teachers stay resident and the KD term is
the full-vocabulary KL to their logit-mean ensemble, exactly the original method; it exists to prove the
cache right and to measure what the cache saves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bbl.cache.dataset import CacheDataset, MultiCacheDataset, cache_prefix
from bbl.cache.integrity import damage_message
from bbl.cache.kinds.registry import get_kind, kind_names
from bbl.cache.reader import CacheReader, open_cache
from bbl.cache.store import cache_location
from bbl.config import Config, DistillConfig, kd_temperature, parse_cache_spec
from bbl.data.prepared import PreparedData
from bbl.data.tokenizer import check_same_tokenizer, tokenizer_fingerprint
from bbl.distill.trainer import CacheTerm, DistillTrainer
from bbl.errors import BblError, UsageError
from bbl.losses.readings import get_reading
from bbl.models.build import check_model_dir
from bbl.models.teachers import load_teachers
from bbl.train.ledger import teacher_ledgers
from bbl.train.objectives import has_mlm
from bbl.train.recipe import check_run_out, train_lm


def distill(cfg: Config, data_dir: Path, out: Path, *, cache_path=None, teacher_dirs=(), resume: bool = False,
            overwrite: bool = False, callbacks=(), log=print) -> Path:
    """Distill `cfg`'s student from one cache or several (or, with `teacher_dirs` and no cache, from resident
    teachers).

    Args:
        cache_path: a cache location (a path or an fsspec URL), or a list of them; each may be a spec
            `LOCATION:KEY=VALUE,...` of that cache's own settings (`bbl.config.parse_cache_spec`,
            `DistillConfig.caches`). From several caches L = alpha*CE + (1-alpha) * sum_c w_c * T_c^2 * KD_c
            (`check_caches`, `bbl.distill.trainer.CacheTerm`); from one, exactly the single-cache loss.
    Raises:
        BblError: neither or both of cache and teachers; a cache incomplete or not matching the prepared data,
            tokenizer, seq_len, vocab or temperature (see `CacheReader.validate`); a cache whose kind does not admit
            its `kd_variant` (`CacheKind.kd_variants`); a `distill.divergence` the reading does not support
            (`KDReading.divergence_problem`); caches of other windows, or weights not summing to 1 (`check_caches`);
            plus `train_lm`'s errors. All before anything is written.
    """
    specs = cache_specs(cache_path)
    if bool(specs) == bool(teacher_dirs):
        raise UsageError("pass exactly one of --cache (cached distillation) or --teacher ... (online reference)")
    check_run_out(Path(out), resume=resume, overwrite=overwrite,  # before the cache scan or the teachers load
                  kind="student_distilled")
    data = PreparedData(data_dir)
    if specs:
        cfg, sources = check_caches(cfg, data, specs)
        cfg = cached_train_windows(cfg, sources[0].reader, log=log)  # every cache holds the same windows
        d = cfg.distill
        for source in sources:  # decode every chunk once (crc32c) so damage stops the run before its first step
            damaged = source.reader.scan()
            if damaged:
                raise BblError(damage_message(source.location, damaged, source.reader.attrs))
        teacher_infos = [t for s in sources for t in s.reader.attrs.get("teachers", [])]
        if len(sources) > 1:  # a teacher in two caches saw its words once
            teacher_infos = list({t["path"]: t for t in teacher_infos}.values())
        if len(sources) == 1:
            (source,) = sources
            dataset = CacheDataset(source.reader, seed=cfg.training.seed)
            extras, more = _prepare_reading(source, data)
            kwargs = {"distill": d, "temperature": source.temperature,
                      "cache_temperature": source.reader.temperature,
                      **({"reading_extras": extras} if extras is not None else {})}
            provenance = {"distill_mode": "cached", **_cache_provenance(source), **more}
        else:
            dataset = MultiCacheDataset([s.reader for s in sources], seed=cfg.training.seed)
            terms, caches = [], []
            for c, source in enumerate(sources):
                extras, more = _prepare_reading(source, data)
                terms.append(CacheTerm(cache_prefix(c), source.distill, source.weight, source.temperature,
                                       source.reader.temperature, extras or {}))
                e = source.distill
                caches.append({**_cache_provenance(source), "weight": source.weight,
                               "temperature": source.temperature, "kd_variant": e.kd_variant,
                               "reduction": e.reduction, "divergence": e.divergence, "jsd_beta": e.jsd_beta,
                               "skew": e.skew, **more})
            kwargs = {"distill": d, "caches": terms}
            provenance = {"distill_mode": "cached", "caches": caches}
    else:
        cfg = check_distill_inputs(cfg, data, teacher_dirs=teacher_dirs)
        d = cfg.distill
        teachers, teacher_infos = load_teachers(list(teacher_dirs), "cpu", seq_len=cfg.training.seq_len)
        dataset = None  # the same windows and order as plain training
        kwargs = {"distill": d, "temperature": kd_temperature(d, None), "teachers": teachers}
        provenance = {"distill_mode": "online", "teachers": teacher_infos}
    provenance["teacher_ledgers"] = teacher_ledgers(teacher_infos)  # the ledger counts bbl's teachers' words too
    provenance["alpha"] = d.alpha
    if "caches" not in provenance:  # several caches: each one's settings are in its entry
        provenance.update(temperature=kwargs["temperature"], kd_variant=d.kd_variant, reduction=d.reduction,
                          divergence=d.divergence, jsd_beta=d.jsd_beta, skew=d.skew)
    return train_lm(cfg, data_dir, out, resume=resume, overwrite=overwrite, kind="student_distilled",
                    train_dataset=dataset, trainer_base=DistillTrainer, trainer_kwargs=kwargs, provenance=provenance,
                    callbacks=callbacks, log=log)


@dataclass
class CacheSource:
    """One cache of a cached run, checked (`check_caches`).

    Attributes:
        location: the cache's path or URL. reader: it, opened. distill: the settings it is read with (kd_variant
        resolved). weight: its w_c (1 for one cache). temperature: its KD term's T_c (`kd_temperature`).
    """

    location: Path | str
    reader: CacheReader
    distill: DistillConfig
    weight: float = 1.0

    @property
    def temperature(self) -> float:
        return kd_temperature(self.distill, self.reader.temperature)


def cache_specs(cache_path) -> list[tuple[Path | str, dict]]:
    """`distill`'s `cache_path` (None, one location or spec, or a list of them) as [(location, its settings)]
    (`bbl.config.parse_cache_spec`; a `Path` is a location as it is). Raises `BblError` for a malformed spec."""
    if cache_path is None:
        return []
    items = [cache_path] if isinstance(cache_path, str | Path) else list(cache_path)
    specs = []
    for item in items:
        location, settings = (item, {}) if isinstance(item, Path) else parse_cache_spec(item)
        specs.append((cache_location(location), settings))
    return specs


def check_caches(cfg: Config, data: PreparedData, specs, *,
                 open_reader=open_cache) -> tuple[Config, list[CacheSource]]:
    """Open and check each cache of a cached run before anything is written (`bbl study` calls it per arm); returns
    the config the run saves and the checked caches, in order.

    One cache: its settings (`specs`, `distill.caches`) fold into `distill`, which `check_distill_inputs` checks as
    ever. Several: each cache is read as `distill.for_cache(c)` and checked on its own (its kind admits the
    kd_variant, divergence, temperature, `CacheReader.validate`); they must hold the same student windows row by
    row (`window_idx`); the weights resolve to sum to 1 (`resolve_cache_weights`); the saved config's
    `distill.caches` records each one's kd_variant and weight.

    Args:
        specs: [(location, settings)] (`cache_specs`). open_reader: location -> an open `CacheReader`.
    Raises:
        BblError: `distill.caches` of another length than `specs`; `distill.mlm_kd` with several caches; caches of
            other windows; weights not summing to 1; and each cache's `check_distill_inputs` errors.
    """
    entries = cfg.distill.caches
    if entries is not None and len(entries) != len(specs):
        raise BblError(f"distill.caches has {len(entries)} entries for {len(specs)} --cache; give one per --cache "
                       f"(or per-cache settings as --cache PATH:KEY=VALUE,...)")
    entries = [{**(entries[c] if entries else {}), **settings} for c, (_, settings) in enumerate(specs)]
    merged = dataclasses.replace(cfg.distill, caches=entries)  # checks every entry and the weights
    weights = merged.cache_weights()
    if len(specs) == 1:
        location = specs[0][0]
        reader = open_reader(location)
        one = check_distill_inputs(dataclasses.replace(cfg, distill=merged.for_cache(0)), data, reader=reader)
        return one, [CacheSource(location, reader, one.distill)]
    if cfg.distill.mlm_kd:
        raise BblError("distill.mlm_kd reads one cache; set distill.mlm_kd=false, or distil from one --cache")
    sources = []
    for c, (location, _) in enumerate(specs):
        reader = open_reader(location)
        checked = check_distill_inputs(dataclasses.replace(cfg, distill=merged.for_cache(c)), data, reader=reader)
        if get_reading(checked.distill.kd_variant).weights is not None:  # its own CE/KD weighting (ALM, ULD's source)
            raise BblError(f"{location}: kd_variant={checked.distill.kd_variant} weighs CE and KD its own way, "
                           f"which the several-cache sum alpha*CE + (1-alpha)*sum_c w_c*T_c^2*KD_c cannot hold yet; "
                           f"distil from it alone, or read it with another kd_variant")
        sources.append(CacheSource(location, reader, checked.distill, weights[c]))
    check_same_windows(sources)
    resolved = [{**e, "kd_variant": s.distill.kd_variant, "weight": s.weight}
                for e, s in zip(entries, sources, strict=True)]
    return dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, caches=resolved)), sources


def check_same_windows(sources: list[CacheSource]) -> None:
    """Refuse caches that do not hold the same student windows in the same rows (their `window_idx`), which
    distilling from them together needs: row n of every cache must be one window.

    Raises:
        BblError: one line naming the cache, how it differs from the first, and the fix.
    """
    first = sources[0]
    ref = np.asarray(first.reader.read_array("window_idx", 0, len(first.reader)))
    fix = "dump every cache with the same --data, --seq-len, --max-windows and --data-seed"
    for s in sources[1:]:
        if len(s.reader) != len(first.reader):
            raise BblError(f"{s.location}: holds {len(s.reader)} windows, {first.location} {len(first.reader)}; "
                           f"caches distilled together must hold the same student windows; {fix}")
        idx = np.asarray(s.reader.read_array("window_idx", 0, len(s.reader)))
        if not np.array_equal(idx, ref):
            r = int(np.flatnonzero(idx != ref)[0])
            raise BblError(f"{s.location}: row {r} holds window {idx[r]}, {first.location}'s window {ref[r]}; "
                           f"caches distilled together must hold the same student windows; {fix}")


def _cache_provenance(source: CacheSource) -> dict:
    """What the run's ledger records of a cache."""
    r = source.reader
    return {"cache": str(source.location), "train_windows": r.num_windows,
            "cache_window_selection": r.attrs.get("window_selection"), "cache_temperature": r.temperature,
            "cache_top_k": r.top_k, "cache_targets": r.targets, "cache_num_samples": r.num_samples}


def _prepare_reading(source: CacheSource, data: PreparedData) -> tuple[dict | None, dict]:
    """(extras, provenance) of what the cache's reading needs once from its static arrays (e.g. GOLD's twins);
    (None, {}) for a reading with nothing to prepare."""
    reading = get_reading(source.distill.kd_variant)
    if reading.prepare is None:
        return None, {}
    static = {name: source.reader.read_static(name) for name in source.reader.static}
    return reading.prepare(static, source.distill, data.vocab_size)


def check_distill_inputs(cfg: Config, data: PreparedData, *, reader=None, teacher_dirs=()) -> Config:
    """What `distill` checks of its config, cache or teachers before it loads a model or writes anything (`bbl
    study` calls it for each arm before its first run). Returns `cfg` with `distill.kd_variant` resolved.

    Args:
        reader: the opened cache (`open_cache`) of a cached run; None for an online run from `teacher_dirs`.
    Raises:
        BblError: `distill.mlm_kd` where it cannot apply; `training.window_offset` random with a cache; a cache
            whose kind `distill.kd_variant` does not read, whose sampled draws would need re-tempering, or that
            does not match the prepared data and the config
            (`CacheReader.validate`); a teacher that is not a model dir of the prepared tokenizer with the positions
            of `training.seq_len`.
    """
    _check_mlm_kd(cfg, cached=reader is not None)
    if reader is not None and cfg.training.window_offset == "random":
        raise BblError(f"{reader.path}: training.window_offset=random cuts other windows each epoch, but a cache holds "
                       f"targets for the fixed windows it was dumped at only; set training.window_offset=fixed, or "
                       f"distil online with --teacher")
    if reader is None:
        for t in teacher_dirs:
            check_model_dir(t, seq_len=cfg.training.seq_len, option="training.seq_len",
                            written_by="`bbl train-teacher`")
            check_same_tokenizer(tokenizer_fingerprint(t), data.tokenizer_fingerprint(), subject=f"{t}: teacher",
                                 reference=data.tokenizer_dir, fix="pass the --data the teachers were trained on")
        return resolve_kd_variant(cfg, "topk_tail")  # unused by the full-vocabulary KL; recorded as the default
    cfg = resolve_kd_variant(cfg, reader.kind.kd_variants[0])
    d = cfg.distill
    reading = get_reading(d.kd_variant)  # an unknown name: one line listing the readings
    problem = reader.kind.variant_problem(d.kd_variant)
    if problem:
        kinds = [k for k in kind_names() if d.kd_variant in get_kind(k).kd_variants]
        dump = f"dump a cache with --targets {' or '.join(kinds)}" if kinds else "no cache kind is read that way"
        raise BblError(f"{reader.path}: {problem}, or {dump}")
    _check_mlm_kd_reading(cfg, reading)
    _check_alm_weighting(cfg)
    if reader.kd_fraction < 1 and d.kd_variant == "topk_renorm":
        raise BblError(f"{reader.path}: holds targets at {reader.kd_fraction:g} of the positions (--kd-fraction), "
                       f"which distill.kd_variant=topk_renorm cannot leave out; set distill.kd_variant=topk_tail")
    if reader.kd_fraction < 1 and d.divergence != "forward_kl":
        raise BblError(f"{reader.path}: holds targets at {reader.kd_fraction:g} of the positions (--kd-fraction); "
                       f"only distill.divergence=forward_kl is defined to skip the others so far; drop "
                       f"distill.divergence or dump without --kd-fraction")
    problem = reading.divergence_problem(d.divergence) or reading.cache_problem(reader.attrs, d)
    if problem:
        raise BblError(f"{reader.path}: {problem}")
    if not reader.kind.retemper and d.temperature is not None and abs(d.temperature - reader.temperature) > 1e-9:
        raise BblError(f"{reader.path}: {reader.targets} targets were made at temperature {reader.temperature} "
                       f"and cannot be re-tempered; drop distill.temperature or dump at {d.temperature}")
    reader.validate(tokenizer_fingerprint=data.tokenizer_fingerprint(), train_stream_sha256=data.stream_sha256("train"),
                    seq_len=cfg.training.seq_len, temperature=d.temperature, allow_retemper=d.allow_retemper,
                    vocab_size=data.vocab_size)
    return cfg


def _check_mlm_kd_reading(cfg: Config, reading) -> None:
    """`distill.mlm_kd` picks the rows of a (k+1)-outcome reading; refuse a reading that is its own loss."""
    if cfg.distill.mlm_kd and reading.coarse_targets is None:
        raise BblError(f"distill.mlm_kd: kd_variant={reading.name} has no row-wise (k+1)-outcome form; set "
                       f"distill.mlm_kd=false")


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


def _check_alm_weighting(cfg: Config) -> None:
    """Refuse `distill.alm_weighting=gradmag` on the full-logits reference path, which does not compute the terms'
    gradient norms (ALM with several caches is refused with every reading that weighs CE and KD its own way)."""
    d = cfg.distill
    if d.kd_variant == "alm" and d.alm_weighting == "gradmag" and cfg.training.loss_impl != "chunked":
        raise BblError("distill.alm_weighting=gradmag needs training.loss_impl=chunked (its gradient norms come from "
                       "the chunked loss), or set distill.alm_weighting=alpha")


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


def resolve_kd_variant(cfg: Config, default: str) -> Config:
    """`cfg` with `distill.kd_variant` set: as given, or (None) `default`, the cache kind's default reading (the
    first of `CacheKind.kd_variants`: topk_tail, sampled, hybrid, exact_match). The run's saved config records the
    concrete variant, so a resumed run compares like with like."""
    if cfg.distill.kd_variant is not None:
        return cfg
    distill = dataclasses.replace(cfg.distill, kd_variant=default)
    return dataclasses.replace(cfg, distill=distill)
