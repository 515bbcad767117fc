"""`bbl cache repair`: recompute exactly the damaged chunks of a cache with the teachers it was dumped with.

Damage is what `CacheReader.scan` finds: a missing chunk key (zarr would read fill values), a chunk failing its
crc32c or decompression, a chunk never marked done. Each damaged chunk is recomputed with the recorded teachers
(their weights sha256 must match) in the recorded order, on the same windows, with the dump's recorded settings
(`DumpConfig.from_attrs` of the kind's config class) and the kind's chunk computer (`bbl.cache.compute`), so the
repaired store equals a clean dump array for array. A cache with no damage is not opened for writing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bbl.cache.compute.base import dump_windows, teacher_dtype
from bbl.cache.compute.registry import operations_of
from bbl.cache.reader import CacheReader
from bbl.cache.store import cache_lock
from bbl.cache.writer import CacheWriter
from bbl.data.prepared import MANIFEST, PreparedData
from bbl.data.tokenizer import check_same_tokenizer
from bbl.errors import BblError
from bbl.models.teachers import load_teachers


def _teachers_in_recorded_order(teachers, infos, recorded: list[dict], path) -> tuple[list, list]:
    """Match loaded teachers to the cache's by weights sha256, in the cache's order (the logit mean's sum order).

    Raises:
        BblError: the given teachers' weights are not exactly the recorded ones.
    """
    by_weights = {tuple(sorted(i["weights_sha256"].values())): (t, i) for t, i in zip(teachers, infos, strict=True)}
    want = [tuple(sorted(r["weights_sha256"].values())) for r in recorded]
    if sorted(by_weights) != sorted(want):
        names = " ".join(f"--teacher {r['path']}" for r in recorded)
        raise BblError(f"{path}: the given teachers' weights differ from those the cache was dumped with "
                       f"(weights sha256); pass the cache's own teachers: {names}")
    pairs = [by_weights[w] for w in want]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def repair_cache(path, teacher_dirs: list[Path], *, data_dir: Path | None = None, device: str = "cpu",
                 device_map: str | None = None, progress: bool = True, log=print) -> dict:
    """Find and recompute the damaged chunks of the cache at `path`; returns {"damaged": [...], "repaired": [...]}.

    Args:
        path: the cache (a local path or a zarr store).
        teacher_dirs: the teachers the cache records (any order; matched by weights sha256).
        data_dir: the prepared dir of the dump; default the `data_dir` the cache records.
        device: where the teachers run; the dump's device (attribute `dump_device`) gives byte-identical results.
        device_map: accelerate placement of each teacher (`load_teachers`); None: the dump's (`dump_device_map`).
    Raises:
        BblError: not a cache, teachers or data differing from the recorded ones, damage left after the repair,
            a cache another process is writing.
    """
    with cache_lock(path):
        return _repair(path, teacher_dirs, data_dir=data_dir, device=device, device_map=device_map,
                       progress=progress, log=log)


def _repair(path, teacher_dirs, *, data_dir, device, device_map, progress, log) -> dict:
    """`repair_cache`'s work, under the cache's lock."""
    reader = CacheReader(path, allow_incomplete=True)
    attrs = reader.attrs
    damaged = reader.scan(progress=progress)
    if not damaged:
        log(f"{path}: no damaged chunk; nothing to repair (the store was not modified)")
        return {"damaged": [], "repaired": []}
    chunks = sorted({p.chunk for p in damaged})
    for p in damaged:
        log(f"damaged: {p}")
    ops = operations_of(reader.targets, subject=f"{path}: targets")  # the kind computes its own chunks
    config = ops.config_class.from_attrs(attrs)
    teachers, infos = load_teachers(teacher_dirs, device, seq_len=ops.teacher_seq_len(config),
                                    dtype=teacher_dtype(config),
                                    device_map=device_map or attrs.get("dump_device_map"))
    teachers, infos = _teachers_in_recorded_order(teachers, infos, attrs.get("teachers", []), path)
    data_dir = Path(data_dir or attrs.get("data_dir", ""))
    if not (data_dir / MANIFEST).is_file():
        raise BblError(f"{data_dir}: not the prepared dir this cache was dumped from; pass --data PREPARED_DIR")
    data = PreparedData(data_dir, check_hashes=True)
    fix = "pass the --data it was dumped from"
    check_same_tokenizer(data.tokenizer_fingerprint(), attrs.get("tokenizer_fingerprint"), subject=f"{data_dir}:",
                         reference="the cache's", fix=fix)
    if data.stream_sha256(config.split) != attrs.get("train_stream_sha256"):
        raise BblError(f"{data_dir}: {config.split} stream differs from the cache's; {fix}")
    if str(device).split(":")[0] != attrs.get("dump_device", "cpu"):
        log(f"warning: the cache was dumped on {attrs.get('dump_device')}, repairing on {device}: values may differ "
            f"in the last bit from a clean dump")
    windows = dump_windows(data, config)
    if len(windows) != reader.num_windows:
        raise BblError(f"{path}: holds {reader.num_windows} windows, the data gives {len(windows)}; {fix}")
    ops.check_teachers(teacher_dirs, infos, data, config, recorded=attrs)
    writer = CacheWriter(path, attrs=attrs, num_windows=reader.num_windows, chunk_windows=reader.chunk_windows,
                         create=False)
    computer = ops.computer(teachers, infos, windows, config, data=data, teacher_dirs=teacher_dirs, device=device)
    computer.use_store(reader.arrays)
    if any(p.array in reader.static for p in damaged):
        writer.write_static(computer.static_arrays())
    chunks = sorted({p.chunk for p in damaged if p.array not in reader.static})
    for c in chunks:
        writer.write_chunk(computer.compute(c))
        log(f"repaired chunk {c} (rows {reader.rows_of(c)[0]}-{reader.rows_of(c)[1]})")
    left = CacheReader(path, allow_incomplete=True).scan()
    if left:
        raise BblError(f"{path}: still damaged after repair: {left[0]}; check the disk or the store and retry")
    if np.asarray(writer.done_chunks()).all():
        writer.finalize()
    return {"damaged": [str(p) for p in damaged], "repaired": chunks}
