"""Cached distillation step time of every `distill.divergence` against forward KL: same student, same batch, same
targets, side by side in one process (the divergences take turns step by step), medians.

Usage:
    python benchmarks/bench_divergences.py [--student student-cpu] [--vocab-size 4096] [--top-k 64] [--steps 5]
        [--reps 3] [--kind topk_tail] [--cache PATH] [--threads N] [--json F]
    python benchmarks/bench_divergences.py --student llama-58m --vocab-size 16000 --batch-size 4   # paper student

The step is what `bbl distill` runs per batch with the default `loss_impl: chunked`: the student's forward to its
last hidden states, the chunked LM head + CE + KD (`bbl.losses.chunked.chunked_head_loss` with the divergence),
backward and an AdamW step. "head" times the chunked loss alone (forward + backward from fixed hidden states),
where the divergences differ. Targets are a synthetic teacher's top-k at T = 2 (a random logit table, the cache's
arrays exactly as `dump-logits` stores them: ids, fp16 log-probs, fp32 tail) unless `--cache` names a real top-k
cache, whose first windows are used. The target: every divergence's step within 1.10x of forward KL's. Wall and
CPU time are both reported: on a machine other jobs share, wall time swings with their load, while this
process's CPU time (with `--threads 1`) stays comparable across the divergences.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bbl.config import load_config
from bbl.losses.chunked import KDTargets, chunked_head_loss
from bbl.losses.divergences import DIVERGENCES, Divergence
from bbl.losses.readings import reading_problem
from bbl.models.build import build_model, forward_without_logits

TEMPERATURE = 2.0
TARGET_RATIO = 1.10


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, top_k: int, seed: int = 0) -> dict:
    """(B, S) input ids and the top-k targets of a random teacher at T = 2, stored as a cache stores them."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=g)
    log_p = torch.log_softmax(torch.randn(batch_size, seq_len, vocab_size, generator=g) * 3 / TEMPERATURE, -1)
    top, top_ids = log_p.topk(top_k, -1)
    tail = torch.logsumexp(log_p.scatter(-1, top_ids, float("-inf")), -1)
    return {"input_ids": ids, "labels": ids.clone(), "topk_ids": top_ids, "topk_logprobs": top.half(),
            "tail_logprob": tail}


def cache_batch(path: Path, batch_size: int) -> dict:
    """The first `batch_size` windows of a top-k cache, as `bbl distill` feeds them."""
    from bbl.cache import CacheDataset, open_cache

    ds = CacheDataset(open_cache(path))
    rows = [ds[i] for i in range(batch_size)]
    return {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "labels", "topk_ids", "topk_logprobs",
                                                           "tail_logprob")}


def timed_step(div: Divergence, model, opt, batch: dict, kd: KDTargets) -> tuple[float, float, float, float]:
    """Seconds of one training step with `div` and of the chunked loss alone (forward + backward from the step's
    hidden states, detached): (step wall, head wall, step CPU, head CPU). CPU time (`time.process_time`, this
    process's threads) is what stays comparable when other jobs share the cores."""
    weight = model.get_output_embeddings().weight
    c0, t0 = time.process_time(), time.perf_counter()
    hidden = forward_without_logits(model, batch["input_ids"]).hidden_states[-1]
    loss, _, _ = chunked_head_loss(hidden, weight, batch["labels"], kd=kd, alpha=0.5, temperature=TEMPERATURE,
                                   divergence=div)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    c1, t1 = time.process_time(), time.perf_counter()
    fixed = hidden.detach().requires_grad_()
    c2, t2 = time.process_time(), time.perf_counter()
    head_loss, _, _ = chunked_head_loss(fixed, weight, batch["labels"], kd=kd, alpha=0.5, temperature=TEMPERATURE,
                                        divergence=div)
    torch.autograd.grad(head_loss, [fixed, weight])
    return t1 - t0, time.perf_counter() - t2, c1 - c0, time.process_time() - c2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", default="student-cpu")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=None, help="windows per step (default: the preset's)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per window (default: the preset's)")
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--kind", choices=("topk_tail", "topk_renorm"), default="topk_tail")
    ap.add_argument("--cache", type=Path, default=None, help="a top-k cache to take the batch from")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per divergence per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's); 1 keeps CPU "
                    "time free of the spin-waits of a pool whose other thread is descheduled on a shared machine")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.student)
    batch_size, seq_len = args.batch_size or cfg.training.batch_size, args.seq_len or cfg.training.seq_len
    if args.cache:
        batch = cache_batch(args.cache, batch_size)
        seq_len, top_k = batch["input_ids"].shape[1], batch["topk_ids"].shape[-1]
    else:
        batch, top_k = synthetic_batch(batch_size, seq_len, args.vocab_size, args.top_k), args.top_k
    names = [n for n in DIVERGENCES if reading_problem(n, args.kind) is None]
    params = sum(p.numel() for p in build_model(cfg.model, args.vocab_size, device="meta").parameters())
    print(f"# divergence step benchmark: {args.student} ({params / 1e6:.2f}M, vocab {args.vocab_size}), batch "
          f"{batch_size} x {seq_len}, top-{top_k} {args.kind} targets "
          f"({'cache ' + str(args.cache) if args.cache else 'synthetic'}), T = {TEMPERATURE}, {args.steps} steps x "
          f"{args.reps} reps (median), {torch.get_num_threads()} torch threads\n")
    # One student and optimizer for all (a step's time does not depend on which divergence moved the weights);
    # the divergences take turns step by step, so drift on a shared machine hits each of them alike.
    model = build_model(cfg.model, args.vocab_size, seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    kd = KDTargets(args.kind, batch["topk_ids"], batch["topk_logprobs"], batch["tail_logprob"])
    for n in names:  # warm-up
        timed_step(Divergence(n), model, opt, batch, kd)
    runs = {n: [] for n in names}  # per repetition: the median over its steps of each of timed_step's figures
    for _ in range(args.reps):
        times = {n: [] for n in names}
        for _ in range(args.steps):
            for n in names:
                times[n].append(timed_step(Divergence(n), model, opt, batch, kd))
        for n in names:
            runs[n].append(tuple(statistics.median(t[i] for t in times[n]) for i in range(4)))
    fig = {n: [statistics.median(r[i] for r in v) for i in range(4)] for n, v in runs.items()}
    step, head, step_cpu, head_cpu = ({n: fig[n][i] for n in names} for i in range(4))
    base = "forward_kl"
    print("| divergence | step wall (ms) | ÷ forward_kl | step CPU (ms) | ÷ forward_kl | head wall (ms) | "
          "÷ forward_kl | head CPU (ms) | ÷ forward_kl |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        print(" | ".join([f"| {n}"] + [f"{1e3 * d[n]:.1f} | {d[n] / d[base]:.3f}" for d in (step, step_cpu, head,
                                                                                             head_cpu)]) + " |")
    for label, d in (("wall", step), ("CPU", step_cpu)):
        worst = max((n for n in names if n != base), key=lambda n: d[n] / d[base])
        print(f"slowest by step {label} time: {worst}, {d[worst] / d[base]:.3f}x forward KL "
              f"({'within' if d[worst] / d[base] <= TARGET_RATIO else 'over'} the {TARGET_RATIO:.2f}x target)")
    record = {"student": args.student, "parameters": params, "vocab_size": args.vocab_size, "batch_size": batch_size,
              "seq_len": seq_len, "top_k": top_k, "kind": args.kind, "targets": str(args.cache or "synthetic"),
              "temperature": TEMPERATURE, "steps": args.steps, "reps": args.reps, "threads": torch.get_num_threads(),
              "divergences": {n: {"step_ms": 1e3 * step[n], "step_ratio": step[n] / step[base],
                                  "step_cpu_ms": 1e3 * step_cpu[n], "step_cpu_ratio": step_cpu[n] / step_cpu[base],
                                  "head_ms": 1e3 * head[n], "head_ratio": head[n] / head[base],
                                  "head_cpu_ms": 1e3 * head_cpu[n], "head_cpu_ratio": head_cpu[n] / head_cpu[base],
                                  "reps_step_ms": [1e3 * r[0] for r in runs[n]]} for n in names},
              "target_ratio": TARGET_RATIO}
    print(json.dumps(record))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
