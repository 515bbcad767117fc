"""`bbl dump-logits`: run the teachers once over every training window and write the ensemble's soft targets to
Zarr.

Per chunk of windows: each teacher's logits (fp32) → logit mean (the paper's ensemble, `bbl.models.ensemble`) →
divide by the temperature → top-k ids and log-probs, plus the log of the tail mass by logsumexp over the other ids
(and/or ids drawn from p_T). For GPT-2 and LLaMA teachers the logits are never materialised per teacher: their
last hidden states go through `ensemble_targets_from_hidden`, a chunk of positions at a time. Two stages overlap:
every torch op of a chunk (the teachers' forwards, then the ensemble's targets, batch after batch) on the main
thread, and the stored form (sort, rounding, counts), compression and writing of the previous chunk on the writer
thread; so the bytes are those of a sequential dump. Resumable (per-chunk done flags) and sharded by rank
under torchrun (rank r writes chunks r, r + world, ...). The settings are a `bbl.cache.format.DumpConfig`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from pathlib import Path

import numpy as np

from bbl import __version__
from bbl.cache.format import (
    CPU_BATCH_SIZE,
    TOPK_ORDER,
    ChunkBatch,
    DumpConfig,
    count_draws,
    quantize_logprobs,
    select_positions,
    sort_by_id,
)
from bbl.cache.inspect import cache_stats
from bbl.cache.reader import CacheReader
from bbl.cache.store import cache_location, claim_cache, group_exists, open_group
from bbl.cache.writer import CacheWriter
from bbl.data.prepared import PreparedData
from bbl.data.tokenizer import check_same_tokenizer
from bbl.data.windows import TokenWindows, select_train_windows
from bbl.errors import BblError
from bbl.models.ensemble import ensemble_targets, ensemble_targets_from_hidden
from bbl.models.teachers import Head, load_teachers, teacher_forward
from bbl.runtime import barrier, finish_distributed, init_distributed, rank, world_size


class ChunkComputer:
    """Computes one chunk of the cache: the teachers' forward passes, the ensemble's targets and the stored form.

    Deterministic for a given (teachers, windows, `DumpConfig`, device): `bbl cache repair` recomputes a damaged
    chunk with the config and device recorded by the dump, so the repaired store equals a clean one.
    """

    def __init__(self, teachers, infos, windows: TokenWindows, config: DumpConfig, *, device: str, id_dtype,
                 vocab_size: int):
        self.teachers, self.infos, self.windows, self.config = teachers, infos, windows, config
        self.device, self.id_dtype, self.vocab_size = device, id_dtype, vocab_size
        self._heads: dict = {}
        import torch

        for model, info in zip(teachers, infos, strict=True):  # the chunked path checks hidden states, not logits
            head = model.get_output_embeddings()
            if head is not None and not bool(torch.isfinite(head.weight).all()):
                raise BblError(f"{info['path']}: NaN/inf logits on every {config.split} window (the LM head weight "
                               f"is not finite); the teacher checkpoint is broken, retrain or pick an earlier checkpoint")

    def static_arrays(self) -> dict:
        """Arrays written once per cache: none for the built-in kinds (a registered kind's computer returns its
        own, e.g. the cross-tokenizer vocabulary map)."""
        return {}

    def rows(self, c: int) -> range:
        return range(c * self.config.chunk_windows, min((c + 1) * self.config.chunk_windows, len(self.windows)))

    def generator(self, c: int):
        """The draws' generator of chunk `c`: seeded by (sample_seed, c) alone, so any rank, a resumed dump and a
        repair draw the same ids for that chunk."""
        import torch

        seed = int(np.random.SeedSequence([self.config.seed, c]).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    def draw_settings(self, c: int) -> dict:
        """What `batch_targets` stores for chunk `c`: the targets kind, k, the draws and their generator."""
        cfg = self.config
        return {"targets": cfg.targets, "top_k": cfg.top_k, "num_samples": cfg.num_samples,
                "generator": self.generator(c) if cfg.targets != "topk" else None, "entropy": cfg.kd_fraction < 1}

    def batch_targets(self, ids, kind: dict, *, first_row: int = 0) -> dict:
        """The ensemble's targets of one batch of windows ((B, S) int64 ids) on the dump's device:
        `batch_ensemble` of `batch_forward`. Raises as `batch_forward`."""
        return self.batch_ensemble(self.batch_forward(ids, first_row=first_row), kind)

    def _autocast(self):
        import torch

        cuda = self.device.startswith("cuda") and self.config.dtype == "auto"
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def batch_forward(self, ids, *, first_row: int = 0) -> tuple[list, list]:
        """The teachers' forward passes of one batch: (per teacher its last hidden states (B, S, H) and `Head`,
        or its (B, S, V) logits and None), on the dump's device.

        A device-mapped teacher (`load_teachers(device_map=...)`) is fed at its first layer's device; its hidden
        states (and, once, its LM head) are brought to the dump's device, where the ensemble is formed.

        Raises:
            BblError: a teacher produced NaN/inf logits (names the teacher and the window).
        """
        import torch

        cfg = self.config
        outputs, heads = [], []
        with torch.inference_mode():
            for t, (model, info) in enumerate(zip(self.teachers, self.infos, strict=True)):
                mapped = getattr(model, "hf_device_map", None) is not None
                with self._autocast():
                    out, head = teacher_forward(model, ids.to(model.device if mapped else self.device), self.vocab_size)
                bad = ~torch.isfinite(out).flatten(1).all(1)
                if bad.any():
                    w = int(self.windows.indices[first_row + int(bad.nonzero()[0])])
                    fix = ("fp16 overflows: use --dtype bf16 or fp32" if cfg.dtype == "fp16" else
                           "the teacher checkpoint is broken, retrain or pick an earlier checkpoint")
                    raise BblError(f"{info['path']}: NaN/inf logits on {cfg.split} window {w}; {fix}")
                if mapped:
                    out, head = out.to(self.device), self._head_on_device(t, head)
                outputs.append(out)
                heads.append(head)
        return outputs, heads

    def batch_ensemble(self, forward: tuple[list, list], kind: dict) -> dict:
        """The ensemble's targets (`ensemble_targets_from_hidden`, chunked: no (B, S, V) tensor per teacher; or
        `ensemble_targets` of logits) from `batch_forward`'s result, moved to the CPU. Thread-safe for one caller
        at a time: inference mode and autocast are entered here (they are per thread)."""
        import torch

        outputs, heads = forward
        with torch.inference_mode(), self._autocast():
            if all(h is not None for h in heads):
                out = ensemble_targets_from_hidden(outputs, heads, temperature=self.config.temperature, **kind)
            else:
                out = ensemble_targets([o.float() for o in outputs], temperature=self.config.temperature, **kind)
            return {k: t.cpu() for k, t in out.items()}

    def _head_on_device(self, t: int, head):
        """Teacher `t`'s LM head on the dump's device, moved once (a device-mapped teacher's head sits on its last
        layer's device)."""
        if head is None:
            return None
        if t not in self._heads:
            self._heads[t] = Head(head.weight.to(self.device),
                                  None if head.bias is None else head.bias.to(self.device))
        return self._heads[t]

    def probe(self, batch_size: int) -> None:
        """One `batch_targets` of `batch_size` windows (the first ones, repeated as needed): what a real batch of
        that size costs in memory (`resolve_batch_size`)."""
        import torch

        n = len(self.windows)
        ids = np.stack([self.windows.window(i % n) for i in range(batch_size)])
        self.batch_targets(torch.from_numpy(ids), self.draw_settings(0))

    def compute(self, c: int) -> ChunkBatch:
        """Chunk `c` as a `ChunkBatch` (ids sorted by id, log-probs on the `logprob_step` grid): `stored_form` of
        `compute_targets`.

        Raises:
            BblError: a teacher produced NaN/inf logits (names the teacher and the window).
        """
        return self.stored_form(self.compute_targets(c))

    def compute_targets(self, c: int) -> RawChunk:
        """Chunk `c`'s exact targets: the teachers' forward passes and the ensemble's top-k / draws (the part that
        needs the teachers; the dump runs it on the main thread). Raises as `compute`."""
        import torch

        rows = self.rows(c)
        ids_np = np.stack([self.windows.window(i) for i in rows])
        cfg = self.config
        kind = self.draw_settings(c)
        parts = []
        # Every torch op of a chunk runs on this thread, one batch after another. An ensemble overlapped with the
        # next batch's forward on a worker thread was tried: two threads sharing torch's intra-op pool let a
        # reduction (the tail's logsumexp) split differently from run to run, so a resumed or repaired chunk was
        # not always byte-identical (caught by the fault-injection test). The stored form (sort, rounding, casts)
        # and the compression still run on the writer thread, overlapped with the next chunk.
        for b in range(0, len(rows), cfg.batch_size):
            parts.append(self.batch_targets(torch.from_numpy(ids_np[b:b + cfg.batch_size]), kind, first_row=rows[b]))
        return RawChunk(c, ids_np, {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]})

    def stored_form(self, raw: RawChunk) -> ChunkBatch:
        """The `ChunkBatch` the cache stores from a chunk's exact targets: ids sorted by id, log-probs rounded to
        the `logprob_step` grid, the draws as (distinct ids, counts) under `sample_counts`. Numpy only and
        deterministic, so the dump runs it on its writer thread, overlapped with the next chunk's forward."""
        c, ids_np, arrays = raw.index, raw.input_ids, dict(raw.arrays)
        rows = self.rows(c)
        mask = None
        if "entropy" in arrays:  # --kd-fraction: targets only at the selected positions, zeros elsewhere
            mask = select_positions(arrays.pop("entropy"), self.config.kd_fraction)
            for name, value in arrays.items():
                arrays[name] = np.where(mask.reshape(mask.shape + (1,) * (value.ndim - 2)), value, 0)
        batch = ChunkBatch(index=c, input_ids=ids_np.astype(self.id_dtype),
                           window_idx=self.windows.indices[rows.start:rows.stop].astype(np.int64))
        if "topk_ids" in arrays:
            top_ids, top_lp = sort_by_id(arrays["topk_ids"], arrays["topk_logprobs"])
            batch.topk_ids = top_ids.astype(self.id_dtype)
            batch.topk_logprobs = quantize_logprobs(top_lp, self.config.logprob_step)
            batch.tail_logprob = arrays["tail_logprob"].astype(np.float32)
        if "sample_ids" in arrays:
            batch.sample_ids = arrays["sample_ids"].astype(self.id_dtype)
            if self.config.sample_counts:
                batch.sample_ids, batch.sample_counts = count_draws(batch.sample_ids)
        batch.kd_mask = mask
        return batch


@dataclasses.dataclass
class RawChunk:
    """One chunk's exact targets as `ChunkComputer.compute_targets` returns them: index, the windows' ids (C, S)
    and the ensemble's arrays (numpy; top-k by decreasing probability, fp32 log-probs, draws ascending)."""

    index: int
    input_ids: np.ndarray
    arrays: dict


def teacher_dtype(config: DumpConfig) -> str:
    """The precision the teachers are loaded in: `config.dtype`, fp32 for auto."""
    return "fp32" if config.dtype == "auto" else config.dtype


def dump_attrs(config: DumpConfig, data: PreparedData, infos: list[dict], *, device: str, data_dir: Path) -> dict:
    """The cache's attributes: the dump's settings (`dump_config` and the keys every reader uses), its teachers,
    and the hashes of the data it was computed from (docs/cache-format.md)."""
    attrs = {
        "temperature": float(config.temperature), "top_k": int(config.top_k), "seq_len": int(config.seq_len),
        "vocab_size": int(data.vocab_size), "ensemble": "logit_mean", "teachers": infos,
        "teachers_fingerprint": sorted(w for i in infos for w in i["weights_sha256"].values()),
        "tokenizer_fingerprint": data.tokenizer_fingerprint(), "tokenizer_sha256": data.tokenizer_sha256,
        "train_stream_sha256": data.stream_sha256(config.split), "split": config.split,
        "window_selection": {"max_windows": config.max_windows, "seed": config.seed},
        "logprob_step": config.logprob_step,
        "topk_order": TOPK_ORDER, "dump_batch_size": int(config.batch_size), "dump_device": str(device).split(":")[0],
        "bbl_version": __version__, "data_dir": str(Path(data_dir).resolve()), "dump_config": config.to_dict(),
    }
    if config.targets != "topk":  # a top-k cache keeps exactly the settings it had before issue 15
        attrs.update(targets=config.targets, num_samples=int(config.num_samples), sample_seed=int(config.seed))
    if config.dtype != "auto":  # part of the settings a resumed dump must match; absent for the default
        attrs["dump_dtype"] = config.dtype
    for option in ("delta_ids", "sample_counts"):  # storage options (issue 33): recorded only when asked for
        if getattr(config, option):
            attrs[option] = True
    if config.kd_fraction < 1:
        attrs["kd_fraction"] = float(config.kd_fraction)
    return attrs


def dump_windows(data: PreparedData, config: DumpConfig) -> TokenWindows:
    """The windows a dump covers (`select_train_windows`: the same rule as the student's `max_train_windows`).

    Raises:
        BblError: the stream holds no full window.
    """
    windows = select_train_windows(data.stream(config.split), config.seq_len, config.max_windows, seed=config.seed)
    if len(windows) == 0:
        raise BblError(f"{data.path}: the {config.split} stream has fewer than --seq-len {config.seq_len} tokens; "
                       f"prepare more text")
    return windows


AUTO_BATCH_START = 256
"""The first batch size tried on a GPU when `--batch-size` is not given; lowered until one forward pass fits."""


def resolve_batch_size(config: DumpConfig, computer: ChunkComputer, out, *, overwrite: bool = False,
                       log=print) -> DumpConfig:
    """`config` with a concrete `batch_size`: as given; else a resumed store's own (so its chunks stay alike); else
    `CPU_BATCH_SIZE` off a GPU; else the first of AUTO_BATCH_START, lowered 10% at a time, whose teacher forward
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
            return dataclasses.replace(config, batch_size=int(recorded))
    if not str(computer.device).startswith("cuda"):
        return dataclasses.replace(config, batch_size=CPU_BATCH_SIZE)
    size = largest_fitting_batch(computer.probe, AUTO_BATCH_START)
    if world_size() > 1:  # every rank writes chunks of one store: all use the smallest rank's size
        import torch
        import torch.distributed as dist

        agreed = torch.tensor([size], device=computer.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        size = int(agreed.item())
    log(f"--batch-size {size} (the largest that fits the GPU's memory, tried from {AUTO_BATCH_START} down)")
    return dataclasses.replace(config, batch_size=size)


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
    """Dump the ensemble's soft targets of every window of `config.split` into the cache at `out`.

    `config.targets` is the kind stored: topk (top_k ids, log-probs, tail mass), sampled (`num_samples` ids drawn
    from p_T per position) or hybrid (both: top_k exact plus `num_samples` draws from the tail). Draws are seeded
    by (`seed`, chunk), so a resumed dump is byte-identical. `max_windows`/`seed` select the same fixed window
    subset `training.max_train_windows`/`training.data_seed` do. Returns the summary dict (windows, tokens, bytes,
    bytes_per_token, mean_tail_mass, seconds) on rank 0, {} on the others.

    Raises:
        BblError: bad teachers (see `load_teachers`), teachers not trained on this data's tokenizer,
            top_k > vocab, out holding a cache of other settings, NaN/inf logits (names the window), disk full
            (store left resumable, not complete).
    """
    config = config or DumpConfig()
    if config.dtype == "fp16" and not str(device).startswith("cuda"):
        raise BblError(f"--dtype fp16 needs a GPU (device {device}); use --dtype bf16 or fp32 on CPU")
    out = cache_location(out)
    with claim_cache(out, overwrite=overwrite, lock=rank() == 0, log=log):
        return _dump(teacher_dirs, data_dir, out, config, device=device, device_map=device_map, overwrite=overwrite,
                     progress=progress, log=log)


def _dump(teacher_dirs, data_dir, out, config: DumpConfig, *, device, device_map, overwrite, progress, log) -> dict:
    """`dump_logits`'s work, under the cache's lock."""
    device = init_distributed(device)
    data = PreparedData(data_dir, check_hashes=True)
    teachers, infos = load_teachers(teacher_dirs, device, seq_len=config.seq_len, dtype=teacher_dtype(config),
                                    device_map=device_map)
    check_same_tokenizer(infos[0]["tokenizer_fingerprint"], data.tokenizer_fingerprint(),
                         subject=f"{teacher_dirs[0]}: teacher", reference=data.tokenizer_dir,
                         fix="pass the --data the teachers were trained on, or --cross-tokenizer to store the "
                             "teachers' targets in their own vocabulary")
    if config.top_k > data.vocab_size:
        raise BblError(f"--topk {config.top_k} exceeds the vocabulary ({data.vocab_size}); use --topk <= "
                       f"{data.vocab_size}")
    windows = dump_windows(data, config)
    computer = ChunkComputer(teachers, infos, windows, config, device=device, id_dtype=np.int64,
                             vocab_size=data.vocab_size)
    config = computer.config = resolve_batch_size(config, computer, out, overwrite=overwrite,
                                                  log=log if rank() == 0 else lambda *_: None)
    attrs = dump_attrs(config, data, infos, device=device, data_dir=data_dir)
    if device_map is not None:
        attrs["dump_device_map"] = str(device_map)

    def with_store_dtype(writer: CacheWriter) -> ChunkComputer:
        computer.id_dtype = writer.group["input_ids"].dtype
        return computer

    def done_line(summary: dict) -> str:
        tail = f", mean tail mass {summary['mean_tail_mass']:.4f}" if "mean_tail_mass" in summary else ""
        return (f"dumped {out}: {summary['windows']:,} windows, {summary['tokens']:,} tokens, "
                f"{summary['bytes']:,} bytes ({summary['bytes_per_token']:.1f} B/token){tail}, "
                f"{summary['seconds']:.1f}s")

    return write_dump(out, attrs, len(windows), config.chunk_windows, with_store_dtype, overwrite=overwrite,
                      progress=progress, log=log, done_line=done_line)


def write_dump(out, attrs: dict, num_windows: int, chunk_windows: int, make_computer, *, overwrite: bool,
               progress: bool, log, done_line) -> dict:
    """The steps every dump kind shares once its teachers are loaded: open the store (rank 0 creates it, the other
    ranks open it after the barrier), return at once if it is complete, write the computer's static arrays (a
    registered kind's, `static_arrays()`), compute and write this rank's missing chunks, then on rank 0 mark the
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
