"""The cache at real vocabularies (issue 25): bytes per token, dump and read throughput at V = 128,256 (Llama 3)
and 151,936 (Qwen 2.5, padded past its 151,665-id tokenizer), beside V = 16,000 (the paper's), one process.

    python benchmarks/bench_vocab_cache.py [--windows 64] [--hidden 64] [--reps 3] [--json F]

Teachers are random tiny LLaMAs (2 layers, --hidden wide) built in-process at each output size, so the figures
isolate what the vocabulary costs the cache: the head projection, top-k and logsumexp over V per position, the
id dtype (int32 past 65,535 ids), compression. A random teacher's distribution is near-uniform, so its top-k ids
change more from position to position than a trained one's: bytes per token here are an upper bound of a trained
teacher's (trained teachers' figures: BENCHMARKS.md "Sparse targets"). Windows are random ids of 128 tokens.
Reports medians over --reps of: dump windows/s (compute + compressed write), read windows/s (`CacheDataset` in
its chunk-shuffled order), bytes per token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bbl.cache.dataset import CacheDataset
from bbl.cache.dump import EnsembleChunkComputer
from bbl.cache.dump_config import DumpConfig
from bbl.cache.format import id_dtype
from bbl.cache.inspect import store_bytes
from bbl.cache.reader import CacheReader
from bbl.cache.writer import CacheWriter
from bbl.data.windows import TokenWindows

SIZES = {"paper 16,000": (16_000, 16_000), "Llama 3 128,256": (128_256, 128_256),
         "Qwen 2.5 151,936 (151,665 ids)": (151_665, 151_936)}


def teacher(output_size: int, hidden: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=output_size, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                        max_position_embeddings=256, tie_word_embeddings=False)).eval()


def one(vocab: int, output_size: int, args, tmp: Path, rep: int) -> dict:
    config = DumpConfig(top_k=64, temperature=1.0, seq_len=128, batch_size=16, chunk_windows=32)
    stream = np.random.default_rng(rep).integers(0, vocab, size=args.windows * 128).astype(np.int64)
    windows = TokenWindows(stream, 128)
    teachers = [teacher(output_size, args.hidden, s) for s in (0, 1)]
    infos = [{"path": f"random-{s}"} for s in (0, 1)]
    attrs = {"temperature": 1.0, "top_k": 64, "seq_len": 128, "vocab_size": vocab}
    out = tmp / f"v{output_size}-{rep}.zarr"
    writer = CacheWriter(out, attrs=attrs, num_windows=len(windows), chunk_windows=config.chunk_windows)
    computer = EnsembleChunkComputer(teachers, infos, windows, config, device="cpu", id_dtype=id_dtype(vocab),
                             vocab_size=vocab)
    t0 = time.perf_counter()
    for c in range(writer.num_chunks):
        writer.write_chunk(computer.compute(c))
    dump_s = time.perf_counter() - t0
    writer.finalize()
    reader = CacheReader(out)
    ds = CacheDataset(reader, seed=0)
    t0 = time.perf_counter()
    for i in ds.sampler():
        ds[i]
    read_s = time.perf_counter() - t0
    return {"dump_windows_per_s": len(windows) / dump_s, "read_windows_per_s": len(windows) / read_s,
            "bytes_per_token": store_bytes(out) / (len(windows) * 128)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: [] for name in SIZES}
        for rep in range(args.reps):  # sizes interleaved per repetition, side by side
            for name, (vocab, output_size) in SIZES.items():
                runs[name].append(one(vocab, output_size, args, Path(tmp), rep))
        for name, rs in runs.items():
            results[name] = {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
    report = {"windows": args.windows, "hidden": args.hidden, "reps": args.reps, "top_k": 64, "results": results}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
