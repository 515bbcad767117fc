"""BabyLM files → cleaned text → tokenizer → flat token streams + `manifest.json` (`bbl prepare`).

Layout of a prepared dir OUT:
    OUT/clean/{train,dev}/<source>.txt   cleaned text, one file per BabyLM source
    OUT/tokenizer/                       Hugging Face tokenizer dir (tokenizer.json, bos/eos/pad set)
    OUT/train.npy, OUT/dev.npy           1-D token streams (uint16 if vocab <= 65,536, else int32)
    OUT/train.word_starts.npy, ...       words starting in each token (uint8; `bbl.words`), for words seen
    OUT/manifest.json                    words/tokens per file, totals, dtype, vocab, sha256 of every artifact
`manifest.json` is written last and atomically: a dir without one is not a prepared dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from bbl import __version__
from bbl.cleaning import CLEANERS, clean_generic
from bbl.corpus import SOURCE_ALIASES, Source, cleaner_of, read_sources
from bbl.errors import BblError

MANIFEST = "manifest.json"
STATE = ".prepare_state.json"
CLEANING_VERSION = 1  # bump when a cleaner changes, so old prepared dirs are rebuilt


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git blob SHA-1 of a file (what `git hash-object FILE` prints)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def stream_dtype(vocab_size: int) -> np.dtype:
    """Smallest integer dtype for token ids in [0, vocab_size): uint16 up to 65,536 ids, else int32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 65_536 else np.dtype(np.int32)


def read_text(path: Path) -> str:
    """Read a BabyLM file as UTF-8.

    Raises:
        BblError: if the file is empty or holds bytes that are not UTF-8 (the message gives the byte offset).
    """
    data = path.read_bytes()
    if not data.strip():
        raise BblError(f"{path}: file is empty; remove it or restore it from the BabyLM release")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BblError(f"{path}: not UTF-8 at byte offset {e.start} ({data[e.start:e.start + 4]!r}); "
                       f"re-encode the file as UTF-8 (e.g. iconv -t UTF-8)") from None


def _atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _load_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _inputs_fingerprint(sources: dict[str, list], vocab_size: int, tokenizer_sha256: str | None = None) -> dict:
    fp = {
        "files": {split: {s.label: "+".join(sha256_file(p) for p in s.paths) for s in ss}
                  for split, ss in sources.items()},
        "vocab_size": vocab_size,
        "cleaning_version": CLEANING_VERSION,
    }
    if tokenizer_sha256:  # an existing tokenizer (`--tokenizer`) replaces the trained one
        fp.update(vocab_size=None, tokenizer_sha256=tokenizer_sha256)
    return fp


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _given_tokenizer(tokenizer_dir: Path) -> Path:
    """The `tokenizer.json` of an existing HF tokenizer dir (a teacher's), checked before anything is written.

    Raises:
        BblError: no such dir or no fast-tokenizer file in it.
    """
    file = Path(tokenizer_dir) / "tokenizer.json"
    if not file.is_file():
        raise BblError(f"{tokenizer_dir}: no tokenizer.json (a fast tokenizer); save one with "
                       f"AutoTokenizer.from_pretrained(...).save_pretrained(DIR) and pass that --tokenizer")
    return file


def prepare(train_dir: Path, dev_dir: Path, out: Path, *, vocab_size: int = 16000, force: bool = False,
            tokenizer_dir: Path | None = None, progress: bool = True, log=print) -> dict:
    """Run the whole preparation; returns the manifest dict.

    With `tokenizer_dir` (an HF tokenizer dir holding tokenizer.json, e.g. a pretrained teacher's), the corpus is
    encoded with that tokenizer, copied byte for byte into OUT/tokenizer, instead of training one (`vocab_size`
    is then ignored); any HF causal LM with that tokenizer is a valid `--teacher`. Streams (and caches) are int32
    when the vocabulary exceeds 65,536 ids.

    Each step (clean, tokenizer, encode) is skipped when its recorded input fingerprint matches; `force` redoes
    them all. The manifest is written last, so an interrupted run leaves no dir a later stage accepts.

    Raises:
        BblError: missing dir, no `*.train` files, empty or non-UTF-8 file, unreachable vocab, or `out` holding
            artifacts from other inputs (without `force`).
    """
    from tqdm.auto import tqdm

    from bbl.tokenizer import encode_lines_with_word_starts, load_tokenizer, save_tokenizer, train_tokenizer

    out = Path(out)
    given = _given_tokenizer(tokenizer_dir) if tokenizer_dir is not None else None
    # every layout (bbl.corpus), read and validated before anything is written
    files = {"train": read_sources(train_dir, "train"), "dev": read_sources(dev_dir, "dev")}
    fingerprint = _inputs_fingerprint(files, vocab_size, sha256_file(given) if given else None)

    state = _load_json(out / STATE) or {}
    if state and state.get("inputs") != fingerprint and not force:
        raise BblError(f"{out}: holds a prepared dir from different inputs or settings; "
                       f"pass --force to rebuild it or choose another --out")
    if force or state.get("inputs") != fingerprint:
        if (out / MANIFEST).exists():
            (out / MANIFEST).unlink()
        state = {"inputs": fingerprint, "done": {}}
    out.mkdir(parents=True, exist_ok=True)
    done = state["done"]

    def mark(step: str, value) -> None:
        done[step] = value
        _atomic_write_json(out / STATE, state)

    # 1. Clean: one output file per source and split.
    clean_dir = out / "clean"
    cleaned: dict[str, list[tuple[Source, Path]]] = {}
    for split, ss in files.items():
        cleaned[split] = [(src, clean_dir / split / f"{src.name}.txt") for src in ss]
    if not done.get("clean") or not all(c.is_file() for pairs in cleaned.values() for _, c in pairs):
        shutil.rmtree(clean_dir, ignore_errors=True)
        items = [(split, src, dst) for split, pairs in cleaned.items() for src, dst in pairs]
        for _split, src, dst in tqdm(items, desc="clean", unit="file", disable=not progress):
            cleaner = cleaner_of(src.name)
            if cleaner is None:
                log(f"warning: {src.paths[0]}: unknown BabyLM source {src.name!r}; generic cleaning only (known: "
                    f"{', '.join([*CLEANERS, *SOURCE_ALIASES])})")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(CLEANERS.get(cleaner, clean_generic)(src.text))
        mark("clean", True)
    else:
        log("clean: up to date")

    # 2. Tokenizer, on the cleaned train split only.
    tok_dir = out / "tokenizer"
    tok_file = tok_dir / "tokenizer.json"
    if done.get("tokenizer") == (tok_file.is_file() and sha256_file(tok_file)):
        log("tokenizer: up to date")
    else:
        shutil.rmtree(tok_dir, ignore_errors=True)
        if given is not None:  # `--tokenizer`: the given one, byte for byte
            tok_dir.mkdir(parents=True)
            for name in TOKENIZER_FILES:
                if (given.parent / name).is_file():
                    shutil.copyfile(given.parent / name, tok_dir / name)
            log(f"tokenizer: {given.parent} (given, {load_tokenizer(tok_dir).get_vocab_size():,} ids)")
        else:
            train_texts = [dst.read_text() for _, dst in cleaned["train"]]
            blocks = (block for t in train_texts for block in _blocks(t))
            tok = train_tokenizer(blocks, vocab_size=vocab_size, show_progress=progress, source=str(train_dir))
            save_tokenizer(tok, tok_dir)
        mark("tokenizer", sha256_file(tok_file))
    tokenizer = load_tokenizer(tok_dir)
    dtype = stream_dtype(tokenizer.get_vocab_size())

    # 3. Encode each split into one flat stream.
    per_file: list[dict] = []
    stream_hashes, word_start_hashes = {}, {}
    for split, pairs in cleaned.items():
        npy, starts_npy = out / f"{split}.npy", out / f"{split}.word_starts.npy"
        key = f"encode_{split}"
        record = done.get(key)
        if record and npy.is_file() and record["sha256"] == sha256_file(npy) and starts_npy.is_file() and \
                record.get("word_starts_sha256") == sha256_file(starts_npy):
            log(f"encode {split}: up to date")
            per_file += record["files"]
            stream_hashes[split] = record["sha256"]
            word_start_hashes[split] = record["word_starts_sha256"]
            continue
        parts, start_parts, records = [], [], []
        for src, dst in tqdm(pairs, desc=f"encode {split}", unit="file", disable=not progress):
            text = dst.read_text()
            lines = text.splitlines(keepends=True)
            encoded = list(encode_lines_with_word_starts(tokenizer, lines))
            ids = np.asarray([i for line_ids, _ in encoded for i in line_ids], dtype=dtype)
            starts = np.concatenate([w for _, w in encoded]) if encoded else np.zeros(0, dtype=np.uint8)
            parts.append(ids)
            start_parts.append(starts)
            records.append({"split": split, "source": src.name, "cleaner": cleaner_of(src.name) or "generic",
                            "path": ", ".join(map(str, src.paths)), "git_sha1": git_blob_sha1(src.paths[0]),
                            "words": len(src.text.split()), "words_clean": len(text.split()),
                            "words_in_stream": int(starts.sum(dtype=np.int64)), "tokens": len(ids)})
        digests = []
        for path, arrays, empty in ((npy, parts, dtype), (starts_npy, start_parts, np.uint8)):
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, np.concatenate(arrays) if arrays else np.zeros(0, dtype=empty))
            os.replace(tmp, path)
            digests.append(sha256_file(path))
        mark(key, {"sha256": digests[0], "word_starts_sha256": digests[1], "files": records})
        per_file += records
        stream_hashes[split], word_start_hashes[split] = digests

    totals = {}
    for split in files:
        rows = [r for r in per_file if r["split"] == split]
        words, tokens = sum(r["words"] for r in rows), sum(r["tokens"] for r in rows)
        totals[split] = {"words": words, "tokens": tokens, "tokens_per_word": round(tokens / max(words, 1), 4),
                         "words_in_stream": sum(r.get("words_in_stream", 0) for r in rows)}
    manifest = {
        "bbl_version": __version__,
        "files": per_file,
        "totals": totals,
        "dtype": dtype.name,
        "vocab_size": tokenizer.get_vocab_size(),
        "streams": {split: {"path": f"{split}.npy", "sha256": h} for split, h in stream_hashes.items()},
        "word_starts": {split: {"path": f"{split}.word_starts.npy", "sha256": h}
                        for split, h in word_start_hashes.items()},
        "tokenizer": {"path": "tokenizer/tokenizer.json", "sha256": sha256_file(tok_file),
                      "source": str(Path(tokenizer_dir).resolve()) if tokenizer_dir else "trained"},
        "inputs": fingerprint,
    }
    _atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _blocks(text: str, lines_per_block: int = 2000):
    """Split text into blocks of lines so the tokenizer trainer streams it."""
    lines = text.splitlines(keepends=True)
    for i in range(0, len(lines), lines_per_block):
        yield "".join(lines[i:i + lines_per_block])


class PreparedData:
    """A prepared dir, validated: the manifest, the tokenizer path and memory-mapped token streams.

    Raises:
        BblError: if the dir has no manifest (not prepared, or interrupted) or a stream's sha256 differs.
    """

    def __init__(self, path: Path, *, check_hashes: bool = False):
        self.path = Path(path)
        manifest = _load_json(self.path / MANIFEST)
        if manifest is None:
            raise BblError(f"{self.path}: not a prepared data dir (no {MANIFEST}); run `bbl prepare --out {self.path}`")
        self.manifest = manifest
        self.vocab_size: int = manifest["vocab_size"]
        self.tokenizer_dir = self.path / "tokenizer"
        self.tokenizer_sha256: str = manifest["tokenizer"]["sha256"]
        if check_hashes:
            for s in manifest["streams"].values():
                if sha256_file(self.path / s["path"]) != s["sha256"]:
                    raise BblError(f"{self.path / s['path']}: sha256 differs from {MANIFEST}; "
                                   f"re-run `bbl prepare --force --out {self.path}`")

    def stream(self, split: str) -> np.ndarray:
        """The split's 1-D token stream, memory-mapped (dtype from the manifest)."""
        if split not in self.manifest["streams"]:
            raise BblError(f"{self.path}: no {split!r} stream; known: {', '.join(self.manifest['streams'])}")
        return np.load(self.path / self.manifest["streams"][split]["path"], mmap_mode="r")

    def stream_sha256(self, split: str) -> str:
        return self.manifest["streams"][split]["sha256"]

    def word_starts(self, split: str) -> np.ndarray:
        """(tokens,) uint8: the words starting in each token of the split's stream (`bbl.words`), memory-mapped.

        Raises:
            BblError: a dir prepared before bbl counted words (re-run prepare; its streams stay identical).
        """
        entry = self.manifest.get("word_starts", {}).get(split)
        if entry is None:
            raise BblError(f"{self.path}: prepared by a bbl that did not count words; re-run `bbl prepare` with the "
                           f"same arguments and --out {self.path} (the token streams stay identical)")
        return np.load(self.path / entry["path"], mmap_mode="r")
