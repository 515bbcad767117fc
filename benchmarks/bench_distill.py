"""Distillation step cost: plain CE vs cached KD vs online KD (teachers resident), same student, same batches.

Usage (after `make demo`):
    python benchmarks/bench_distill.py --workdir runs/demo [--student student-cpu] [--steps 20] [--reps 3]
    python benchmarks/bench_distill.py --workdir runs/demo --rss MODE     # one mode's peak RSS (child process)
Reports medians of per-step times (forward + backward + optimizer step) measured side by side in one process,
the data loader's share of the cached step, and peak RSS of each mode, each in its own child process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bbl.cache import CacheDataset, open_cache, shuffled_order
from bbl.config import load_config
from bbl.data import PreparedData
from bbl.dump import load_teachers
from bbl.losses import distillation_loss, full_kl, reduce_kd, topk_tail_kl
from bbl.models import build_model

MODES = ("plain", "cached", "online")


def setup(workdir: Path, student: str, mode: str):
    cfg = load_config(student)
    data = PreparedData(workdir / "prepared")
    model = build_model(cfg.model, data.vocab_size, seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    reader = open_cache(workdir / "cache" / "ensemble.zarr")
    ds = CacheDataset(reader, seed=0)
    order = shuffled_order(len(ds), reader.chunk_windows, seed=0, epoch=0)
    teachers = load_teachers([workdir / "teachers" / "gpt2", workdir / "teachers" / "llama"], "cpu")[0] \
        if mode == "online" else []
    return cfg, model, opt, ds, order, teachers, reader.temperature


def batches(ds, order, batch_size, with_targets):
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = [ds[int(i)] for i in order[start:start + batch_size]]
        keys = rows[0].keys() if with_targets else ("input_ids", "labels")
        yield {k: torch.stack([r[k] for r in rows]) for k in keys}


def step(mode, model, opt, batch, teachers, temperature, alpha=0.5):
    out = model(input_ids=batch["input_ids"], labels=batch["labels"])
    loss = out.loss
    if mode == "cached":
        kd = reduce_kd(topk_tail_kl(out.logits, batch["topk_ids"], batch["topk_logprobs"], batch["tail_logprob"],
                                    temperature))
        loss = distillation_loss(out.loss, kd, alpha=alpha, temperature=temperature)
    elif mode == "online":
        with torch.no_grad():
            teacher = torch.stack([t(input_ids=batch["input_ids"]).logits.float() for t in teachers]).mean(0)
        loss = distillation_loss(out.loss, reduce_kd(full_kl(out.logits, teacher, temperature)), alpha=alpha,
                                 temperature=temperature)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def run_mode(args, mode, steps):
    cfg, model, opt, ds, order, teachers, temperature = setup(args.workdir, args.student, mode)
    it = batches(ds, order, cfg.training.batch_size, mode == "cached")
    load_t, step_t = [], []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        step(mode, model, opt, batch, teachers, temperature)
        t2 = time.perf_counter()
        if i >= 2:  # warm-up
            load_t.append(t1 - t0)
            step_t.append(t2 - t1)
    return statistics.median(load_t), statistics.median(step_t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--student", default="student-cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rss", choices=MODES, default=None, help="measure one mode's peak RSS and print JSON")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of plain,cached,online")
    args = ap.parse_args()
    if args.rss:
        load, st = run_mode(args, args.rss, args.steps)
        # VmHWM is this process image's peak; ru_maxrss would include the parent's peak inherited across exec
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
        print(json.dumps({"mode": args.rss, "peak_rss_mib": int(hwm.split()[1]) / 1024}))
        return
    print(f"# distillation step benchmark: {args.student}, {args.steps} steps x {args.reps} reps (median), "
          f"{torch.get_num_threads()} torch threads\n")
    modes = [m for m in MODES if m in args.modes.split(",")]
    res = {m: [] for m in modes}
    for _ in range(args.reps):  # interleave modes so drift hits all
        for m in modes:
            res[m].append(run_mode(args, m, args.steps))
    med = {m: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for m, v in res.items()}
    total = {m: med[m][0] + med[m][1] for m in modes}
    print("| mode | data (ms/step) | compute (ms/step) | total (ms/step) | ÷ plain |\n|---|---:|---:|---:|---:|")
    for m in modes:
        print(f"| {m} | {1e3 * med[m][0]:.1f} | {1e3 * med[m][1]:.1f} | {1e3 * total[m]:.1f} | "
              f"{total[m] / total['plain']:.3f} |")
    print(f"\ncached ÷ plain: **{total['cached'] / total['plain']:.3f}**; loader share of the cached step: "
          f"{med['cached'][0] / total['cached']:.1%}")
    if "online" in modes:
        print(f"online ÷ cached: **{total['online'] / total['cached']:.2f}**")
    cfg = load_config(args.student)
    d = PreparedData(args.workdir / "prepared")
    s_params = sum(p.numel() for p in build_model(cfg.model, d.vocab_size, device="meta").parameters())
    t_params = sum(sum(p.numel() for p in t.parameters()) for t in load_teachers(
        [args.workdir / "teachers" / "gpt2", args.workdir / "teachers" / "llama"], "cpu")[0])
    print(f"FLOP estimate for online ÷ cached: (6·{s_params / 1e6:.2f}M + 2·{t_params / 1e6:.2f}M) / "
          f"(6·{s_params / 1e6:.2f}M) = {(6 * s_params + 2 * t_params) / (6 * s_params):.2f} "
          f"(parameter FLOPs only; the 16k-vocab softmax/KL work is extra)\n")
    print("| mode | peak RSS (MiB) | ÷ plain |\n|---|---:|---:|")
    rss = {}
    for m in modes:
        out = subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--student", args.student,
                              "--steps", "5", "--rss", m], capture_output=True, text=True, check=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
        rss[m] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    for m in modes:
        print(f"| {m} | {rss[m]:.0f} | {rss[m] / rss['plain']:.3f} |")
    np.set_printoptions()


if __name__ == "__main__":
    main()
