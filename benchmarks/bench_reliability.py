"""Fault injection on real caches: random SIGKILLs of a dump, deleted / flipped / truncated chunks, and repair.

Usage (any prepared dir; teachers are random tiny models built here, their quality does not matter):
    python benchmarks/bench_reliability.py --data runs/study/prepared [--kills 10] [--cache CACHE] [--json]
    python benchmarks/bench_reliability.py --cache runs/study/cache/ensemble.zarr --open-cost-only
Dumps 1,024 windows of 32 tokens in 32 chunks, then: SIGKILLs a re-run of the same dump at random moments until
at least --kills kills have landed and the dump finished, and compares it with an uninterrupted dump; injects
each chunk fault and records what `cache verify`, `distill` and `cache repair` do; with --cache, times opening a
cache with and without the missing-chunk check, and a full scan.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

ARRAYS = ("input_ids", "window_idx", "topk_ids", "topk_logprobs", "tail_logprob", "chunk_done")


def bbl(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "bbl", *map(str, argv)], capture_output=True, text=True,
                          env=env or {**os.environ, "HF_HUB_OFFLINE": "1"})


def make_teachers(prepared: Path, root: Path) -> list[Path]:
    from transformers import AutoTokenizer

    from bbl.config import load_config
    from bbl.data.prepared import PreparedData
    from bbl.models.build import build_model

    data = PreparedData(prepared)
    dirs = []
    for i, preset in enumerate(("llama-tiny", "gpt2-tiny")):
        d = root / preset
        build_model(load_config(preset).model, data.vocab_size, seed=i).save_pretrained(d)
        AutoTokenizer.from_pretrained(data.tokenizer_dir).save_pretrained(d)
        dirs.append(d)
    return dirs


def dump_argv(teachers, prepared, out):
    return ["dump-logits", *[a for t in teachers for a in ("--teacher", t)], "--data", prepared, "--cache", out,
            "--topk", 64, "--seq-len", 32, "--max-windows", 1024, "--chunk-windows", 32, "--batch-size", 8]


def same_arrays(a: Path, b: Path) -> bool:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    return all(np.array_equal(ga[k][:], gb[k][:]) for k in ARRAYS)


def chunk_bytes(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file() and p.name != "zarr.json"}


def sigkill_loop(teachers, prepared, root: Path, clean: Path, clean_s: float, startup_s: float, kills: int,
                 seed: int) -> dict:
    """Rounds of: a fresh dump SIGKILLed at random moments of its work, re-run until it finishes, compared with the
    uninterrupted dump; rounds continue until `kills` kills have landed on unfinished stores."""
    rng = random.Random(seed)
    out = root / "killed.zarr"
    cmd = [sys.executable, "-m", "bbl", *map(str, dump_argv(teachers, prepared, out))]
    landed, runs, rounds, equal, bytes_equal, done_at_kill = 0, 0, 0, True, True, []
    while landed < kills:
        shutil.rmtree(out, ignore_errors=True)
        rounds += 1
        while True:
            runs += 1
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:  # a moment between the end of start-up and the end of an uninterrupted dump
                proc.wait(timeout=rng.uniform(startup_s, clean_s))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                if (out / "zarr.json").is_file():
                    done = zarr.open_group(str(out), mode="r")["chunk_done"][:]
                    if done.all():
                        continue  # the work was over; not a kill mid-dump
                    done_at_kill.append(int(done.sum()))
                landed += 1
                continue
            if proc.returncode != 0:
                raise RuntimeError(f"dump failed after {landed} kills (exit {proc.returncode})")
            break
        equal = equal and same_arrays(clean, out)
        bytes_equal = bytes_equal and chunk_bytes(clean) == chunk_bytes(out)
    return {"kills": landed, "runs": runs, "rounds": rounds, "chunks_done_at_each_kill": done_at_kill,
            "equal_to_uninterrupted": equal, "bytes_equal": bytes_equal}


def inject(path: Path, fault: str) -> str:
    f = path / "topk_logprobs" / "c" / "5" / "0" / "0"
    if fault == "missing chunk file":
        f.unlink()
    elif fault == "one byte flipped":
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    else:
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    return "topk_logprobs chunk 5"


def fault_rows(teachers, prepared, root: Path, clean: Path) -> list[dict]:
    rows = []
    for fault in ("missing chunk file", "one byte flipped", "chunk truncated to half"):
        path = root / "faulty.zarr"
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(clean, path)
        name = inject(path, fault)
        v = bbl("cache", "verify", "--cache", path)
        d = bbl("distill", "student-tiny", "--cache", path, "--data", prepared, "--out", root / "student")
        errors = [line for line in d.stderr.splitlines() if line.startswith("error:")]
        t0 = time.perf_counter()
        r = bbl("cache", "repair", "--cache", path, *[a for t in teachers for a in ("--teacher", t)])
        repair_s = time.perf_counter() - t0
        after = bbl("cache", "verify", "--cache", path)
        lost = sum(len(v_) for k, v_ in chunk_bytes(clean).items() if chunk_bytes(path).get(k) != v_)
        rows.append({"fault": fault, "verify_exit": v.returncode, "verify_names_chunk": name in v.stderr,
                     "distill_exit": d.returncode, "distill_error_lines": len(errors),
                     "distill_traceback": "Traceback" in d.stderr, "distill_trained": (root / "student").exists(),
                     "repair_exit": r.returncode, "repair_s": round(repair_s, 1), "verify_after_repair": after.returncode,
                     "equal_to_clean": same_arrays(clean, path), "bytes_lost": lost})
        shutil.rmtree(root / "student", ignore_errors=True)
    return rows


def open_cost(cache: Path, reps: int) -> dict:
    from bench_cache import median_time  # this script's folder is on sys.path when run as a script

    import bbl.cache as bc

    def timed(fn):
        return median_time(fn, reps)

    with_check = timed(lambda: bc.CacheReader(cache))
    real = bc.missing_chunks
    bc.missing_chunks = lambda reader: []
    try:
        without = timed(lambda: bc.CacheReader(cache))
    finally:
        bc.missing_chunks = real
    reader = bc.CacheReader(cache)
    scan = timed(reader.scan)
    return {"cache": str(cache), "windows": reader.num_windows, "chunks": reader.num_chunks,
            "open_s_with_check": with_check, "open_s_without_check": without, "scan_s": scan,
            "scan_windows_per_s": reader.num_windows / scan}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, help="a prepared dir (bbl prepare); required unless --open-cost-only")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="a real cache to time the open-time check on")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--open-cost-only", action="store_true", help="only time opening and scanning --cache")
    args = ap.parse_args()
    if args.open_cost_only:
        o = open_cost(args.cache, args.reps)
        print(json.dumps(o, indent=2) if args.json else
              f"open {o['cache']} ({o['windows']} windows, {o['chunks']} chunks): {1e3 * o['open_s_with_check']:.1f} "
              f"ms with the missing-chunk check, {1e3 * o['open_s_without_check']:.1f} ms without; full scan "
              f"{o['scan_s']:.2f} s ({o['scan_windows_per_s']:,.0f} windows/s)")
        return
    root = Path(tempfile.mkdtemp(prefix="bbl-faults-"))
    try:
        teachers = make_teachers(args.data, root)
        clean = root / "clean.zarr"
        t0 = time.perf_counter()
        r = bbl(*dump_argv(teachers, args.data, clean))
        clean_s = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(r.stderr[-2000:])
        t0 = time.perf_counter()
        bbl(*dump_argv(teachers, args.data, clean))  # a no-op re-run: start-up and checks only
        startup_s = time.perf_counter() - t0
        report = {"clean_dump_s": round(clean_s, 1), "startup_s": round(startup_s, 1),
                  "sigkill": sigkill_loop(teachers, args.data, root, clean, clean_s, startup_s, args.kills, args.seed),
                  "faults": fault_rows(teachers, args.data, root, clean)}
        if args.cache:
            report["open_cost"] = open_cost(args.cache, args.reps)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    k = report["sigkill"]
    print(f"clean dump: {report['clean_dump_s']} s (1,024 windows, 32 chunks; start-up {report['startup_s']} s)")
    print(f"SIGKILL at random moments: {k['kills']} kills of unfinished dumps over {k['runs']} runs in {k['rounds']} "
          f"round(s) (chunks done at each kill: {k['chunks_done_at_each_kill']}); every resumed store equals the "
          f"uninterrupted one: arrays {k['equal_to_uninterrupted']}, bytes {k['bytes_equal']}")
    print("| fault | verify exit (names it) | distill exit (error lines, traceback, trained) | repair exit (s) | "
          "verify after | equal to clean | bytes lost |")
    print("|---|---|---|---|---|---|---:|")
    for f in report["faults"]:
        print(f"| {f['fault']} | {f['verify_exit']} ({f['verify_names_chunk']}) | {f['distill_exit']} "
              f"({f['distill_error_lines']}, {f['distill_traceback']}, {f['distill_trained']}) | {f['repair_exit']} "
              f"({f['repair_s']}) | {f['verify_after_repair']} | {f['equal_to_clean']} | {f['bytes_lost']} |")
    if "open_cost" in report:
        o = report["open_cost"]
        print(f"open {o['cache']} ({o['windows']} windows, {o['chunks']} chunks): {1e3 * o['open_s_with_check']:.1f} ms "
              f"with the missing-chunk check, {1e3 * o['open_s_without_check']:.1f} ms without; full scan "
              f"{o['scan_s']:.2f} s ({o['scan_windows_per_s']:,.0f} windows/s)")


if __name__ == "__main__":
    main()
