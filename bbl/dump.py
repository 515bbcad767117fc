"""`bbl dump-logits`: run the teachers once over every training window and write the ensemble's top-k to Zarr.

Per chunk of windows: each teacher's logits (fp32) → logit mean (the paper's ensemble) → divide by the
temperature → top-k ids and log-probs, plus the log of the tail mass by logsumexp over the other ids. For GPT-2
and LLaMA teachers the logits are never materialised per teacher: their last hidden states go through
`ensemble_topk_from_hidden`, which projects, sums and reduces a chunk of positions at a time. A writer
thread compresses and writes while the next chunk is computed. Resumable (per-chunk done flags) and sharded by
rank under torchrun (rank r writes chunks r, r + world, ...).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np

from bbl import __version__
from bbl.cache import DEFAULT_CHUNK_WINDOWS, LOGPROB_STEP, TOPK_ORDER, CacheReader, CacheWriter, ChunkBatch
from bbl.data import PreparedData
from bbl.errors import BblError
from bbl.stores import cache_location
from bbl.teachers import (
    ensemble_targets,
    ensemble_targets_from_hidden,
    ensemble_topk,
    load_teachers,
    teacher_forward,
)
from bbl.windows import TokenWindows, window_subset

__all__ = ["ChunkComputer", "dump_logits", "ensemble_topk", "load_teachers", "sort_by_id"]


def sort_by_id(topk_ids: np.ndarray, topk_logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each position's k entries by increasing id (the cache's `TOPK_ORDER`, which compresses best)."""
    order = np.argsort(topk_ids, axis=-1, kind="stable")
    return np.take_along_axis(topk_ids, order, -1), np.take_along_axis(topk_logprobs, order, -1)


def _quantize_logprobs(logprobs: np.ndarray, step: float = LOGPROB_STEP) -> np.ndarray:
    """Round to multiples of `step` (what the store's FixedScaleOffset filter keeps), as float16."""
    return (np.round(logprobs / step) * step).astype(np.float16)


class ChunkComputer:
    """Computes one chunk of the cache: the teachers' forward passes, the ensemble's top-k and the stored form.

    Deterministic for a given (teachers, windows, batch_size, device): `bbl cache repair` recomputes a damaged
    chunk with the batch size and device recorded by the dump, so the repaired store equals a clean one.
    """

    def __init__(self, teachers, infos, windows: TokenWindows, *, top_k: int, temperature: float, batch_size: int,
                 chunk_windows: int, device: str, id_dtype, split: str = "train", targets: str = "topk",
                 num_samples: int = 0, sample_seed: int = 0):
        self.teachers, self.infos, self.windows = teachers, infos, windows
        self.top_k, self.temperature, self.batch_size = top_k, temperature, batch_size
        self.targets, self.num_samples, self.sample_seed = targets, num_samples, sample_seed
        self.chunk_windows, self.device, self.id_dtype, self.split = chunk_windows, device, id_dtype, split
        import torch

        for model, info in zip(teachers, infos, strict=True):  # the chunked path checks hidden states, not logits
            head = model.get_output_embeddings()
            if head is not None and not bool(torch.isfinite(head.weight).all()):
                raise BblError(f"{info['path']}: NaN/inf logits on every {split} window (the LM head weight is not "
                               f"finite); the teacher checkpoint is broken, retrain or pick an earlier checkpoint")

    def rows(self, c: int) -> range:
        return range(c * self.chunk_windows, min((c + 1) * self.chunk_windows, len(self.windows)))

    def generator(self, c: int):
        """The draws' generator of chunk `c`: seeded by (sample_seed, c) alone, so any rank, a resumed dump and a
        repair draw the same ids for that chunk."""
        import torch

        seed = int(np.random.SeedSequence([self.sample_seed, c]).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    def compute(self, c: int) -> ChunkBatch:
        """Chunk `c` as a `ChunkBatch` (ids sorted by id, log-probs on the `LOGPROB_STEP` grid).

        Raises:
            BblError: a teacher produced NaN/inf logits (names the teacher and the window).
        """
        import torch

        rows = self.rows(c)
        cuda = self.device.startswith("cuda")
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
        ids_np = np.stack([self.windows.window(i) for i in rows])
        kind = {"targets": self.targets, "top_k": self.top_k, "num_samples": self.num_samples,
                "generator": self.generator(c) if self.targets != "topk" else None}
        parts = []
        with torch.inference_mode():
            for b in range(0, len(rows), self.batch_size):
                ids = torch.from_numpy(ids_np[b:b + self.batch_size]).to(self.device)
                outputs, heads = [], []
                for model, info in zip(self.teachers, self.infos, strict=True):
                    with autocast:
                        out, head = teacher_forward(model, ids)
                    bad = ~torch.isfinite(out).flatten(1).all(1)
                    if bad.any():
                        w = int(self.windows.indices[rows[b] + int(bad.nonzero()[0])])
                        raise BblError(f"{info['path']}: NaN/inf logits on {self.split} window {w}; the teacher "
                                       f"checkpoint is broken, retrain or pick an earlier checkpoint")
                    outputs.append(out)
                    heads.append(head)
                with autocast:
                    if all(h is not None for h in heads):  # chunked: no (B, S, V) tensor per teacher
                        out = ensemble_targets_from_hidden(outputs, heads, temperature=self.temperature, **kind)
                    else:
                        out = ensemble_targets([o.float() for o in outputs], temperature=self.temperature, **kind)
                parts.append({k: t.cpu() for k, t in out.items()})
        arrays = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
        batch = ChunkBatch(index=c, input_ids=ids_np.astype(self.id_dtype),
                           window_idx=self.windows.indices[rows.start:rows.stop].astype(np.int64))
        if "topk_ids" in arrays:
            top_ids, top_lp = sort_by_id(arrays["topk_ids"], arrays["topk_logprobs"])
            batch.topk_ids, batch.topk_logprobs = top_ids.astype(self.id_dtype), _quantize_logprobs(top_lp)
            batch.tail_logprob = arrays["tail_logprob"].astype(np.float32)
        if "sample_ids" in arrays:
            batch.sample_ids = arrays["sample_ids"].astype(self.id_dtype)
        return batch


def check_dump_args(*, top_k: int, temperature: float, seq_len: int, batch_size: int,
                    max_windows: int | None = None, chunk_windows: int = DEFAULT_CHUNK_WINDOWS,
                    targets: str = "topk", num_samples: int | None = None) -> None:
    """Range checks of dump-logits' options, before anything is read or written.

    Raises:
        BblError: naming the option and its valid range (or the `--targets` kind it needs).
    """
    from bbl.cache import TARGET_KINDS

    if targets not in TARGET_KINDS:
        raise BblError(f"--targets {targets!r}: use one of {', '.join(TARGET_KINDS)}")
    if targets == "topk" and num_samples:
        raise BblError(f"--samples {num_samples} applies to --targets sampled or hybrid; drop it or pick one")
    if targets != "topk" and not num_samples:
        raise BblError(f"--targets {targets} needs --samples S >= 1 (ids drawn per position, e.g. 12)")
    if num_samples is not None and num_samples > 255:
        raise BblError(f"--samples {num_samples} must be <= 255")
    for option, value in (("--topk", top_k), ("--seq-len", seq_len), ("--batch-size", batch_size),
                          ("--chunk-windows", chunk_windows), ("--max-windows", max_windows),
                          ("--samples", num_samples)):
        if value is not None and value < 1:
            raise BblError(f"{option} {value} must be >= 1")
    if not temperature > 0:
        raise BblError(f"--temperature {temperature} must be > 0")


def _dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _barrier():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def dump_logits(teacher_dirs: list[Path], data_dir: Path, out, *, top_k: int = 64, temperature: float = 2.0,
                split: str = "train", seq_len: int = 128, batch_size: int = 16, device: str = "cpu",
                max_windows: int | None = None, seed: int = 0, chunk_windows: int = DEFAULT_CHUNK_WINDOWS,
                overwrite: bool = False, progress: bool = True, targets: str = "topk",
                num_samples: int | None = None, log=print) -> dict:
    """Dump the ensemble's soft targets of every window of `split` into the cache at `out`.

    `targets` is the kind stored (`bbl.cache.TARGET_KINDS`): topk (top_k ids, log-probs, tail mass), sampled
    (`num_samples` ids drawn from p_T per position; top_k unused) or hybrid (both: top_k exact plus
    `num_samples` draws from the tail). Draws are seeded by (`seed`, chunk), so a resumed dump is byte-identical.
    `max_windows`/`seed` select the same fixed window subset `training.max_train_windows`/`training.seed` do.
    Returns the summary dict (windows, tokens, bytes, bytes_per_token, mean_tail_mass, seconds).

    Raises:
        BblError: bad teachers (see `load_teachers`), teachers not trained on this data's tokenizer,
            top_k > vocab, temperature <= 0, out holding a cache of other settings, NaN/inf logits (names the
            window), disk full (store left resumable, not complete).
    """
    from tqdm.auto import tqdm

    from bbl.tokenizer import tokenizer_fingerprint

    check_dump_args(top_k=top_k, temperature=temperature, seq_len=seq_len, batch_size=batch_size,
                    max_windows=max_windows, chunk_windows=chunk_windows, targets=targets, num_samples=num_samples)
    if targets == "sampled":
        top_k = 0
    rank, world = _dist_info()
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    data = PreparedData(data_dir, check_hashes=True)
    data_fp = tokenizer_fingerprint(data.tokenizer_dir)
    teachers, infos = load_teachers(teacher_dirs, device, seq_len=seq_len)
    if infos[0]["tokenizer_fingerprint"] != data_fp:
        raise BblError(f"{teacher_dirs[0]}: teacher tokenizer differs from {data.tokenizer_dir}; "
                       f"pass the --data the teachers were trained on")
    if top_k > data.vocab_size:
        raise BblError(f"--topk {top_k} exceeds the vocabulary ({data.vocab_size}); use --topk <= {data.vocab_size}")
    stream = data.stream(split)
    indices = window_subset(len(stream) // seq_len, max_windows, seed=seed)
    windows = TokenWindows(stream, seq_len, indices)
    n = len(windows)
    if n == 0:
        raise BblError(f"{data.path}: the {split} stream has fewer than --seq-len {seq_len} tokens; prepare more text")
    attrs = {
        "temperature": float(temperature), "top_k": int(top_k), "seq_len": int(seq_len),
        "vocab_size": int(data.vocab_size), "ensemble": "logit_mean", "teachers": infos,
        "teachers_fingerprint": sorted(w for i in infos for w in i["weights_sha256"].values()),
        "tokenizer_fingerprint": data_fp, "tokenizer_sha256": data.tokenizer_sha256,
        "train_stream_sha256": data.stream_sha256(split), "split": split,
        "window_selection": {"max_windows": max_windows, "seed": seed}, "logprob_step": LOGPROB_STEP,
        "topk_order": TOPK_ORDER, "dump_batch_size": int(batch_size), "dump_device": str(device).split(":")[0],
        "bbl_version": __version__, "data_dir": str(Path(data_dir).resolve()),
    }
    if targets != "topk":  # a top-k cache keeps exactly the attributes it had before issue 15
        attrs.update(targets=targets, num_samples=int(num_samples), sample_seed=int(seed))
    out = cache_location(out)
    if rank == 0:
        writer = CacheWriter(out, attrs=attrs, num_windows=n, chunk_windows=chunk_windows, overwrite=overwrite)
    _barrier()
    if rank != 0:
        writer = CacheWriter(out, attrs=attrs, num_windows=n, chunk_windows=chunk_windows, create=False)
    done = writer.done_chunks()
    todo = [c for c in range(writer.num_chunks) if c % world == rank and not done[c]]
    if rank == 0 and done.any():
        log(f"resuming {out}: {int(done.sum())}/{writer.num_chunks} chunks already written")

    errors: list[BaseException] = []
    q: queue.Queue = queue.Queue(maxsize=3)
    kill_after = int(os.environ.get("BBL_DEBUG_KILL_AFTER_CHUNKS", "0"))  # test hook: SIGKILL after N chunks

    def write_loop():
        written = 0
        while (item := q.get()) is not None:
            if errors:
                continue
            try:
                writer.write_chunk(item)
                written += 1
                if kill_after and written >= kill_after:
                    os.kill(os.getpid(), 9)
            except OSError as e:
                errors.append(BblError(f"{out}: write failed at chunk {item.index} ({e.strerror or e}); free disk "
                                       f"space and re-run the same command to resume (the cache is not complete)"))
            except BaseException as e:  # surfaced in the main thread
                errors.append(e)

    thread = threading.Thread(target=write_loop, name="bbl-cache-writer", daemon=True)
    thread.start()
    t0 = time.perf_counter()
    computer = ChunkComputer(teachers, infos, windows, top_k=top_k, temperature=temperature, batch_size=batch_size,
                             chunk_windows=chunk_windows, device=device, id_dtype=writer.group["input_ids"].dtype,
                             split=split, targets=targets, num_samples=num_samples or 0, sample_seed=seed)
    bar = tqdm(total=len(todo) * chunk_windows, unit="win", desc=f"dump rank {rank}" if world > 1 else "dump",
               disable=not progress, smoothing=0.1)
    dumped = 0
    try:
        for c in todo:
            if errors:
                break
            batch = computer.compute(c)
            q.put(batch)
            bar.update(len(batch.window_idx))
            dumped += len(batch.window_idx)
    finally:
        q.put(None)
        thread.join()
        bar.close()
    if errors:
        raise errors[0]
    _barrier()
    summary = {}
    if rank == 0:
        seconds = time.perf_counter() - t0
        from bbl.cache_tools import cache_stats

        writer.finalize()
        summary = cache_stats(CacheReader(out), sample_chunks=8)
        summary["seconds"] = round(seconds, 2)
        summary["windows_per_s"] = round(dumped / max(seconds, 1e-9), 1)  # rank 0's own windows
        writer.group.attrs.update({"summary": summary})
        tail = f", mean tail mass {summary['mean_tail_mass']:.4f}" if "mean_tail_mass" in summary else ""
        log(f"dumped {out}: {summary['windows']:,} windows, {summary['tokens']:,} tokens, "
            f"{summary['bytes']:,} bytes ({summary['bytes_per_token']:.1f} B/token){tail}, {seconds:.1f}s")
    if world > 1:
        import torch.distributed as dist

        _barrier()
        dist.destroy_process_group()
    return summary
