"""How fast `bbl --help` answers: the median wall time of `python -m bbl --help` in a fresh subprocess (interpreter
start included), beside a bare `python -c pass` for the floor, and the heavy libraries the help loaded (none is
the goal: tests/test_cli.py checks that as a behaviour; this script measures it).

Usage: python benchmarks/bench_cli_help.py [--runs 15] [--command "--help"] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time


def wall(argv: list[str], runs: int) -> list[float]:
    """Seconds of each of `runs` runs of `argv` (after one warm-up run that fills the OS page cache)."""
    subprocess.run(argv, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--command", default="--help", help="bbl's arguments to time (default: --help)")
    ap.add_argument("--json", default=None, help="also write the figures (and every run's time) to this file")
    args = ap.parse_args()
    bbl = [sys.executable, "-m", "bbl", *shlex.split(args.command)]
    floor = wall([sys.executable, "-c", "pass"], args.runs)
    times = wall(bbl, args.runs)
    probe = (f"import sys\nfrom bbl.cli import main\ntry:\n    main({shlex.split(args.command)!r})\n"
             "except SystemExit:\n    pass\n"
             "print(','.join(m for m in ('torch', 'numpy', 'zarr', 'transformers') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.splitlines()[-1]
    print(f"bbl {args.command}: median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}, "
          f"{args.runs} runs); python -c pass: median {statistics.median(floor):.3f} s; heavy modules loaded: "
          f"{loaded or 'none'}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "command": f"python benchmarks/bench_cli_help.py --runs {args.runs} --command {shlex.quote(args.command)}",
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1),
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs_s": times,
            "python_pass_median_s": statistics.median(floor), "heavy_modules_loaded": loaded.split(",") if loaded
            else []}, indent=2) + "\n")


if __name__ == "__main__":
    main()
