"""The inputs of BENCHMARKS.md's GPU estimates for the `paper` and `babyllama2` presets, as a raw file.

No GPU was lent, so those tables are FLOP counts, not measurements. This script writes what they are computed
from: each preset's parameter count (counted on the meta device at the paper's vocabulary of 16,000: no weights,
no compute), its epochs and micro-batch, and the stated assumptions (tokens per epoch, sustained FLOP/s, cache
bytes per token). `benchmarks/check_results_tables.py` rebuilds both tables from the file (FLOPs = 6 x parameters
x tokens to train, 2 x to run forward; minutes = FLOPs / sustained FLOP/s; memory = parameters x bytes).

    python benchmarks/flop_estimates.py --json docs/results/benchmarks/flop-estimates.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from report_json import emit

PRESETS = ("gpt2-705m", "llama-360m", "llama-58m", "smollama-345m")
VOCAB = 16_000

ASSUMPTIONS = {
    "tokens_per_epoch": 12.2e6,
    "tokens_per_epoch_why": "the full 10M-word BabyLM train split at 1.22 tokens/word, the ratio `bbl prepare` "
                            "measured on 4 of its 10 sources (BENCHMARKS.md, `bbl prepare`; vocabulary 16,000)",
    "sustained_flop_per_s": 400e12,
    "sustained_flop_per_s_why": "one H100 at 40% of its ~990 bf16 TFLOP/s; small models reach less, so the "
                                "minutes are lower bounds",
    "train_flops_per_parameter_token": 6,
    "forward_flops_per_parameter_token": 2,
    "train_bytes_per_parameter": 16,
    "train_bytes_per_parameter_why": "fp32 master weights, gradients and AdamW's two moments (4 x 4 B)",
    "bf16_bytes_per_parameter": 2,
    "cache_bytes_per_token": {
        "paper": 74,
        "paper_why": "top-64 at V 16,000, layout F: 73.8 B/token (BENCHMARKS.md, the logit cache)",
        "babyllama2": 120,
        "babyllama2_why": "top-64 at T = 1, V 4,096: 120.1 B/token (docs/results/sparse-targets/targets-bench.json)",
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = ap.parse_args()
    from bbl.config import load_config
    from bbl.models.build import build_model, count_parameters

    presets = {}
    for name in PRESETS:
        cfg = load_config(name)
        presets[name] = {"parameters": count_parameters(build_model(cfg.model, VOCAB, device="meta")),
                         "epochs": cfg.training.epochs, "micro_batch_size": cfg.training.micro_batch_size,
                         "seq_len": cfg.training.seq_len}
    report = {"command": "python benchmarks/flop_estimates.py --json docs/results/benchmarks/flop-estimates.json",
              "vocab_size": VOCAB, "presets": presets, "assumptions": ASSUMPTIONS}
    emit(report, args.json)


if __name__ == "__main__":
    main()
