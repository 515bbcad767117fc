"""`bbl prepare` on real BabyLM data: wall time, tokens, tokens/word, cleaning words/s, tokenization tokens/s, and
the cost of counting word starts per token (issue 13): encoding with and without it, side by side.

Usage: python benchmarks/bench_prepare.py [--data ../shared/data] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bbl.data.cleaning import CLEANERS, clean_generic, cleaner_of
from bbl.data.corpus import read_sources
from bbl.data.prepare import prepare
from bbl.data.tokenizer import encode_lines, encode_lines_with_word_starts, load_tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    walls, clean_rates, tok_rates, word_rates = [], [], [], []
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = prepare(args.data / "babylm_10M", args.data / "babylm_dev", Path(tmp), progress=False,
                        log=lambda *_: None)
            walls.append(time.perf_counter() - t0)
            sources = [src for d, s in (("babylm_10M", "train"), ("babylm_dev", "dev"))
                       for src in read_sources(args.data / d, s)]
            words = sum(len(src.text.split()) for src in sources)
            t0 = time.perf_counter()
            cleaned = [CLEANERS.get(cleaner_of(src.name), clean_generic)(src.text) for src in sources]
            clean_rates.append(words / (time.perf_counter() - t0))
            tok = load_tokenizer(Path(tmp) / "tokenizer")
            lines = [line for t in cleaned for line in t.splitlines(keepends=True)]
            t0 = time.perf_counter()
            n = sum(len(ids) for ids in encode_lines(tok, lines))
            tok_rates.append(n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            n = sum(len(ids) for ids, _ in encode_lines_with_word_starts(tok, lines))
            word_rates.append(n / (time.perf_counter() - t0))
    t = m["totals"]
    print(f"bbl prepare on {args.data}: median wall {statistics.median(walls):.1f}s over {args.reps} runs "
          f"(all steps, from scratch)")
    print(f"train: {t['train']['words']:,} words -> {t['train']['tokens']:,} tokens "
          f"({t['train']['tokens_per_word']} tokens/word); dev: {t['dev']['words']:,} words -> "
          f"{t['dev']['tokens']:,} tokens ({t['dev']['tokens_per_word']} tokens/word)")
    print(f"cleaning: {statistics.median(clean_rates):,.0f} words/s; tokenization (encode_batch, train+dev): "
          f"{statistics.median(tok_rates):,.0f} tokens/s; with word starts counted: "
          f"{statistics.median(word_rates):,.0f} tokens/s (ratio {statistics.median(word_rates) / statistics.median(tok_rates):.2f})")


if __name__ == "__main__":
    main()
