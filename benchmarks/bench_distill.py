"""Training step cost: HF plain CE, chunked plain CE, chunked cached KD, chunked online KD; same student and batches.

Usage (after `make demo`):
    python benchmarks/bench_distill.py --workdir runs/demo [--student student-cpu] [--steps 20] [--reps 3] [--json F]
    python benchmarks/bench_distill.py --workdir runs/demo --student llama-58m --vocab-size 16000   # paper student
    python benchmarks/bench_distill.py --workdir runs/demo --rss MODE     # one mode's peak RSS (child process)
Modes: `hf-plain` / `hf-cached` are the model's own (B, S, V) logits with the unfused losses (`loss_impl: hf`);
`plain` / `cached` / `online` are what `bbl` trains with by default (`bbl.chunked_loss`). Reports medians of
per-step times (forward + backward + optimizer step) measured side by side in one process (modes interleaved per
repetition), the data loader's share of the cached step, and each mode's peak RSS in its own child process.
`--json F` also writes every figure to F. `--vocab-size` builds the student for a larger vocabulary than the
prepared one (the cache's ids stay valid), to time the paper's 16,000-id head on data prepared at 4,096.
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

import torch

from bbl.cache import CacheDataset, open_cache, shuffled_order
from bbl.config import load_config
from bbl.data.prepared import PreparedData
from bbl.losses import distillation_loss, reduce_kd, topk_tail_kl
from bbl.losses.chunked import KDTargets, chunked_head_loss
from bbl.models.build import build_model, forward_without_logits
from bbl.models.teachers import load_teachers

MODES = ("hf-plain", "hf-cached", "plain", "cached", "online")


def setup(workdir: Path, student: str, mode: str, vocab_size: int | None = None):
    cfg = load_config(student)
    data = PreparedData(workdir / "prepared")
    model = build_model(cfg.model, vocab_size or data.vocab_size, seed=0).train()
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
    ids, labels = batch["input_ids"], batch["labels"]
    if mode.startswith("hf-"):  # the reference: (B, S, V) logits, unfused losses
        out = model(input_ids=ids, labels=labels)
        loss = out.loss
        if mode == "hf-cached":
            kd = reduce_kd(topk_tail_kl(out.logits, batch["topk_ids"], batch["topk_logprobs"], batch["tail_logprob"],
                                        temperature))
            loss = distillation_loss(out.loss, kd, alpha=alpha, temperature=temperature)
    else:  # what bbl trains with: hidden states only, chunked head + CE + KD
        out = forward_without_logits(model, ids)
        kd = None
        if mode == "cached":
            kd = KDTargets("topk_tail", batch["topk_ids"], batch["topk_logprobs"], batch["tail_logprob"])
        elif mode == "online":
            with torch.no_grad():
                kd = KDTargets("full", teacher_logits=torch.stack([t(input_ids=ids).logits.float()
                                                                    for t in teachers]).mean(0))
        loss, _, _ = chunked_head_loss(out.hidden_states[-1], model.get_output_embeddings().weight, labels, kd=kd,
                                       alpha=alpha, temperature=temperature)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def run_mode(args, mode, steps):
    cfg, model, opt, ds, order, teachers, temperature = setup(args.workdir, args.student, mode, args.vocab_size)
    it = batches(ds, order, cfg.training.batch_size, mode.endswith("cached"))
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


def peak_rss(args, mode) -> float:
    """Peak RSS (MiB) of `mode` run for 5 steps in its own child process."""
    cmd = [sys.executable, __file__, "--workdir", str(args.workdir), "--student", args.student, "--steps", "5",
           "--rss", mode] + (["--vocab-size", str(args.vocab_size)] if args.vocab_size else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--student", default="student-cpu")
    ap.add_argument("--vocab-size", type=int, default=None, help="student vocabulary (default: the prepared one)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rss", choices=MODES, default=None, help="measure one mode's peak RSS and print JSON")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.rss:
        run_mode(args, args.rss, args.steps)
        # VmHWM is this process image's peak; ru_maxrss would include the parent's peak inherited across exec
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
        print(json.dumps({"mode": args.rss, "peak_rss_mib": int(hwm.split()[1]) / 1024}))
        return
    cfg = load_config(args.student)
    vocab = args.vocab_size or PreparedData(args.workdir / "prepared").vocab_size
    s_params = sum(p.numel() for p in build_model(cfg.model, vocab, device="meta").parameters())
    print(f"# training step benchmark: {args.student} ({s_params / 1e6:.2f}M, vocab {vocab}), batch "
          f"{cfg.training.batch_size} x {cfg.training.seq_len}, {args.steps} steps x {args.reps} reps (median), "
          f"{torch.get_num_threads()} torch threads\n")
    modes = [m for m in MODES if m in args.modes.split(",")]
    res = {m: [] for m in modes}
    for _ in range(args.reps):  # interleave modes so drift hits all
        for m in modes:
            res[m].append(run_mode(args, m, args.steps))
    med = {m: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for m, v in res.items()}
    total = {m: med[m][0] + med[m][1] for m in modes}
    rss = {m: peak_rss(args, m) for m in modes}
    base = "hf-plain" if "hf-plain" in modes else modes[0]
    print(f"| mode | data (ms/step) | compute (ms/step) | total (ms/step) | ÷ {base} | peak RSS (MiB) | ÷ {base} |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for m in modes:
        print(f"| {m} | {1e3 * med[m][0]:.1f} | {1e3 * med[m][1]:.1f} | {1e3 * total[m]:.1f} | "
              f"{total[m] / total[base]:.3f} | {rss[m]:.0f} | {rss[m] / rss[base]:.3f} |")
    ratios = {}
    for a, b in (("cached", "hf-plain"), ("cached", "plain"), ("plain", "hf-plain"), ("hf-cached", "hf-plain"),
                 ("online", "cached")):
        if a in modes and b in modes:
            ratios[f"{a}/{b}"] = round(total[a] / total[b], 4)
            ratios[f"rss {a}/{b}"] = round(rss[a] / rss[b], 4)
    print("\n" + "; ".join(f"{k} = **{v:.3f}**" for k, v in ratios.items() if not k.startswith("rss")))
    print("peak RSS: " + "; ".join(f"{k[4:]} = **{v:.3f}**" for k, v in ratios.items() if k.startswith("rss")))
    if "cached" in modes:
        print(f"loader share of the cached step: {med['cached'][0] / total['cached']:.1%}")
    if args.json:
        args.json.write_text(json.dumps({
            "student": args.student, "parameters": s_params, "vocab_size": vocab, "steps": args.steps,
            "reps": args.reps, "threads": torch.get_num_threads(),
            "modes": {m: {"data_ms": 1e3 * med[m][0], "compute_ms": 1e3 * med[m][1], "total_ms": 1e3 * total[m],
                          "peak_rss_mib": rss[m]} for m in modes},
            "ratios": ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
