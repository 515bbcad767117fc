"""`bbl dump-logits`: run the teachers once over every training window and write their soft targets to Zarr; the
one dump driver of every cache kind.

The driver asks the kind's operations (`bbl.cache.compute.registry.operations_of(config.targets)`) for its input
checks, teachers, attributes and chunk computer, and does the rest itself: the output's lock, the store (rank 0
creates it, the other ranks open it), resume (per-chunk done flags), the batch size, the static arrays, and two
overlapped stages: every torch op of a chunk on the main thread (`compute_targets`), the stored form, compression
and writing of the previous chunk on the writer thread (`stored_form`), so the bytes are those of a sequential
dump. Sharded by rank under torchrun (rank r writes chunks r, r + world, ...). The settings are a
`bbl.cache.dump_config.DumpConfig` (or the kind's subclass).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from bbl.cache.compute.base import ChunkComputer, dump_attrs, dump_windows, teacher_dtype
from bbl.cache.compute.ensemble import EnsembleChunkComputer, RawChunk
from bbl.cache.compute.registry import operations_of
from bbl.cache.dump_config import DumpConfig
from bbl.cache.format import CPU_BATCH_SIZE
from bbl.cache.inspect import cache_stats
from bbl.cache.reader import CacheReader
from bbl.cache.store import cache_location, claim_cache, group_exists, open_group
from bbl.cache.writer import CacheWriter
from bbl.data.prepared import PreparedData
from bbl.errors import BblError
from bbl.models.teachers import load_teachers
from bbl.runtime import barrier, finish_distributed, init_distributed, rank, world_size

__all__ = ["ChunkComputer", "DumpConfig", "EnsembleChunkComputer", "RawChunk", "dump_attrs", "dump_logits",
           "dump_windows", "resolve_batch_size", "teacher_dtype", "write_dump"]


AUTO_BATCH_START = 256
"""The first batch size tried on a GPU when `--batch-size` is not given; lowered until one forward pass fits."""


def resolve_batch_size(config: DumpConfig, computer: ChunkComputer, out, *, device: str, overwrite: bool = False,
                       log=print) -> DumpConfig:
    """`config` with a concrete `batch_size`: as given; else a resumed store's own (so its chunks stay alike); else
    `CPU_BATCH_SIZE` off a GPU or for a computer that cannot probe (`ChunkComputer.can_probe`: pass --batch-size on
    a GPU); else the first of AUTO_BATCH_START, lowered 10% at a time, whose teacher forward
    and ensemble fit the GPU's memory, probed on the dump's first windows with accelerate's
    `find_executable_batch_size` (it lowers the size on an out-of-memory error and frees the cache between
    tries); under torchrun the smallest over the ranks.

    Raises:
        RuntimeError: not even one window fits (accelerate: "No executable batch size found").
    """
    if config.batch_size is not None:
        return config
    if group_exists(out) and not overwrite:  # a store being replaced may be damaged: never read it
        recorded = open_group(out, "r").attrs.get("dump_batch_size")
        if recorded:
            return config.resolved(int(recorded))
    if not (str(device).startswith("cuda") and computer.can_probe):
        return config.resolved(CPU_BATCH_SIZE)
    size = largest_fitting_batch(computer.probe, AUTO_BATCH_START)
    if world_size() > 1:  # every rank writes chunks of one store: all use the smallest rank's size
        import torch
        import torch.distributed as dist

        agreed = torch.tensor([size], device=device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        size = int(agreed.item())
    log(f"--batch-size {size} (the largest that fits the GPU's memory, tried from {AUTO_BATCH_START} down)")
    return config.resolved(size)


def largest_fitting_batch(run, start: int) -> int:
    """The first size from `start` down, as accelerate's `find_executable_batch_size` lowers it (x 0.9 per try),
    for which `run(batch_size)` raises no out-of-memory error; other errors propagate."""
    from accelerate.utils import find_executable_batch_size

    @find_executable_batch_size(starting_batch_size=start)
    def fits(batch_size):
        run(batch_size)
        return batch_size

    return fits()


def dump_logits(teacher_dirs: list[Path], data_dir: Path, out, config: DumpConfig | None = None, *,
                device: str = "cpu", device_map: str | None = None, overwrite: bool = False, progress: bool = True,
                log=print) -> dict:
    """Dump the teachers' soft targets of every window of `config.split` into the cache at `out`, as the kind
    `config.targets` stores them (a registered `CacheKind` and its `KindOperations`).

    The built-in kinds: topk (top_k ids, log-probs, tail mass), sampled (`num_samples` ids drawn from p_T per
    position), hybrid (both: top_k exact plus `num_samples` draws from the tail), cross_tokenizer (teachers of
    another tokenizer, `bbl.cache.compute.cross_tokenizer.CrossTokenizerConfig`). Draws are seeded by (`seed`,
    chunk), so a resumed dump is byte-identical. `max_windows`/`seed` select the same fixed window subset
    `training.max_train_windows`/`training.data_seed` do. Returns the summary dict (windows, tokens, bytes,
    bytes_per_token, the kind's statistics, seconds) on rank 0, {} on the others.

    Raises:
        BblError: (before anything is written) an unknown kind, fp16 off a GPU, the kind's input checks; then bad
            teachers (see `load_teachers`), teachers not trained on this data's tokenizer (same-tokenizer kinds),
            top_k > vocab, out holding a cache of other settings, NaN/inf logits (names the window), disk full
            (store left resumable, not complete).
    """
    config = config or DumpConfig()
    ops = operations_of(config.targets)
    config = ops.settle(config)
    if config.dtype == "fp16" and not str(device).startswith("cuda"):
        raise BblError(f"--dtype fp16 needs a GPU (device {device}); use --dtype bf16 or fp32 on CPU")
    ops.check_inputs(list(teacher_dirs), Path(data_dir), config)
    out = cache_location(out)
    with claim_cache(out, overwrite=overwrite, lock=rank() == 0, log=log):
        return _dump(ops, list(teacher_dirs), data_dir, out, config, device=device, device_map=device_map,
                     overwrite=overwrite, progress=progress, log=log)


def _dump(ops, teacher_dirs, data_dir, out, config: DumpConfig, *, device, device_map, overwrite, progress,
          log) -> dict:
    """`dump_logits`'s work, under the cache's lock: the kind's teachers, computer and attributes, then
    `write_dump`."""
    device = init_distributed(device)
    data = PreparedData(data_dir, check_hashes=True)
    teachers, infos = load_teachers(teacher_dirs, device, seq_len=ops.teacher_seq_len(config),
                                    dtype=teacher_dtype(config), device_map=device_map)
    ops.check_teachers(teacher_dirs, infos, data, config)
    windows = dump_windows(data, config)
    computer = ops.computer(teachers, infos, windows, config, data=data, teacher_dirs=teacher_dirs, device=device)
    config = resolve_batch_size(config, computer, out, device=device, overwrite=overwrite,
                                log=log if rank() == 0 else lambda *_: None)
    computer.with_config(config)
    attrs = ops.attrs(config, data, infos, teacher_dirs=teacher_dirs, device=device, data_dir=data_dir)
    if device_map is not None:
        attrs["dump_device_map"] = str(device_map)

    def with_store_dtypes(writer: CacheWriter) -> ChunkComputer:
        computer.use_store({name: writer.group[name] for name in writer.arrays})
        return computer

    return write_dump(out, attrs, len(windows), config.chunk_windows, with_store_dtypes, overwrite=overwrite,
                      progress=progress, log=log, done_line=lambda summary: ops.done_line(out, summary))


def write_dump(out, attrs: dict, num_windows: int, chunk_windows: int, make_computer, *, overwrite: bool,
               progress: bool, log, done_line) -> dict:
    """The steps every dump kind shares once its teachers are loaded: open the store (rank 0 creates it, the other
    ranks open it after the barrier), return at once if it is complete, write the computer's static arrays
    (`static_arrays()`), compute and write this rank's missing chunks, then on rank 0 mark the
    store complete and record its summary.

    Args:
        attrs: the store's attributes (`dump_attrs`, plus a kind's own).
        make_computer: CacheWriter -> the chunk computer (it may need the store's dtypes).
        done_line: summary -> the closing log line.
    Returns:
        The summary (`cache_stats` plus seconds and windows_per_s, rank 0's own windows) on rank 0, {} on the
        others.
    """
    kw = {"attrs": attrs, "num_windows": num_windows, "chunk_windows": chunk_windows}
    writer = CacheWriter(out, overwrite=overwrite, **kw) if rank() == 0 else None
    barrier()
    writer = writer or CacheWriter(out, create=False, **kw)
    computer = make_computer(writer)
    done = writer.done_chunks()
    if done.all() and writer.group.attrs.get("complete"):  # a finished cache of these settings: touch nothing
        barrier()
        summary = dict(writer.group.attrs.get("summary") or {})
        if rank() == 0:
            log(f"{out}: a complete cache of these settings already; nothing to do (--overwrite recomputes it)")
        if world_size() > 1:
            finish_distributed()
        return summary if rank() == 0 else {}
    if rank() == 0:
        writer.write_static(computer.static_arrays())
        if done.any():
            log(f"resuming {out}: {int(done.sum())}/{writer.num_chunks} chunks already written")
    todo = [c for c in range(writer.num_chunks) if c % world_size() == rank() and not done[c]]
    t0 = time.perf_counter()
    dumped = _compute_and_write(computer, writer, todo, out, progress=progress)
    barrier()
    summary = {}
    if rank() == 0:
        seconds = time.perf_counter() - t0
        writer.finalize()
        summary = cache_stats(CacheReader(out), sample_chunks=8)
        summary["seconds"] = round(seconds, 2)
        summary["windows_per_s"] = round(dumped / max(seconds, 1e-9), 1)  # rank 0's own windows
        writer.group.attrs.update({"summary": summary})
        log(done_line(summary))
    if world_size() > 1:
        finish_distributed()
    return summary


def _compute_and_write(computer: ChunkComputer, writer: CacheWriter, todo: list[int], out, *, progress: bool) -> int:
    """Compute the chunks `todo` in order while a writer thread turns the previous ones into their stored form
    (`ChunkComputer.stored_form`), compresses and writes them; returns the windows dumped.

    Raises:
        BblError: a write failed (disk full: the store is left resumable), or what computing a chunk raised.
    """
    from tqdm.auto import tqdm

    errors: list[BaseException] = []
    q: queue.Queue = queue.Queue(maxsize=3)

    def write_loop():
        while (item := q.get()) is not None:
            if errors:
                continue
            try:
                writer.write_chunk(computer.stored_form(item))
            except OSError as e:
                errors.append(BblError(f"{out}: write failed at chunk {item.index} ({e.strerror or e}); free disk "
                                       f"space and re-run the same command to resume (the cache is not complete)"))
            except BaseException as e:  # surfaced in the main thread
                errors.append(e)

    thread = threading.Thread(target=write_loop, name="bbl-cache-writer", daemon=True)
    thread.start()
    world = world_size()
    bar = tqdm(total=len(todo) * computer.config.chunk_windows, unit="win", smoothing=0.1, disable=not progress,
               desc=f"dump rank {rank()}" if world > 1 else "dump")
    dumped = 0
    try:
        for c in todo:
            if errors:
                break
            raw = computer.compute_targets(c)  # the sort, rounding and casts run on the writer thread
            q.put(raw)
            bar.update(len(raw.input_ids))
            dumped += len(raw.input_ids)
    finally:
        q.put(None)
        thread.join()
        bar.close()
    if errors:
        raise errors[0]
    return dumped
