"""Bytes per token and fidelity of each cache kind (issue 15): top-k, sampled, hybrid.

Usage (after `make study`, which leaves the study's teachers and a student in runs/study):
    python benchmarks/bench_targets.py --workdir runs/study [--windows 256] [--temperature 1]
        [--configs topk:64,topk:8,sampled:12,sampled:32,hybrid:8+12] [--json F]

For each configuration: a real dump of the same `--windows` windows (bytes per token of the compressed store, dump
seconds), then on `--check-windows` of them the teachers' exact p_T against the target r the loss pulls the student
toward. The KD gradient with respect to the student's logits is (q - r) / T, so per position
    grad error = || p_T - r ||_2        (the gradient's error x T)      and     TV = ½ || p_T - r ||_1
measure how far each stored target is from full KD. For sampled and hybrid r is the stored empirical target
(`bbl.cache_tools.target_distribution`); topk_renorm's r is the top-k renormalised; topk_tail's r is exact on the
k ids and spreads the tail mass in proportion to the student's own q (so it needs `--student`, a trained student
dir; the study's baseline seed 0 by default).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bbl.cache import CacheReader
from bbl.cache.dump import dump_logits
from bbl.cache.dump_config import DumpConfig
from bbl.cache.inspect import store_bytes
from bbl.cache.verify import target_distribution
from bbl.models.teachers import load_teachers


def parse_config(spec: str) -> dict:
    kind, _, value = spec.partition(":")
    if kind == "topk":
        return {"targets": "topk", "top_k": int(value)}
    if kind == "sampled":
        return {"targets": "sampled", "num_samples": int(value)}
    k, _, s = value.partition("+")
    return {"targets": "hybrid", "top_k": int(k), "num_samples": int(s)}


def fidelity(reader: CacheReader, teachers, student, rows: np.ndarray, temperature: float) -> dict:
    """Mean grad error and TV over every position of `rows` (see the module docstring)."""
    errs, tvs, errs_renorm, tvs_renorm = [], [], [], []
    with torch.inference_mode():
        for r in rows:
            row = reader.read(int(r), int(r) + 1)
            ids = torch.from_numpy(row["input_ids"].astype(np.int64))
            mean = torch.stack([m(input_ids=ids).logits.float() for m in teachers]).mean(0)[0] / temperature
            p = torch.softmax(mean, -1).double().numpy()
            flat = {k: v[0] for k, v in row.items() if k != "window_idx"}
            target = target_distribution(flat, p.shape[-1])
            if reader.targets == "topk":
                mass = target.sum(-1, keepdims=True)
                renorm = target / mass
                errs_renorm.append(np.linalg.norm(p - renorm, axis=-1))
                tvs_renorm.append(0.5 * np.abs(p - renorm).sum(-1))
                q = torch.softmax(student(input_ids=ids).logits.float()[0] / temperature, -1).double().numpy()
                q_off = q.copy()
                np.put_along_axis(q_off, flat["topk_ids"].astype(np.int64), 0.0, axis=-1)
                tail = np.exp(flat["tail_logprob"].astype(np.float64))[:, None]
                target = target + tail * q_off / q_off.sum(-1, keepdims=True)
            errs.append(np.linalg.norm(p - target, axis=-1))
            tvs.append(0.5 * np.abs(p - target).sum(-1))
    out = {"grad_error": float(np.concatenate(errs).mean()), "tv": float(np.concatenate(tvs).mean())}
    if errs_renorm:
        out.update(renorm_grad_error=float(np.concatenate(errs_renorm).mean()),
                   renorm_tv=float(np.concatenate(tvs_renorm).mean()))
    return out


def main():
    from transformers import AutoModelForCausalLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("runs/study"))
    ap.add_argument("--student", type=Path, default=None, help="default: WORKDIR/study/runs/baseline/seed0")
    ap.add_argument("--windows", type=int, default=256)
    ap.add_argument("--check-windows", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--configs", default="topk:64,topk:16,topk:8,sampled:12,sampled:32,hybrid:8+12")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    teacher_dirs = [args.workdir / "teachers" / "gpt2", args.workdir / "teachers" / "llama"]
    student_dir = args.student or args.workdir / "study" / "runs" / "baseline" / "seed0"
    teachers, _ = load_teachers(teacher_dirs, "cpu")
    student = AutoModelForCausalLM.from_pretrained(str(student_dir)).eval()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(args.configs.split(",")):
            cfg = parse_config(spec)
            out = Path(tmp) / f"c{i}.zarr"
            t0 = time.perf_counter()
            config = DumpConfig(temperature=args.temperature, seq_len=args.seq_len, max_windows=args.windows,
                                **{"top_k": None if cfg.get("targets") == "sampled" else 64, **cfg})
            dump_logits(teacher_dirs, args.workdir / "prepared", out, config, progress=False, log=lambda *_: None)
            seconds = time.perf_counter() - t0
            reader = CacheReader(out)
            tokens = reader.num_windows * reader.seq_len
            rows = np.sort(np.random.default_rng(0).choice(reader.num_windows, args.check_windows, replace=False))
            fid = fidelity(reader, teachers, student, rows, args.temperature)
            res = {"config": spec, **cfg, "bytes_per_token": store_bytes(out) / tokens, "dump_seconds": seconds, **fid}
            results.append(res)
            print(json.dumps(res), flush=True)
    print("\n| config | B/token | grad error ‖p−r‖₂ | TV(p, r) | dump s |\n|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['config']} | {r['bytes_per_token']:.1f} | {r['grad_error']:.4f} | {r['tv']:.4f} | "
              f"{r['dump_seconds']:.1f} |")
        if "renorm_tv" in r:
            print(f"| {r['config']} renormalised | (same) | {r['renorm_grad_error']:.4f} | {r['renorm_tv']:.4f} | |")
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "args": vars(args) | {
            "workdir": str(args.workdir), "student": str(student_dir), "json": str(args.json)}, "results": results},
            indent=2))


if __name__ == "__main__":
    main()
