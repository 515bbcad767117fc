"""Bytes per token, error to the exact targets and dump ÷ forward-only throughput per cache configuration (issue 33).

Usage (teachers trained on a prepared dir, e.g. the demo's runs/demo after `make demo`):
    python benchmarks/bench_storage.py --workdir runs/demo [--windows 256] [--reps 2] [--check-windows 8]
        [--temperature 1] [--configs topk:64,hybrid:4+8/counts,sampled:8/counts+delta,topk:64/step4] [--json F]
    python benchmarks/bench_storage.py --workdir runs/demo --teacher DIR_360M --windows 16 --batch-size 4
        --chunk-windows 8 --reps 2 --configs topk:64,hybrid:8+12    # a paper-sized teacher: 2 chunks of 2 batches
    python benchmarks/bench_storage.py --workdir W --random-teacher llama-360m ...   # a preset's shape, random
        weights at W/prepared's vocabulary (speed only: its errors and bytes are not a trained teacher's)

A configuration is KIND:SIZE[/OPTION+OPTION]: topk:K, sampled:M, hybrid:K+M; options step4 (`--logprob-step
2^-4`; stepN: 2^-N), delta (`--delta-ids`), counts (`--sample-counts`), sel50 (`--kd-fraction 0.5`: errors over
the kept positions only). Per configuration, in one run:
- bytes/token: the whole store (every array and its metadata) over the dumped tokens;
- kl_mean / kl_max: the (k+1)-outcome KL between the exact and the stored top-k + tail (`bbl.cache.compute.fidelity.stored_kl`:
  what rounding the log-probs costs; top-k and hybrid caches), nats per position;
- grad_mean / grad_max: || p_T - r ||_2 per position, r the target the KD loss pulls the student toward (the KD
  gradient's error x T; BENCHMARKS.md, "gradient error against exact targets"): the stored empirical target for
  sampled and hybrid caches; for top-k caches the k ids exact and the tail spread as the student's own q, with the
  first teacher standing in for a student (no student is trained here);
- dump ÷ forward: the teachers' forward-only time (logits of every window, batch 32) over the dump's steady time
  (`summary.seconds`: computing and writing chunks), median of --reps, interleaved; the dump's fixed costs
  (loading and hashing the teachers, creating the store, the closing statistics) are reported apart.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bbl.cache import CacheReader
from bbl.cache.compute.fidelity import stored_kl, target_distribution
from bbl.cache.dump import dump_logits
from bbl.cache.dump_config import DumpConfig
from bbl.cache.inspect import store_bytes
from bbl.data.prepared import PreparedData
from bbl.data.windows import select_train_windows
from bbl.models.ensemble import logit_mean
from bbl.models.teachers import load_teachers, teacher_logits

DEFAULT_CONFIGS = ("topk:64,topk:64/step4,topk:64/delta,hybrid:8+12,hybrid:4+8,hybrid:2+8,hybrid:4+8/counts+delta+step4,"
                   "sampled:32,sampled:12,sampled:8,sampled:4,sampled:8/counts,sampled:8/counts+delta,"
                   "hybrid:4+8/sel50,sampled:12/sel50")


def parse_config(spec: str) -> dict:
    """`DumpConfig` keywords of one configuration spec (see the module docstring)."""
    body, _, options = spec.partition("/")
    kind, _, size = body.partition(":")
    if kind == "topk":
        kw = {"targets": "topk", "top_k": int(size)}
    elif kind == "sampled":
        kw = {"targets": "sampled", "num_samples": int(size)}
    else:
        k, _, m = size.partition("+")
        kw = {"targets": "hybrid", "top_k": int(k), "num_samples": int(m)}
    for opt in filter(None, options.split("+")):
        if opt.startswith("step"):
            kw["logprob_step"] = 2.0 ** -int(opt[4:])
        elif opt.startswith("sel"):
            kw["kd_fraction"] = int(opt[3:]) / 100
        else:
            kw[{"delta": "delta_ids", "counts": "sample_counts"}[opt]] = True
    return kw


def errors(reader: CacheReader, teachers, rows, temperature: float) -> dict:
    """kl_mean/max and grad_mean/max over every position of `rows` (see the module docstring)."""
    kls, grads = [], []
    with torch.inference_mode():
        for r in rows:
            row = reader.read(int(r), int(r) + 1)
            ids = torch.from_numpy(row["input_ids"].astype(np.int64))
            logits = [teacher_logits(m, ids, reader.vocab_size) for m in teachers]
            logp = torch.log_softmax(logit_mean(logits, temperature=temperature), -1)[0].double()
            if "kd_mask" in row:  # the kept positions only
                keep = row.pop("kd_mask")[0]
                logp, logits = logp[keep], [x[:, keep] for x in logits]
                row = {k: v if k == "window_idx" else v[:, keep] for k, v in row.items()}
            p = logp.exp().numpy()
            flat = {k: v[0] for k, v in row.items() if k != "window_idx"}
            target = target_distribution(flat, p.shape[-1])
            if "topk_ids" in flat:
                at = torch.from_numpy(flat["topk_ids"].astype(np.int64))
                exact_tail = torch.logsumexp(logp.scatter(-1, at, float("-inf")), -1).numpy()
                kls.append(stored_kl(logp.gather(-1, at).numpy(), exact_tail, flat["topk_logprobs"],
                                     flat["tail_logprob"]))
            if reader.targets == "topk":  # the tail spread as a stand-in student's q (the first teacher)
                q = torch.softmax(logits[0][0].float() / temperature, -1).double().numpy()
                np.put_along_axis(q, flat["topk_ids"].astype(np.int64), 0.0, axis=-1)
                tail = np.exp(flat["tail_logprob"].astype(np.float64))[:, None]
                target = target + tail * q / q.sum(-1, keepdims=True)
            grads.append(np.linalg.norm(p - target, axis=-1))
    out = {"grad_mean": float(np.concatenate(grads).mean()), "grad_max": float(np.concatenate(grads).max())}
    if kls:
        out.update(kl_mean=float(np.concatenate(kls).mean()), kl_max=float(np.concatenate(kls).max()))
    return out


def random_teacher(preset: str, prepared: Path, tmp: Path) -> Path:
    """A saved model of `preset`'s shape, random weights (seed 0), over `prepared`'s tokenizer: dump speed only."""
    from transformers import AutoTokenizer

    from bbl.config import load_config
    from bbl.models.build import build_model

    data = PreparedData(prepared)
    out = tmp / f"random-{preset}"
    build_model(load_config(preset).model, data.vocab_size, seed=0).save_pretrained(out)
    AutoTokenizer.from_pretrained(data.tokenizer_dir).save_pretrained(out)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--teacher", type=Path, action="append", default=None,
                    help="teacher dir (repeat); default WORKDIR/teachers/gpt2 and llama")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--chunk-windows", type=int, default=256)
    ap.add_argument("--windows", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--check-windows", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--random-teacher", action="append", default=None, metavar="PRESET",
                    help="a teacher of this preset's shape with random weights (repeat; instead of --teacher)")
    args = ap.parse_args()
    w = args.workdir
    tmp = Path(tempfile.mkdtemp(prefix="bbl-storage-"))
    teacher_dirs = (args.teacher or [random_teacher(p, w / "prepared", tmp) for p in args.random_teacher or ()]
                    or [w / "teachers" / "gpt2", w / "teachers" / "llama"])
    bs = args.batch_size
    teachers, _ = load_teachers(teacher_dirs, "cpu")
    data = PreparedData(w / "prepared")
    windows = select_train_windows(data.stream("train"), 128, args.windows, seed=0)
    ids_all = torch.from_numpy(np.stack([windows.window(i) for i in range(len(windows))]).astype(np.int64))
    print(f"# {len(windows)} windows x 128 tokens, T={args.temperature}, {torch.get_num_threads()} torch threads, "
          f"reps={args.reps} (median), check windows {args.check_windows}\n", flush=True)

    def forward_only():
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in range(0, len(ids_all), bs):
                for m in teachers:
                    m(input_ids=ids_all[b:b + bs]).logits.float()
        return time.perf_counter() - t0

    results = []
    try:
        for i, spec in enumerate(args.configs.split(",")):
            config = DumpConfig(temperature=args.temperature, seq_len=128, batch_size=bs, max_windows=args.windows,
                                chunk_windows=args.chunk_windows, seed=0, **parse_config(spec))
            out = tmp / f"c{i}.zarr"
            fwd, steady, total = [], [], []
            for _ in range(args.reps):  # interleaved, so drift hits both
                fwd.append(forward_only())
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                summary = dump_logits(teacher_dirs, w / "prepared", out, config, device="cpu", progress=False,
                                      log=lambda *_: None)
                total.append(time.perf_counter() - t0)
                steady.append(summary["seconds"])
            reader = CacheReader(out)
            rows = np.sort(np.random.default_rng(0).choice(reader.num_windows, args.check_windows, replace=False))
            res = {"config": spec, "bytes_per_token": store_bytes(out) / (reader.num_windows * reader.seq_len),
                   "forward_s": statistics.median(fwd), "dump_steady_s": statistics.median(steady),
                   "dump_fixed_s": statistics.median(t - s for t, s in zip(total, steady, strict=True)),
                   **errors(reader, teachers, rows, args.temperature)}
            res["dump_over_forward"] = res["forward_s"] / res["dump_steady_s"]
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| config | B/token | KL mean | KL max | grad err mean | grad err max | dump ÷ forward | fixed s |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        kl = (f"{r['kl_mean']:.1e} | {r['kl_max']:.1e}" if "kl_mean" in r else "– | –")
        print(f"| {r['config']} | {r['bytes_per_token']:.1f} | {kl} | {r['grad_mean']:.4f} | {r['grad_max']:.4f} | "
              f"{r['dump_over_forward']:.2f} | {r['dump_fixed_s']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "args": {
            k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
