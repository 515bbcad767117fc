"""BLiMP scoring speed (pairs/s) for the CPU-preset student and a teacher from `make demo`.

Usage: python benchmarks/bench_eval.py --workdir runs/demo [--pairs 200] [--reps 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bbl.evaluate.run import load_model
from bbl.evaluate.zero_shot import load_pairs, score_pairs, task_files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--blimp-dir", type=Path, default=Path("../shared/data/blimp_filtered"))
    ap.add_argument("--pairs", type=int, default=20, help="pairs per paradigm file")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    args = ap.parse_args()
    rows = [r for f in task_files(args.blimp_dir) for r in load_pairs(f, max_pairs=args.pairs)]
    print(f"BLiMP scoring, {len(rows)} pairs ({args.pairs} per paradigm), batch 64, median of {args.reps}")
    models = {}
    for name in ("student/distilled", "teachers/gpt2", "teachers/llama"):
        model, tok, info = load_model(args.workdir / name, "cpu")
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            score_pairs([model], tok, rows, batch_size=64)
            times.append(time.perf_counter() - t0)
        print(f"| {name} | {info['parameters'] / 1e6:.2f}M | {len(rows) / statistics.median(times):,.0f} pairs/s |")
        models[name] = {"parameters": info["parameters"], "seconds": [round(t, 4) for t in times],
                        "pairs_per_s": len(rows) / statistics.median(times)}
    if args.json:
        args.json.write_text(json.dumps({"workdir": str(args.workdir), "pairs": len(rows),
                                         "pairs_per_paradigm": args.pairs, "batch_size": 64, "reps": args.reps,
                                         "models": models}, indent=2) + "\n")


if __name__ == "__main__":
    main()
