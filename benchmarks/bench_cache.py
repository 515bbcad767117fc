"""Cache benchmarks: dump vs forward-only throughput, bytes/token and fidelity per layout, reader windows/s.

Usage (after `make demo`, which leaves trained CPU teachers in runs/demo):
    python benchmarks/bench_cache.py --workdir runs/demo [--windows 512] [--reps 3] [--dump-only] [--json F]
Prints a markdown report; ratios are measured side by side in one run, medians over --reps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bbl.cache import CacheDataset, CacheReader, CacheWriter, ChunkBatch, shuffled_order
from bbl.cache.compute.fidelity import stored_kl
from bbl.cache.dump import dump_logits
from bbl.cache.dump_config import DumpConfig
from bbl.cache.format import quantize_logprobs, sort_by_id
from bbl.cache.inspect import store_bytes
from bbl.cache.kinds.builtin import topk_mass
from bbl.data.prepared import PreparedData
from bbl.data.windows import TokenWindows, window_subset
from bbl.models.ensemble import ensemble_topk
from bbl.models.teachers import load_teachers

# name: (blosc codec override for every array or None for the per-array default, log-prob grid step or None for
# plain fp16, ids sorted by id (True) or by probability, windows per chunk)
LAYOUTS = {
    "A: prob order, plain fp16, zstd-3 bitshuffle": ({"shuffle": "bitshuffle"}, None, False, 64),
    "B: prob order, fp16 on 2^-6 grid, per-array shuffle": (None, 2.0 ** -6, False, 64),
    "C: id order, fp16 on 2^-6 grid, per-array shuffle": (None, 2.0 ** -6, True, 64),
    "D: id order, fp16 on 2^-8 grid, per-array shuffle": (None, 2.0 ** -8, True, 64),
    "E: id order, fp16 on 2^-6 grid, lz4 bitshuffle": ({"cname": "lz4", "clevel": 5, "shuffle": "bitshuffle"},
                                                      2.0 ** -6, True, 64),
    "F: id order, fp16 on 2^-6 grid, per-array shuffle, 256 win/chunk (kept)": (None, 2.0 ** -6, True, 256),
}


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--windows", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--topk", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--paper-teachers", type=int, default=0, metavar="N",
                    help="only measure dump / forward with random-weight paper-sized teachers on N windows")
    ap.add_argument("--dump-only", action="store_true", help="stop after the dump / forward figure")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write every figure (dump / forward, top-k mass, each layout's row) to this file")
    args = ap.parse_args()
    if args.paper_teachers:
        return paper_scale(args)
    w = args.workdir
    teacher_dirs = [w / "teachers" / "gpt2", w / "teachers" / "llama"]
    data = PreparedData(w / "prepared")
    stream = data.stream("train")
    n = args.windows
    windows = TokenWindows(stream, 128, window_subset(len(stream) // 128, n, seed=0))
    ids_all = torch.from_numpy(np.stack([windows.window(i) for i in range(n)]))
    teachers, _ = load_teachers(teacher_dirs, "cpu")
    torch.set_num_threads(torch.get_num_threads())
    tmp = Path(tempfile.mkdtemp(prefix="bbl-bench-"))
    print(f"# cache benchmark: {n} windows x 128 tokens, top-{args.topk}, T={args.temperature}, "
          f"{torch.get_num_threads()} torch threads, reps={args.reps} (median)\n")

    # 1. dump throughput vs forward-only throughput of the same teachers on the same windows
    def forward_only():
        with torch.inference_mode():
            for b in range(0, n, 32):
                for m in teachers:
                    m(input_ids=ids_all[b:b + 32]).logits.float()

    def dump():
        out = tmp / "dump.zarr"
        shutil.rmtree(out, ignore_errors=True)
        dump_logits(teacher_dirs, w / "prepared", out, DumpConfig(top_k=args.topk, temperature=args.temperature, seq_len=128, batch_size=32, max_windows=n, seed=0), progress=False, log=lambda *_: None)

    t_fwd, t_dump = [], []
    for _ in range(args.reps):  # interleaved, so drift hits both
        t_fwd.append(median_time(forward_only, 1))
        t_dump.append(median_time(dump, 1))
    fwd, dmp = n / statistics.median(t_fwd), n / statistics.median(t_dump)
    print("## Dump throughput\n")
    print("| forward-only (windows/s) | dump (windows/s) | dump / forward |\n|---:|---:|---:|")
    print(f"| {fwd:.1f} | {dmp:.1f} | **{dmp / fwd:.3f}** |\n")
    report = {"windows": n, "seq_len": 128, "top_k": args.topk, "temperature": args.temperature, "reps": args.reps,
              "threads": torch.get_num_threads(), "vocab_size": data.vocab_size,
              "teachers": {d.name: sum(p.numel() for p in m.parameters()) for d, m in zip(teacher_dirs, teachers,
                                                                                          strict=True)},
              "forward_windows_per_s": fwd, "dump_windows_per_s": dmp, "dump_over_forward": dmp / fwd}

    def write_json():
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")

    if args.dump_only:
        write_json()
        shutil.rmtree(tmp, ignore_errors=True)
        return
    print("(dump time includes loading the teachers and finalizing the store, ~1 s per run.)\n")

    # 2. exact (fp32) targets once, then each layout: bytes/token, fidelity, read speeds
    with torch.inference_mode():
        parts = [ensemble_topk([m(input_ids=ids_all[b:b + 32]).logits for m in teachers],
                               temperature=args.temperature, top_k=args.topk) for b in range(0, n, 32)]
    top_ids, top_lp, tail = (torch.cat(p).numpy() for p in zip(*parts, strict=True))
    attrs = {"temperature": args.temperature, "top_k": args.topk, "seq_len": 128, "vocab_size": data.vocab_size,
             "ensemble": "logit_mean"}
    mass = topk_mass(tail)
    print(f"Mean top-{args.topk} mass at T={args.temperature}: **{mass.mean():.4f}** "
          f"(p5 {np.percentile(mass, 5):.4f}, p50 {np.percentile(mass, 50):.4f}, p95 {np.percentile(mass, 95):.4f})\n")
    report["topk_mass"] = {"mean": float(mass.mean()), **{f"p{q}": float(np.percentile(mass, q)) for q in (5, 50, 95)}}
    report["layouts"] = []
    print("## Layouts\n")
    print("| layout | bytes/token | mean KL vs exact (nats) | max abs log-prob err | contiguous read (win/s) "
          "| shuffled read (win/s) | random single reads (win/s) |\n|---|---:|---:|---:|---:|---:|---:|")
    for li, (name, (codec, step, by_id, chunk)) in enumerate(LAYOUTS.items()):
        path = tmp / f"layout{li}.zarr"
        writer = CacheWriter(path, attrs=attrs, num_windows=n, chunk_windows=chunk, codec=codec)
        ids_l, lp_exact = sort_by_id(top_ids, top_lp) if by_id else (top_ids, top_lp)
        lp = quantize_logprobs(lp_exact, step) if step else lp_exact.astype(np.float16)
        for c in range(-(-n // chunk)):
            s = slice(c * chunk, min((c + 1) * chunk, n))
            writer.write_chunk(ChunkBatch(c, ids_all[s].numpy().astype(np.uint16), np.arange(s.start, s.stop),
                                          ids_l[s].astype(np.uint16), lp[s], tail[s].astype(np.float32)))
        writer.finalize()
        reader = CacheReader(path)
        bpt = store_bytes(path) / (n * 128)
        lp = reader.read(0, n)["topk_logprobs"]  # what a reader gets back
        kl = stored_kl(lp_exact, tail, lp.astype(np.float32), tail).mean()
        err = np.abs(lp.astype(np.float32) - lp_exact).max()
        contiguous = n / median_time(lambda r=reader, c=chunk: [r.read(i, i + c) for i in range(0, n, c)], args.reps)

        def shuffled(r=reader):
            ds = CacheDataset(r, seed=0)
            for i in shuffled_order(n, r.chunk_windows, seed=0, epoch=0):
                ds.rows(i)

        shuf = n / median_time(shuffled, args.reps)
        rng = np.random.default_rng(0)
        singles = 64 / median_time(lambda r=reader, g=rng: [r.read(int(i), int(i) + 1) for i in g.integers(0, n, 64)],
                                   args.reps)
        print(f"| {name} | {bpt:.1f} | {kl:.2e} | {err:.2e} | {contiguous:,.0f} | {shuf:,.0f} | {singles:,.0f} |")
        report["layouts"].append({
            "name": name, "codec": codec, "grid_step": step, "by_id": by_id, "chunk_windows": chunk,
            "bytes_per_token": bpt, "mean_kl": float(kl), "max_abs_logprob_error": float(err),
            "contiguous_windows_per_s": contiguous, "shuffled_windows_per_s": shuf, "random_single_windows_per_s": singles})
    print(f"\nRaw size for comparison: uint16 ids + fp16 log-probs = {args.topk * 4} B/token, + 4 B tail + 2 B input id.")
    write_json()
    shutil.rmtree(tmp, ignore_errors=True)


def paper_scale(args):
    """dump / forward-only with the paper's 705M GPT-2 and 360M LLaMA (random weights: speed only)."""
    from transformers import AutoTokenizer

    from bbl.config import load_config
    from bbl.models.build import build_model

    data = PreparedData(args.workdir / "prepared")
    tmp = Path(tempfile.mkdtemp(prefix="bbl-paper-"))
    dirs = []
    for preset in ("gpt2-705m", "llama-360m"):
        d = tmp / preset
        build_model(load_config(preset).model, data.vocab_size, seed=0).save_pretrained(d)
        AutoTokenizer.from_pretrained(data.tokenizer_dir).save_pretrained(d)
        dirs.append(d)
    teachers, _ = load_teachers(dirs, "cpu")
    n = args.paper_teachers
    stream = data.stream("train")
    ids = torch.from_numpy(np.stack([np.asarray(stream[i * 128:(i + 1) * 128], dtype=np.int64) for i in range(n)]))

    def forward_only():
        with torch.inference_mode():
            for m in teachers:
                m(input_ids=ids).logits.float()

    def dump():
        out = tmp / "dump.zarr"
        shutil.rmtree(out, ignore_errors=True)
        dump_logits(dirs, args.workdir / "prepared", out, DumpConfig(top_k=args.topk, temperature=args.temperature, seq_len=128, batch_size=n, chunk_windows=n, max_windows=n, seed=0), progress=False, log=lambda *_: None)

    t_fwd, t_dump = [], []
    for _ in range(args.reps):
        t_fwd.append(median_time(forward_only, 1))
        t_dump.append(median_time(dump, 1))
    f, d = statistics.median(t_fwd), statistics.median(t_dump)
    if args.json:
        args.json.write_text(json.dumps({"windows": n, "reps": args.reps, "forward_s": f, "dump_s": d,
                                         "dump_over_forward": f / d, "teachers": "paper-sized, random"}) + "\n")
    print(f"paper-sized teachers (random weights), {n} windows, CPU: forward-only {f:.1f}s, dump {d:.1f}s "
          f"(incl. loading 1.07B parameters from disk), dump/forward throughput {f / d:.3f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
