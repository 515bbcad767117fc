"""Does `training.torch_compile` make the study student's step faster on this machine, at equal dev CE? (issue 43)

    python benchmarks/bench_torch_compile.py --data PREPARED [--cache CACHE.zarr] [--config student-study]
        [--steps 96] [--reps 2] [--threads 1] [--json F]

Runs the same short training eagerly and compiled (`--set training.torch_compile=true`), alternating, --reps times
each, every run a `bbl distill` (with --cache) or `bbl train-student` subprocess at --threads threads (the study runs
two 1-thread jobs) with a fresh inductor cache dir, so every compiled run pays a cold compilation as a first run
does. Per run: the steady step time (from metrics.jsonl's timestamps, after the first --warm-steps steps, which hold
the compilation), the whole run's wall time, and the dev CE at the last step. Reports the medians and the ratios
eager ÷ compiled side by side; "equal dev CE" is the largest |difference| between paired runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def steady_seconds_per_step(metrics: Path, warm_steps: int) -> float:
    """Seconds per optimizer step between the first logged step >= warm_steps and the last training log line."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows = [r for r in rows if "loss" in r and r["step"] >= warm_steps]
    first, last = rows[0], rows[-1]
    return (last["time"] - first["time"]) / (last["step"] - first["step"])


def one_run(args, compiled: bool, workdir: Path) -> dict:
    out = workdir / ("compiled" if compiled else "eager")
    overrides = [f"training.max_steps={args.steps}", f"training.eval_every_steps={args.steps}",
                 "training.logging_steps=4", f"training.torch_compile={'true' if compiled else 'false'}"]
    cmd = ["bbl", "distill" if args.cache else "train-student", args.config, "--data", str(args.data),
           "--out", str(out)] + (["--cache", str(args.cache)] if args.cache else [])
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1",
               TORCHINDUCTOR_CACHE_DIR=str(workdir / "inductor"))
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    run = json.loads((out / "bbl_run.json").read_text())
    return {"compiled": compiled, "wall_s": round(wall, 2), "dev_ce": run["best_eval_loss"],
            "global_step": run["global_step"],
            "steady_s_per_step": steady_seconds_per_step(out / "metrics.jsonl", args.warm_steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="A prepared dir (the study's).")
    ap.add_argument("--cache", type=Path, default=None, help="The study's cache: time the distilled student.")
    ap.add_argument("--config", default="student-study")
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--warm-steps", type=int, default=24)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    runs = []
    for rep in range(args.reps):
        for compiled in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                r = one_run(args, compiled, Path(tmp))
            r["rep"] = rep
            runs.append(r)
            print(json.dumps(r), flush=True)

    def median(key, compiled):
        return statistics.median(r[key] for r in runs if r["compiled"] == compiled)

    pairs = [(a, b) for a in runs for b in runs if a["rep"] == b["rep"] and not a["compiled"] and b["compiled"]]
    report = {
        "what": f"{args.config} {'distilled from ' + str(args.cache) if args.cache else 'baseline'}, {args.steps} "
                f"steps, {args.threads} thread(s), eager vs training.torch_compile=true (inductor, cold cache)",
        "settings": {k: str(v) for k, v in vars(args).items()},
        "runs": runs,
        "eager_steady_s_per_step": median("steady_s_per_step", False),
        "compiled_steady_s_per_step": median("steady_s_per_step", True),
        "eager_wall_s": median("wall_s", False), "compiled_wall_s": median("wall_s", True),
        "max_abs_dev_ce_difference": max(abs(a["dev_ce"] - b["dev_ce"]) for a, b in pairs),
    }
    report["steady_step_speedup"] = report["eager_steady_s_per_step"] / report["compiled_steady_s_per_step"]
    report["whole_run_speedup"] = report["eager_wall_s"] / report["compiled_wall_s"]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
