"""Entity tracking scoring: every option run whole (the pipeline's way) vs the item's shared prefix run once
(`bbl.evaluate.shared_prefix`, what `bbl eval` does for entity tracking): sentences/s side by side, medians over
--reps, and the agreement of the two (same chosen option, largest score difference).

Usage: python benchmarks/bench_entity_tracking.py MODEL_DIR [MODEL_DIR ...] [--items 100] [--reps 3]
    [--data ../shared/data/entity_tracking] [--batch-size 64]
Several model dirs are scored as one logit-mean ensemble, as `bbl eval` does.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bbl.evaluate.ranking import rank_items
from bbl.evaluate.run import load_model
from bbl.evaluate.tasks import read_items


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/entity_tracking"))
    ap.add_argument("--items", type=int, default=100, help="items per file (3 files, 5 options each)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    loaded = [load_model(m, "cpu") for m in args.models]
    models, tok = [m for m, _, _ in loaded], loaded[0][1]
    items = [it for v in read_items("entity_tracking", args.data, option="--data", max_items=args.items).values()
             for it in v]
    sentences = sum(len(it.sentences) for it in items)
    print(f"entity tracking, {len(items)} items ({sentences} sentences), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.reps}; models: "
          + ", ".join(f"{m} ({i['parameters'] / 1e6:.1f}M)" for m, (_, _, i) in zip(args.models, loaded, strict=True)))
    times, results = {}, {}
    for _ in range(args.reps):
        for share in (False, True):
            t0 = time.perf_counter()
            results[share] = rank_items(models, tok, items, share_prefix=share, batch_size=args.batch_size)
            times.setdefault(share, []).append(time.perf_counter() - t0)
    for share, name in ((False, "every option whole"), (True, "shared prefix once")):
        t = statistics.median(times[share])
        print(f"| {name} | {t:.1f} s | {sentences / t:,.0f} sentences/s |")
    print(f"speed-up: {statistics.median(times[False]) / statistics.median(times[True]):.2f}x")
    (plain, chosen_plain, _), (shared, chosen_shared, _) = results[False], results[True]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(plain, shared, strict=True))
    print(f"same chosen option: {int((chosen_plain == chosen_shared).sum())} / {len(items)}; "
          f"largest score difference {diff:.2e} nats")


if __name__ == "__main__":
    main()
