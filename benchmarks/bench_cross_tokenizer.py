"""Cross-tokenizer cache against the same-tokenizer top-k cache of the same teacher: dump time, bytes per student
token, distillation step time and peak RSS, measured side by side in one run; and the FLOP / size estimate for an
8B, 128k-vocabulary teacher over the strict-small corpus.

Usage (after `make demo`, which leaves a trained CPU teacher and its prepared dir in runs/demo):
    python benchmarks/bench_cross_tokenizer.py --workdir runs/demo --corpus ../shared/data [--windows 256]
        [--top-k 64] [--steps 8] [--step-batch-size 32] [--reps 3] [--json F]
    python benchmarks/bench_cross_tokenizer.py --workdir runs/demo --rss MODE   # one mode's peak RSS (child)

One teacher (the demo's LLaMA, on the demo's 4,096-id byte-level BPE with a prefix space, NFKC) is dumped twice
over the same number of student windows: (same) over its own prepared dir, the ordinary top-k dump; (cross) over a
second prepared dir of the same corpus whose student tokenizer differs in kind: a Unigram model of the same size
with SentencePiece-style spaces, trained here on the same text. Which side holds
the "foreign" tokenizer does not change what is measured: one teacher forward over the text of a window plus its
left context, the alignment, and what is stored. Steps: the study's student (`--student`) at the same vocabulary
size, one optimizer step each, from the same-tokenizer cache (topk_tail, `chunked_head_loss`) and from the
cross-tokenizer cache (exact_match / uld / gold, `cross_tokenizer_head_loss`; alm, `alm_head_loss`, which projects
chunks of whole windows once each; alm_gradmag, the same with `distill.alm_weighting=gradmag`, twice), modes
interleaved per repetition. Peak RSS: each mode in its own child process, the
peak during its steps. Medians over --reps. Also the stored bytes of ALM's arrays per teacher and per student token.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from report_json import emit

from bbl.cache.kinds.cross_tokenizer import DEFAULT_CONTEXT_TOKENS

STEP_MODES = ("same", "exact_match", "uld", "gold", "alm", "alm_gradmag")
ALPHA, TEMPERATURE = 0.5, 1.0


def foreign_prepared(workdir: Path, corpus: Path, vocab_size: int) -> Path:
    """A prepared dir of the same corpus under a Unigram model of the same size (SentencePiece-style spaces,
    `foreign_tokenizer.py`), trained on the same cleaned text: a student tokenizer that differs in kind (built once)."""
    from foreign_tokenizer import prepared_lines, train_tokenizer

    from bbl.data.prepare import prepare

    out = workdir / "bench-cross-tokenizer" / "prepared"
    if (out / "manifest.json").exists():
        return out
    tok_dir = train_tokenizer(prepared_lines(workdir / "prepared"), "unigram", vocab_size,
                              out.parent / "tokenizer")
    prepare(corpus / "babylm_10M", corpus / "babylm_dev", out, tokenizer_dir=tok_dir, progress=False, log=print)
    return out


def dumps(args, foreign: Path, tmp: Path) -> dict:
    """Each dump --reps times, the two kinds interleaved: seconds, bytes, student tokens, teacher tokens."""
    from bbl.cache.compute.cross_tokenizer import CrossTokenizerConfig
    from bbl.cache.dump import dump_logits
    from bbl.cache.dump_config import DumpConfig

    teacher = [args.workdir / "teachers" / args.teacher]
    runs = {"same": [], "cross": [], "cross, no context": []}
    for rep in range(args.reps):
        for name in runs:
            out = tmp / f"{name.replace(', ', '-').replace(' ', '-')}-{rep}.zarr"
            start = time.perf_counter()
            if name == "same":
                summary = dump_logits(teacher, args.workdir / "prepared", out, DumpConfig(
                    top_k=args.top_k, temperature=TEMPERATURE, max_windows=args.windows, batch_size=args.batch_size),
                    progress=False, log=lambda *a, **k: None)
            else:
                summary = dump_logits(teacher, foreign, out, CrossTokenizerConfig(
                    top_k=args.top_k, temperature=TEMPERATURE, max_windows=args.windows, batch_size=args.batch_size,
                    **({"context_tokens": 0} if "no context" in name else {})), progress=False,
                    log=lambda *a, **k: None)
            seconds = time.perf_counter() - start
            runs[name].append({"seconds": seconds, **{k: v for k, v in summary.items() if isinstance(v, int | float)}})
            if rep > 0 or name == "cross, no context":  # the steps read rep 0's caches
                shutil.rmtree(out)
    return runs


def batches(cache: Path, batch_size: int, count: int):
    from bbl.cache import CacheDataset, open_cache, shuffled_order

    reader = open_cache(cache)
    ds = CacheDataset(reader, seed=0)
    order = shuffled_order(len(ds), reader.chunk_windows, seed=0, epoch=0)
    out = []
    for start in range(0, batch_size * count, batch_size):
        rows = [ds[int(order[i % len(order)])] for i in range(start, start + batch_size)]
        out.append({k: torch.stack([r[k] for r in rows]) for k in rows[0]})
    return out, reader


def step_setup(args, mode: str, tmp: Path):
    """(model, optimizer, batches, loss function of (model, batch)) of one step mode."""
    from bbl.config import load_config
    from bbl.losses.chunked import KDTargets, chunked_head_loss
    from bbl.losses.cross_tokenizer import cross_tokenizer_head_loss, gold_weights, student_twin_mask
    from bbl.models.build import build_model, forward_without_logits

    cache = tmp / ("same-0.zarr" if mode == "same" else "cross-0.zarr")
    data, reader = batches(cache, args.step_batch_size, args.steps)
    cfg = load_config(args.student)
    vocab = args.vocab_size
    model = build_model(cfg.model, vocab, seed=0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if mode == "same":
        def loss_fn(batch):
            hidden = forward_without_logits(model, batch["input_ids"]).hidden_states[-1]
            kd = KDTargets("topk_tail", topk_ids=batch["topk_ids"], topk_logprobs=batch["topk_logprobs"],
                           tail_logprob=batch["tail_logprob"])
            return chunked_head_loss(hidden, model.get_output_embeddings().weight, batch["labels"], kd=kd,
                                     alpha=ALPHA, temperature=TEMPERATURE)[0]
        return model, opt, data, loss_fn
    if mode in ("alm", "alm_gradmag"):  # what the alm reading runs with loss_impl: chunked, the paper's settings
        from bbl.config import DistillConfig
        from bbl.losses.alm import ALMSettings, alm_head_loss

        boundary = torch.from_numpy(reader.read_static("student_boundary").astype(bool))
        alm = ALMSettings.from_config(DistillConfig(alm_weighting="gradmag" if mode == "alm_gradmag" else "alpha"))

        def alm_fn(batch):
            hidden = forward_without_logits(model, batch["input_ids"]).hidden_states[-1]
            targets = {k: v for k, v in batch.items() if k not in ("input_ids", "labels")}
            return alm_head_loss(hidden, model.get_output_embeddings().weight, batch["labels"], targets,
                                 boundary=boundary, settings=alm, ce_weight=ALPHA, kd_weight=1 - ALPHA)[0]
        return model, opt, data, alm_fn
    mapping = reader.read_static("teacher_to_student")
    settings = {"variant": mode, "alpha": ALPHA, "temperature": TEMPERATURE,
                "student_twins": torch.from_numpy(student_twin_mask(mapping, vocab)),
                "gold_weights": gold_weights(float((mapping >= 0).mean()), None, None)}

    def loss_fn(batch):  # what DistillTrainer.cross_tokenizer_loss runs with loss_impl: chunked
        hidden = forward_without_logits(model, batch["input_ids"]).hidden_states[-1]
        targets = {k: v for k, v in batch.items() if k not in ("input_ids", "labels")}
        return cross_tokenizer_head_loss(hidden, model.get_output_embeddings().weight, batch["labels"], targets,
                                         **settings)[0]
    return model, opt, data, loss_fn


def one_step(model, opt, loss_fn, batch) -> float:
    start = time.perf_counter()
    loss = loss_fn(batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def steps(args, tmp: Path) -> dict:
    """Median seconds per step of each mode, modes interleaved per repetition (one warm-up step each)."""
    setups = {m: step_setup(args, m, tmp) for m in STEP_MODES}
    for model, opt, data, loss_fn in setups.values():
        one_step(model, opt, loss_fn, data[0])
    times = {m: [] for m in STEP_MODES}
    for _ in range(args.reps):
        for m, (model, opt, data, loss_fn) in setups.items():
            times[m].append(statistics.median(one_step(model, opt, loss_fn, b) for b in data[1:]))
    return times


def rss_child(args, mode: str, tmp: Path) -> dict:
    """RSS (MiB) of a child process that sets up `mode` and runs its steps: the peak during the steps (VmHWM reset
    after the setup), the RSS when they start and the whole process's peak (the setup's: imports, cache reads)."""
    cmd = [sys.executable, __file__, "--workdir", str(args.workdir), "--rss", mode, "--tmp", str(tmp),
           "--steps", str(args.steps), "--step-batch-size", str(args.step_batch_size), "--student", args.student,
           "--vocab-size", str(args.vocab_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    before, steps_peak, process_peak = map(float, out.strip().splitlines()[-1].split())
    return {"peak": steps_peak, "before_steps": before, "process_peak": process_peak}


def alm_bytes(cache: Path) -> dict:
    """Stored bytes of ALM's arrays in a cross-tokenizer cache, per stored teacher token and per student token."""
    from bbl.cache import open_cache
    from bbl.cache.kinds.cross_tokenizer import ALM_ARRAYS

    reader = open_cache(cache)
    teacher_tokens = int(reader.read_array("teacher_lengths", 0, reader.num_windows).sum())
    stored = {name: sum(f.stat().st_size for f in (cache / name).rglob("*") if f.is_file()) for name in ALM_ARRAYS}
    total = sum(stored.values())
    return {"bytes": stored, "per_teacher_token": total / teacher_tokens,
            "per_student_token": total / (reader.num_windows * reader.seq_len)}


def vm_kib(key: str) -> float:
    """A /proc/self/status figure in KiB (VmRSS: resident now; VmHWM: peak since start or the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    raise KeyError(key)


def estimate_8b(measured: dict, args) -> dict:
    """FLOPs and bytes of a cross-tokenizer dump of an 8B, 128,256-id teacher over the 10M-word strict-small corpus
    into a 16,000-id student, from the ratios measured here (stated assumptions, no GPU)."""
    from flop_estimates import ASSUMPTIONS

    student_tokens = ASSUMPTIONS["tokens_per_epoch"]
    ratio = measured["teacher_tokens_per_student_token"]
    context = measured["context_share"]
    vocab_cache = json.loads((Path(__file__).parent.parent / "docs/results/benchmarks/vocab-cache.json").read_text())
    id_bytes = (vocab_cache["results"]["Llama 3 128,256"]["bytes_per_token"]
                - vocab_cache["results"]["paper 16,000"]["bytes_per_token"])
    parameters = 8.03e9
    teacher_tokens = student_tokens * ratio * (1 + context)
    flops = ASSUMPTIONS["forward_flops_per_parameter_token"] * parameters * teacher_tokens
    bytes_per_token = measured["cross_bytes_per_student_token"] + id_bytes * ratio
    return {
        "parameters": parameters, "parameters_why": "Llama 3.1 8B (8.03B with its 128,256-id embedding and head)",
        "student_tokens": student_tokens, "student_tokens_why": ASSUMPTIONS["tokens_per_epoch_why"],
        "teacher_tokens_per_student_token": ratio,
        "teacher_tokens_per_student_token_why": "measured here between two 4,096-id tokenizers; a 128k vocabulary "
                                               "cuts English text into fewer tokens than a 16k one, so this errs high",
        "context_share": context, "context_share_why": "teacher tokens of left context read per stored one: the "
                                                       "default --context-tokens 64 over 128-token windows",
        "forward_flops": flops, "minutes_at_sustained": flops / ASSUMPTIONS["sustained_flop_per_s"] / 60,
        "sustained_flop_per_s": ASSUMPTIONS["sustained_flop_per_s"],
        "bf16_weights_gib": parameters * ASSUMPTIONS["bf16_bytes_per_parameter"] / 2 ** 30,
        "bytes_per_student_token": bytes_per_token,
        "bytes_per_student_token_why": "measured here at this top-k, plus per teacher token the extra bytes of "
                                       "128,256-id over 16,000-id top-64 ids (docs/results/benchmarks/vocab-cache.json)",
        "cache_gb": bytes_per_token * student_tokens / 1e9,
    }


def machine() -> str:
    """The CPU, its core count and the library versions, in words."""
    import platform

    import transformers
    import zarr

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return (f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, zarr {zarr.__version__}")


def median(values):
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--corpus", type=Path, default=Path("../shared/data"))
    ap.add_argument("--teacher", default="llama", help="teacher dir under WORKDIR/teachers")
    ap.add_argument("--student", default="student-study")
    ap.add_argument("--windows", type=int, default=256)
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--step-batch-size", type=int, default=32, help="windows per step (student-study's batch)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--rss", choices=STEP_MODES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.rss:  # child: one mode's steps, then its peak RSS in MiB
        model, opt, data, loss_fn = step_setup(args, args.rss, args.tmp)
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM, so it is the steps' own peak
        before = vm_kib("VmRSS")
        for batch in data:
            one_step(model, opt, loss_fn, batch)
        print(before / 1024, vm_kib("VmHWM") / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return
    foreign = foreign_prepared(args.workdir, args.corpus, args.vocab_size)
    with tempfile.TemporaryDirectory(prefix="bench-xtok-") as name:
        tmp = Path(name)
        dump_runs = dumps(args, foreign, tmp)
        alm_storage = alm_bytes(tmp / "cross-0.zarr")
        step_runs = steps(args, tmp)
        rss = {m: rss_child(args, m, tmp) for m in STEP_MODES}
    same, cross, bare = dump_runs["same"][0], dump_runs["cross"][0], dump_runs["cross, no context"][0]
    seconds = {k: median([r["seconds"] for r in v]) for k, v in dump_runs.items()}
    step = {m: median(v) for m, v in step_runs.items()}
    measured = {
        "same_bytes_per_student_token": same["bytes"] / same["tokens"],
        "cross_bytes_per_student_token": cross["bytes"] / cross["tokens"],
        "teacher_tokens_per_student_token": cross["teacher_tokens_per_window"] / (cross["tokens"] / cross["windows"]),
        "context_share": DEFAULT_CONTEXT_TOKENS / (cross["tokens"] / cross["windows"]),
        "aligned_fraction": cross["aligned_fraction"],
        "alm_arrays": alm_storage,
    }
    report = {
        "command": " ".join(["python", *sys.argv]), "windows": args.windows, "top_k": args.top_k,
        "reps": args.reps, "steps": args.steps, "batch_size": args.batch_size,
        "step_batch_size": args.step_batch_size, "student": args.student, "date": time.strftime("%Y-%m-%d"),
        "torch_threads": torch.get_num_threads(), "machine": machine(), "dump_runs": dump_runs, "step_runs": step_runs,
        "dump_seconds": seconds, "step_seconds": step, "peak_rss_mib": rss, "measured": measured,
        "ratios": {
            "dump_time_cross_over_same": seconds["cross"] / seconds["same"],
            "dump_time_cross_no_context_over_same": seconds["cross, no context"] / seconds["same"],
            "bytes_per_student_token_cross_over_same": measured["cross_bytes_per_student_token"]
            / measured["same_bytes_per_student_token"],
            **{f"step_{m}_over_same": step[m] / step["same"] for m in STEP_MODES[1:]},
            **{f"rss_{m}_over_same": rss[m]["peak"] / rss["same"]["peak"] for m in STEP_MODES[1:]},
        },
        "estimate_8b": estimate_8b(measured, args),
        "bare_cross_summary": bare,
    }
    emit(report, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
