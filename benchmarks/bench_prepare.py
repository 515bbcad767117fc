"""`bbl prepare` on real BabyLM data: wall time, tokens, tokens/word, cleaning words/s, tokenization tokens/s.

Usage: python benchmarks/bench_prepare.py [--data ../shared/data] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bbl.cleaning import CLEANERS, clean_generic
from bbl.data import find_split_files, prepare, read_text
from bbl.tokenizer import encode_lines, load_tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    walls, clean_rates, tok_rates = [], [], []
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = prepare(args.data / "babylm_10M", args.data / "babylm_dev", Path(tmp), progress=False,
                        log=lambda *_: None)
            walls.append(time.perf_counter() - t0)
            texts = {p: read_text(p) for d, s in (("babylm_10M", "train"), ("babylm_dev", "dev"))
                     for p in find_split_files(args.data / d, s)}
            words = sum(len(t.split()) for t in texts.values())
            t0 = time.perf_counter()
            cleaned = [CLEANERS.get(p.stem, clean_generic)(t) for p, t in texts.items()]
            clean_rates.append(words / (time.perf_counter() - t0))
            tok = load_tokenizer(Path(tmp) / "tokenizer")
            lines = [line for t in cleaned for line in t.splitlines(keepends=True)]
            t0 = time.perf_counter()
            n = sum(len(ids) for ids in encode_lines(tok, lines))
            tok_rates.append(n / (time.perf_counter() - t0))
    t = m["totals"]
    print(f"bbl prepare on {args.data}: median wall {statistics.median(walls):.1f}s over {args.reps} runs "
          f"(all steps, from scratch)")
    print(f"train: {t['train']['words']:,} words -> {t['train']['tokens']:,} tokens "
          f"({t['train']['tokens_per_word']} tokens/word); dev: {t['dev']['words']:,} words -> "
          f"{t['dev']['tokens']:,} tokens ({t['dev']['tokens_per_word']} tokens/word)")
    print(f"cleaning: {statistics.median(clean_rates):,.0f} words/s; tokenization (encode_batch, train+dev): "
          f"{statistics.median(tok_rates):,.0f} tokens/s")


if __name__ == "__main__":
    main()
