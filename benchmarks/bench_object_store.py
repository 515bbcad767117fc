"""Caches on S3 vs local disk: shuffled reader throughput and dump throughput, against a local S3 server.

Usage (after `make demo`, which leaves teachers, a prepared dir and a cache in runs/demo):
    python benchmarks/bench_object_store.py --workdir runs/demo [--windows 512] [--reps 3] [--json F]
The S3 side is moto's `ThreadedMotoServer` on localhost (an in-process, in-memory S3: it measures bbl's and
zarr/s3fs's per-object overheads, not a network or a real bucket's latency). Reader: `CacheDataset` over a copy of
the first --windows windows of the demo cache, in `shuffled_order` (the order training reads), windows/s. Dump:
`dump_logits` of --windows windows with the demo teachers to a local path and to s3://. Medians over --reps, the
two sides interleaved.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def start_s3():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    return server


def copy_cache(src, dst, windows: int):
    """The first `windows` windows of cache `src` as a new complete cache at `dst` (path or URL)."""
    from bbl.cache import CacheReader, CacheWriter, ChunkBatch

    r = CacheReader(src)
    n = min(windows, r.num_windows)
    attrs = {**r.attrs, "window_selection": {"max_windows": n, "seed": "bench"}}
    attrs.pop("complete", None)
    w = CacheWriter(dst, attrs=attrs, num_windows=n, chunk_windows=r.chunk_windows, overwrite=True)
    for c in range(-(-n // r.chunk_windows)):
        s, e = c * r.chunk_windows, min(n, (c + 1) * r.chunk_windows)
        rows = r.read(s, e)
        w.write_chunk(ChunkBatch(c, rows["input_ids"], rows["window_idx"], rows["topk_ids"], rows["topk_logprobs"],
                                 rows["tail_logprob"]))
    w.finalize()
    return n


def shuffled_read(location, seed: int) -> float:
    """Seconds to read every window of the cache at `location` in training's shuffled order (fresh reader)."""
    from bbl.cache import CacheDataset, CacheReader, shuffled_order

    t0 = time.perf_counter()
    reader = CacheReader(location)
    ds = CacheDataset(reader, seed=seed)
    for i in shuffled_order(len(ds), reader.chunk_windows, seed=seed, epoch=0):
        ds.rows(int(i))
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--windows", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    server = start_s3()
    from bbl.cache.dump import dump_logits
    from bbl.cache.dump_config import DumpConfig

    tmp = Path(tempfile.mkdtemp(prefix="bbl-s3bench-"))
    w = args.workdir
    local, url = tmp / "read.zarr", "s3://bench/read.zarr"
    n = copy_cache(w / "cache" / "ensemble.zarr", local, args.windows)
    copy_cache(w / "cache" / "ensemble.zarr", url, args.windows)
    teachers = [w / "teachers" / "gpt2", w / "teachers" / "llama"]
    attrs = json.loads((w / "cache" / "ensemble.zarr" / "zarr.json").read_text())["attributes"]

    def dump(out):
        t0 = time.perf_counter()
        dump_logits(teachers, w / "prepared", out, DumpConfig(top_k=attrs["top_k"], temperature=attrs["temperature"], seq_len=attrs["seq_len"], batch_size=32, max_windows=n, seed=0), overwrite=True, progress=False, log=lambda *_: None)
        return time.perf_counter() - t0

    res = {"read_local": [], "read_s3": [], "dump_local": [], "dump_s3": []}
    for rep in range(args.reps):
        res["read_local"].append(shuffled_read(local, rep))
        res["read_s3"].append(shuffled_read(url, rep))
        res["dump_local"].append(dump(tmp / "dump.zarr"))
        res["dump_s3"].append(dump("s3://bench/dump.zarr"))
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {"windows": n, "reps": args.reps, "seconds": med,
           "windows_per_s": {k: n / v for k, v in med.items()},
           "s3_over_local": {"read": med["read_local"] / med["read_s3"], "dump": med["dump_local"] / med["dump_s3"]}}
    print(f"# object store benchmark: {n} windows, reps={args.reps} (median), moto S3 on localhost\n")
    print("| | local disk (windows/s) | S3, moto localhost (windows/s) | S3 / local |\n|---|---:|---:|---:|")
    print(f"| shuffled read (CacheDataset) | {out['windows_per_s']['read_local']:,.0f} | "
          f"{out['windows_per_s']['read_s3']:,.0f} | {out['s3_over_local']['read']:.3f} |")
    print(f"| dump (2 CPU teachers) | {out['windows_per_s']['dump_local']:,.1f} | "
          f"{out['windows_per_s']['dump_s3']:,.1f} | {out['s3_over_local']['dump']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    server.stop()
    np.set_printoptions()


if __name__ == "__main__":
    main()
