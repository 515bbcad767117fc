"""bf16 / fp16 teachers against fp32: how far the cache's targets move, and what the dump costs (issue 25).

    python benchmarks/bench_teacher_dtype.py --workdir runs/demo [--windows 256] [--dtypes bf16] [--reps 3] [--json F]

Dumps the same windows with the workdir's teachers at fp32 and at each --dtype (weights in that precision; the
logit mean and log-softmax stay fp32), then compares position by position: the share of top-k ids in common, the
largest |log-prob| error on the ids both keep, on positions whose top-k sets agree the KL(fp32 ‖ other) of the
(k+1)-outcome coarsenings (`bbl.cache.compute.fidelity.stored_kl`), and the dump's wall time (median of --reps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from bbl.cache.compute.fidelity import stored_kl
from bbl.cache.dump import dump_logits
from bbl.cache.dump_config import DumpConfig


def arrays(path):
    g = zarr.open_group(str(path), mode="r")
    return {k: g[k][:] for k in ("topk_ids", "topk_logprobs", "tail_logprob")}


def compare(ref: dict, other: dict) -> dict:
    """Per position, over fp32's top-k ids: the share both keep, the log-prob errors on them, and, on positions
    whose top-k sets are equal, the exact KL(fp32 ‖ other) of the (k+1)-outcome coarsenings."""
    ids, lp, tail = ref["topk_ids"], ref["topk_logprobs"].astype(np.float64), ref["tail_logprob"]
    o_ids, o_lp = other["topk_ids"], other["topk_logprobs"].astype(np.float64)
    common = (ids[..., :, None] == o_ids[..., None, :])
    in_other = common.any(-1)
    at = np.where(in_other, (common * o_lp[..., None, :]).sum(-1), np.nan)  # other's log-prob of fp32's ids
    err = np.abs(at - lp)
    same = in_other.all(-1)  # positions whose top-k sets are equal (ids are stored sorted: same order)
    kl = stored_kl(lp[same], tail[same], o_lp[same], other["tail_logprob"][same])
    return {"ids_in_common": float(in_other.mean()), "positions_same_topk": float(same.mean()),
            "max_abs_logprob_error": float(np.nanmax(err)), "mean_abs_logprob_error": float(np.nanmean(err)),
            "mean_kl_same_topk": float(kl.mean()), "max_kl_same_topk": float(kl.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True, help="A pipeline workdir (prepared/, teachers/).")
    ap.add_argument("--windows", type=int, default=256)
    ap.add_argument("--dtypes", default="bf16")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    teachers = sorted((args.workdir / "teachers").iterdir())
    temperature = 1.0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        caches, seconds = {}, {}
        for dtype in ["fp32", *args.dtypes.split(",")]:
            times = []
            for rep in range(args.reps):
                out = Path(tmp) / f"{dtype}-{rep}.zarr"
                t0 = time.perf_counter()
                dump_logits(teachers, args.workdir / "prepared", out,
                            DumpConfig(temperature=temperature, max_windows=args.windows, batch_size=32,
                                       dtype="auto" if dtype == "fp32" else dtype), progress=False,
                            log=lambda *_: None)
                times.append(time.perf_counter() - t0)
            caches[dtype], seconds[dtype] = arrays(out), statistics.median(times)
        for dtype in args.dtypes.split(","):
            results[dtype] = {**compare(caches["fp32"], caches[dtype]), "dump_s": round(seconds[dtype], 2),
                              "fp32_dump_s": round(seconds["fp32"], 2)}
    report = {"workdir": str(args.workdir), "teachers": [t.name for t in teachers], "windows": args.windows,
              "temperature": temperature, "results": results}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
