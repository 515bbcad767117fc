"""A prepared dir, as every later stage reads it: the manifest, the tokenizer and the memory-mapped streams.

Layout of a prepared dir OUT (written by `bbl.data.prepare`):
    OUT/clean/{train,dev}/<source>.txt   cleaned text, one file per BabyLM source
    OUT/tokenizer/                       Hugging Face tokenizer dir (tokenizer.json, bos/eos/pad set)
    OUT/train.npy, OUT/dev.npy           1-D token streams (uint16 if vocab <= 65,536, else int32)
    OUT/selection.npy, ...               with --selection-fraction: the train words held out (each source's last
                                         lines; `bbl.data.prepare`), every artifact a split has
    OUT/train.word_starts.npy, ...       words starting in each token (uint8; `bbl.data.words`), for words seen
    OUT/train.text, OUT/dev.text         the split's cleaned text as one UTF-8 file (what the stream encodes)
    OUT/train.offsets.npy, ...           (tokens, 2) [start, end) byte span of each token in it (`bbl.data.offsets`)
    OUT/manifest.json                    words/tokens per file, totals, dtype, vocab, sha256 of every artifact
`manifest.json` is written last and atomically: a dir without one is not a prepared dir.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bbl.errors import BblError
from bbl.io import load_json, sha256_file

MANIFEST = "manifest.json"


def stream_dtype(vocab_size: int) -> np.dtype:
    """Smallest integer dtype for token ids in [0, vocab_size): uint16 up to 65,536 ids, else int32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 65_536 else np.dtype(np.int32)


class PreparedData:
    """A prepared dir, validated: the manifest, the tokenizer path and memory-mapped token streams.

    Raises:
        BblError: if the dir has no manifest (not prepared, or interrupted) or a stream's sha256 differs.
    """

    def __init__(self, path: Path, *, check_hashes: bool = False):
        self.path = Path(path)
        rebuild = f"re-run `bbl prepare --force --out {self.path}` with its arguments"
        manifest = load_json(self.path / MANIFEST, fix=rebuild)
        if manifest is None:
            raise BblError(f"{self.path}: not a prepared data dir (no {MANIFEST}); run `bbl prepare --out {self.path}`")
        self.manifest = manifest
        try:
            self.vocab_size: int = manifest["vocab_size"]
            self.tokenizer_sha256: str = manifest["tokenizer"]["sha256"]
            {s["path"] for s in manifest["streams"].values()}
        except (KeyError, TypeError, AttributeError) as e:
            raise BblError(f"{self.path / MANIFEST}: not a manifest of `bbl prepare` (no {e}); {rebuild}") from None
        self.tokenizer_dir = self.path / "tokenizer"
        if check_hashes:
            for s in [*manifest["streams"].values(), *manifest.get("offsets", {}).values(),
                      *manifest.get("texts", {}).values()]:
                if sha256_file(self.path / s["path"]) != s["sha256"]:
                    raise BblError(f"{self.path / s['path']}: sha256 differs from {MANIFEST}; "
                                   f"re-run `bbl prepare --force --out {self.path}`")

    def stream(self, split: str) -> np.ndarray:
        """The split's 1-D token stream, memory-mapped (dtype from the manifest)."""
        if split not in self.manifest["streams"]:
            raise BblError(f"{self.path}: no {split!r} stream; known: {', '.join(self.manifest['streams'])}")
        return np.load(self.path / self.manifest["streams"][split]["path"], mmap_mode="r")

    @property
    def selection(self) -> dict | None:
        """The manifest's record of the held-out selection split (fraction, rule, words, tokens), or None when the
        dir was prepared without `--selection-fraction`."""
        return self.manifest.get("selection")

    @property
    def eval_split(self) -> str:
        """The split that chooses checkpoints and hyperparameters: `selection` when the train words hold one out
        (BabyLlama-2 never chooses on the BabyLM dev set), else `dev`."""
        return "selection" if self.selection else "dev"

    def stream_sha256(self, split: str) -> str:
        return self.manifest["streams"][split]["sha256"]

    def tokenizer_fingerprint(self) -> str:
        """`bbl.data.tokenizer.tokenizer_fingerprint` of this dir's tokenizer."""
        from bbl.data.tokenizer import tokenizer_fingerprint

        return tokenizer_fingerprint(self.tokenizer_dir)

    def mask_token_id(self, *, needed_by: str) -> int:
        """The id of the tokenizer's `<mask>` special (`bbl.data.tokenizer.mask_token_id`).

        Raises:
            BblError: the tokenizer has none (prepared with --no-mask-token, by an older bbl, or with a pretrained
                tokenizer), naming `needed_by` and how to re-prepare.
        """
        from bbl.data.tokenizer import MASK, mask_token_id

        mask = mask_token_id(self.tokenizer_dir)
        if mask is None:
            raise BblError(f"{self.path}: its tokenizer has no {MASK} token, which {needed_by} needs; re-run "
                           f"`bbl prepare` (it reserves {MASK} unless --no-mask-token) into a new --out")
        return mask

    def word_starts(self, split: str) -> np.ndarray:
        """(tokens,) uint8: the words starting in each token of the split's stream (`bbl.data.words`), memory-mapped.

        Raises:
            BblError: a dir prepared before bbl counted words (re-run prepare; its streams stay identical).
        """
        entry = self.manifest.get("word_starts", {}).get(split)
        if entry is None:
            raise BblError(f"{self.path}: prepared by a bbl that did not count words; re-run `bbl prepare` with the "
                           f"same arguments and --out {self.path} (the token streams stay identical)")
        return np.load(self.path / entry["path"], mmap_mode="r")

    def has_offsets(self, split: str = "train") -> bool:
        """Whether this dir records the split's text and token byte spans (prepared by bbl >= issue 31)."""
        return split in self.manifest.get("offsets", {}) and split in self.manifest.get("texts", {})

    def offsets(self, split: str, *, needed_by: str = "this command") -> np.ndarray:
        """(tokens, 2) [start, end) byte span of each token of the split's stream in `text(split)`, memory-mapped.

        Raises:
            BblError: a dir prepared before bbl recorded offsets, naming `needed_by` and the upgrade (re-running
                prepare with the same arguments adds them; the token streams stay identical).
        """
        if not self.has_offsets(split):
            raise BblError(f"{self.path}: records no token offsets into its {split} text, which {needed_by} needs; "
                           f"re-run `bbl prepare` with the same arguments and --out {self.path} to add them (the "
                           f"token streams stay identical)")
        return np.load(self.path / self.manifest["offsets"][split]["path"], mmap_mode="r")

    def text(self, split: str, *, needed_by: str = "this command") -> np.ndarray:
        """The split's cleaned text as (bytes,) uint8, memory-mapped (what `offsets(split)` index). Raises as
        `offsets`."""
        self.offsets(split, needed_by=needed_by)
        path = self.path / self.manifest["texts"][split]["path"]
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=np.uint8)
        return np.memmap(path, dtype=np.uint8, mode="r")
