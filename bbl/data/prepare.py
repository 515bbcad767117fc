"""`bbl prepare`: BabyLM files → cleaned text → tokenizer → flat token streams + `manifest.json`.

Three resumable steps (clean, tokenizer, encode), each skipped when its recorded input fingerprint matches, then
the manifest, written last and atomically (the layout: `bbl.data.prepared`).

A selection split (`--selection-fraction F`, BabyLlama-2's notebooks/split_dataset.ipynb of JLTastet/BabyLlama-2,
`test_fraction` 0.05: train_9.5M / select_0.5M): the last lines of each cleaned train source are held out of the
train stream as the `selection` stream, which chooses checkpoints and hyperparameters instead of dev
(`PreparedData.eval_split`). Each source keeps its first round((1 - F) x lines) lines, as that notebook splits.
The tokenizer is trained on the whole cleaned train split, as BabyLlama-2's was (on train_10M_clean), so it is
the same with or without the split.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from bbl import __version__
from bbl.data.cleaning import clean_source, cleaner_of
from bbl.data.corpus import Source, read_sources
from bbl.data.prepared import MANIFEST, stream_dtype
from bbl.errors import BblError
from bbl.io import atomic_write_json, git_blob_sha1, load_json, sha256_file
from bbl.outputs import claim_output

STATE = ".prepare_state.json"
CLEANING_VERSION = 1  # bump when a cleaner changes, so old prepared dirs are rebuilt
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _inputs_fingerprint(sources: dict[str, list], vocab_size: int, tokenizer_sha256: str | None = None,
                        mask_token: bool = True, selection_fraction: float = 0.0) -> dict:
    fp = {
        "files": {split: {s.label: "+".join(sha256_file(p) for p in s.paths) for s in ss}
                  for split, ss in sources.items()},
        "vocab_size": vocab_size,
        "cleaning_version": CLEANING_VERSION,
    }
    if mask_token:  # absent without it, so a dir prepared before `<mask>` existed still matches --no-mask-token
        fp["mask_token"] = True
    if tokenizer_sha256:  # an existing tokenizer (`--tokenizer`) replaces the trained one
        fp.update(vocab_size=None, tokenizer_sha256=tokenizer_sha256)
        fp.pop("mask_token", None)
    if selection_fraction:  # absent without a split, so a dir prepared before it existed still matches
        fp["selection_fraction"] = selection_fraction
    return fp


def check_selection_fraction(fraction: float) -> float:
    """`--selection-fraction`, checked before anything is written: in [0, 1) (0: no selection split).

    Raises:
        BblError: outside [0, 1), naming the option and BabyLlama-2's value.
    """
    if not 0.0 <= fraction < 1.0:
        raise BblError(f"--selection-fraction {fraction}: use a share of each train source's lines in [0, 1), e.g. "
                       f"0.05 (BabyLlama-2's 9.5M / 0.5M words); 0 holds nothing out")
    return float(fraction)


def selection_lines(num_lines: int, fraction: float) -> int:
    """How many of a source's `num_lines` cleaned lines stay in train: round((1 - fraction) x num_lines), Python's
    round as BabyLlama-2's split_file; the rest (its tail) is the selection split."""
    return round((1 - fraction) * num_lines)


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


def _probe_offsets(tokenizer_file: Path, sources: list[Source]) -> None:
    """Before anything is written: the given tokenizer's offsets recover the first lines of every train source
    (`bbl.data.offsets.check_spans`), so a tokenizer that cannot is refused at once, not after cleaning.

    Raises:
        BblError: one line naming the tokenizer, the source line and the character it drops.
    """
    from bbl.data.offsets import PROBE_LINES, encode_lines_with_spans
    from bbl.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_file)
    for src in sources:
        lines = src.text.splitlines(keepends=True)[:PROBE_LINES]
        try:
            for _ in encode_lines_with_spans(tokenizer, lines, where=str(src.paths[0])):
                pass
        except BblError as e:
            raise BblError(f"--tokenizer {tokenizer_file.parent}: {e}") from None


class _State:
    """The prepare state file: the inputs' fingerprint and what each finished step recorded."""

    def __init__(self, out: Path, fingerprint: dict, *, force: bool):
        self.path = out / STATE
        state = {} if force else load_json(self.path, fix="pass --force to rebuild the prepared dir") or {}
        if state and state.get("inputs") != fingerprint and not force:
            raise BblError(f"{out}: holds a prepared dir from different inputs or settings; "
                           f"pass --force to rebuild it or choose another --out")
        if force or state.get("inputs") != fingerprint:
            (out / MANIFEST).unlink(missing_ok=True)
            state = {"inputs": fingerprint, "done": {}}
        self.state = state
        self.done = state["done"]

    def mark(self, step: str, value) -> None:
        self.done[step] = value
        atomic_write_json(self.path, self.state, sort_keys=True)


def prepare(train_dir: Path, dev_dir: Path, out: Path, *, vocab_size: int = 16000, force: bool = False,
            tokenizer_dir: Path | None = None, mask_token: bool = True, selection_fraction: float = 0.0,
            progress: bool = True, log=print) -> dict:
    """`_prepare` into `out` once it is claimed (`bbl.outputs`): new, empty or a prepared dir, one writer at a
    time; a dir holding anything else is refused whatever `force` says.

    Raises:
        BblError: an --out that is a file, under a file, not a prepared dir, unwritable or held by another run;
            and `_prepare`'s errors.
    """
    selection_fraction = check_selection_fraction(selection_fraction)
    with claim_output(out, "prepared", overwrite=force, log=log):
        return _prepare(train_dir, dev_dir, out, vocab_size=vocab_size, force=force, tokenizer_dir=tokenizer_dir,
                        mask_token=mask_token, selection_fraction=selection_fraction, progress=progress, log=log)


def _prepare(train_dir: Path, dev_dir: Path, out: Path, *, vocab_size: int = 16000, force: bool = False,
             tokenizer_dir: Path | None = None, mask_token: bool = True, selection_fraction: float = 0.0,
             progress: bool = True, log=print) -> dict:
    """Run the whole preparation; returns the manifest dict.

    With `tokenizer_dir` (an HF tokenizer dir holding tokenizer.json, e.g. a pretrained teacher's), the corpus is
    encoded with that tokenizer, copied byte for byte into OUT/tokenizer, instead of training one (`vocab_size`
    is then ignored); any HF causal LM with that tokenizer is a valid `--teacher`. Streams (and caches) are int32
    when the vocabulary exceeds 65,536 ids. `mask_token` (default) reserves `<mask>` in a trained tokenizer, which
    masked-LM phases need (`training.objective_schedule`); False gives Baby Llama's exact three specials.
    `selection_fraction` > 0 holds the tail of each train source out as the `selection` split (module docstring).

    Each step (clean, tokenizer, encode) is skipped when its recorded input fingerprint matches; `force` redoes
    them all. The manifest is written last, so an interrupted run leaves no dir a later stage accepts.

    Raises:
        BblError: missing dir, no `*.train` files, empty or non-UTF-8 file, unreachable vocab, or `out` holding
            artifacts from other inputs (without `force`).
    """
    out = Path(out)
    given = _given_tokenizer(tokenizer_dir) if tokenizer_dir is not None else None
    # every layout (bbl.data.corpus), read and validated before anything is written
    files = {"train": read_sources(train_dir, "train"), "dev": read_sources(dev_dir, "dev")}
    if given is not None:
        _probe_offsets(given, files["train"])
    fingerprint = _inputs_fingerprint(files, vocab_size, sha256_file(given) if given else None, mask_token,
                                      selection_fraction)
    state = _State(out, fingerprint, force=force)
    out.mkdir(parents=True, exist_ok=True)
    cleaned = _clean(files, out / "clean", state, progress=progress, log=log)
    tok_dir = _tokenizer(cleaned["train"], out / "tokenizer", state, given=given, vocab_size=vocab_size,
                         mask_token=mask_token, source=str(train_dir), progress=progress, log=log)
    parts = _split_selection(cleaned, selection_fraction) if selection_fraction else \
        {split: [(src, path, None) for src, path in pairs] for split, pairs in cleaned.items()}
    per_file, hashes = _encode(parts, out, tok_dir, state, progress=progress, log=log)
    manifest = _manifest(files, per_file, hashes, tok_dir, fingerprint, tokenizer_dir, selection_fraction)
    atomic_write_json(out / MANIFEST, manifest, sort_keys=True)
    return manifest


def _clean(files: dict[str, list[Source]], clean_dir: Path, state: _State, *, progress: bool,
           log) -> dict[str, list[tuple[Source, Path]]]:
    """Step 1: one cleaned text file per source and split (`bbl.data.cleaning.clean_source`)."""
    from tqdm.auto import tqdm

    cleaned = {split: [(src, clean_dir / split / f"{src.name}.txt") for src in ss] for split, ss in files.items()}
    if state.done.get("clean") and all(c.is_file() for pairs in cleaned.values() for _, c in pairs):
        log("clean: up to date")
        return cleaned
    shutil.rmtree(clean_dir, ignore_errors=True)
    items = [(src, dst) for pairs in cleaned.values() for src, dst in pairs]
    for src, dst in tqdm(items, desc="clean", unit="file", disable=not progress):
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(clean_source(src.name, src.text, where=src.paths[0], warn=log))
    state.mark("clean", True)
    return cleaned


def _tokenizer(train: list[tuple[Source, Path]], tok_dir: Path, state: _State, *, given: Path | None,
               vocab_size: int, mask_token: bool, source: str, progress: bool, log) -> Path:
    """Step 2: the given tokenizer copied byte for byte, or one trained on the cleaned train split only."""
    from bbl.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    tok_file = tok_dir / "tokenizer.json"
    if state.done.get("tokenizer") == (tok_file.is_file() and sha256_file(tok_file)):
        log("tokenizer: up to date")
        return tok_dir
    shutil.rmtree(tok_dir, ignore_errors=True)
    if given is not None:
        tok_dir.mkdir(parents=True)
        for name in TOKENIZER_FILES:
            if (given.parent / name).is_file():
                shutil.copyfile(given.parent / name, tok_dir / name)
        log(f"tokenizer: {given.parent} (given, {load_tokenizer(tok_dir).get_vocab_size():,} ids)")
    else:
        texts = [dst.read_text() for _, dst in train]
        blocks = (block for t in texts for block in _blocks(t))
        save_tokenizer(train_tokenizer(blocks, vocab_size=vocab_size, mask_token=mask_token, show_progress=progress,
                                       source=source), tok_dir)
    state.mark("tokenizer", sha256_file(tok_file))
    return tok_dir


def _split_selection(cleaned: dict[str, list[tuple[Source, Path]]],
                     fraction: float) -> dict[str, list[tuple[Source, Path, tuple[int, int] | None]]]:
    """The encode step's parts with a selection split: each cleaned train source's first `selection_lines` lines
    in `train`, the rest in `selection` (as (source, cleaned file, (first line, end line))); dev whole."""
    parts = {"train": [], "selection": [], "dev": [(src, path, None) for src, path in cleaned["dev"]]}
    for src, path in cleaned["train"]:
        lines = len(path.read_text().splitlines())
        keep = selection_lines(lines, fraction)
        parts["train"].append((src, path, (0, keep)))
        parts["selection"].append((src, path, (keep, lines)))
    if all(first == end for _, _, (first, end) in parts["selection"]):
        raise BblError(f"--selection-fraction {fraction}: holds out no line of any train source (each keeps "
                       f"round((1 - {fraction}) x lines)); raise it, or pass 0 for no selection split")
    return parts


def _encode(parts: dict[str, list[tuple[Source, Path, tuple[int, int] | None]]], out: Path, tok_dir: Path,
            state: _State, *, progress: bool, log) -> tuple[list[dict], dict[str, dict[str, str]]]:
    """Step 3: each split as one flat token stream, its word starts, its text and each token's byte span in it
    (`bbl.data.offsets`); (per-file records, {split: {artifact: sha256}}). Each part is a cleaned file, or the
    lines [first, end) of one (a selection split).

    Raises:
        BblError: a line whose tokens' offsets cannot recover it (`bbl.data.offsets.check_spans`).
    """
    from tqdm.auto import tqdm

    from bbl.data.offsets import encode_lines_with_spans, offsets_dtype
    from bbl.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tok_dir)
    dtype = stream_dtype(tokenizer.get_vocab_size())
    per_file: list[dict] = []
    hashes = {}
    for split, pairs in parts.items():
        paths = {"sha256": out / f"{split}.npy", "word_starts_sha256": out / f"{split}.word_starts.npy",
                 "text_sha256": out / f"{split}.text", "offsets_sha256": out / f"{split}.offsets.npy"}
        record = state.done.get(f"encode_{split}")
        if record and all(p.is_file() and record.get(k) == sha256_file(p) for k, p in paths.items()):
            log(f"encode {split}: up to date")
            per_file += record["files"]
            hashes[split] = {k: record[k] for k in paths}
            continue
        parts, start_parts, texts, span_parts, records = [], [], [], [], []
        base = 0
        for src, dst, span in tqdm(pairs, desc=f"encode {split}", unit="file", disable=not progress):
            text = dst.read_text()
            lines = text.splitlines(keepends=True)
            if span is not None:
                lines = lines[span[0]:span[1]]
                text = "".join(lines)
            encoded = list(encode_lines_with_spans(tokenizer, lines, where=str(dst)))
            line_base = base + np.cumsum([0] + [len(line.encode()) for line in lines[:-1]], dtype=np.int64)
            ids = np.asarray([i for line_ids, _, _ in encoded for i in line_ids], dtype=dtype)
            starts = np.concatenate([w for _, w, _ in encoded]) if encoded else np.zeros(0, dtype=np.uint8)
            spans = (np.concatenate([s + b for (_, _, s), b in zip(encoded, line_base, strict=True)])
                     if encoded else np.zeros((0, 2), dtype=np.int64))
            raw = text.encode()
            base += len(raw)
            parts.append(ids)
            start_parts.append(starts)
            span_parts.append(spans)
            texts.append(raw)
            record = {"split": split, "source": src.name, "cleaner": cleaner_of(src.name) or "generic",
                      "path": ", ".join(map(str, src.paths)), "git_sha1": git_blob_sha1(src.paths[0]),
                      "words": len(src.text.split()), "words_clean": len(text.split()),
                      "words_in_stream": int(starts.sum(dtype=np.int64)), "tokens": len(ids)}
            if span is not None:  # a part of a source, its cleaned lines [first, end): the raw file is split only
                record.update(lines=list(span), words=len(text.split()))  # after cleaning, so words are clean
            records.append(record)
        digests = {}
        spans = np.concatenate(span_parts) if span_parts else np.zeros((0, 2), dtype=np.int64)
        arrays = {"sha256": np.concatenate(parts) if parts else np.zeros(0, dtype=dtype),
                  "word_starts_sha256": np.concatenate(start_parts) if start_parts else np.zeros(0, dtype=np.uint8),
                  "offsets_sha256": spans.astype(offsets_dtype(base))}
        for key, path in paths.items():
            tmp = path.with_name(path.name + ".tmp")
            if key == "text_sha256":
                tmp.write_bytes(b"".join(texts))
            else:
                with open(tmp, "wb") as f:
                    np.save(f, arrays[key])
            os.replace(tmp, path)
            digests[key] = sha256_file(path)
        state.mark(f"encode_{split}", {**digests, "files": records})
        per_file += records
        hashes[split] = digests
    return per_file, hashes


def _manifest(files: dict, per_file: list[dict], hashes: dict[str, dict[str, str]], tok_dir: Path,
              fingerprint: dict, tokenizer_dir: Path | None, selection_fraction: float = 0.0) -> dict:
    """The manifest of a finished preparation (the layout: `bbl.data.prepared`); with a selection split, its
    record under `selection` (absent without one)."""
    from bbl.data.tokenizer import load_tokenizer, mask_token_id

    vocab_size = load_tokenizer(tok_dir).get_vocab_size()
    totals = {}
    for split in hashes:
        rows = [r for r in per_file if r["split"] == split]
        words, tokens = sum(r["words"] for r in rows), sum(r["tokens"] for r in rows)
        totals[split] = {"words": words, "tokens": tokens, "tokens_per_word": round(tokens / max(words, 1), 4),
                         "words_in_stream": sum(r.get("words_in_stream", 0) for r in rows)}
    selection = {} if not selection_fraction else {"selection": {
        "fraction": selection_fraction, "split": "selection", "words": totals["selection"]["words_in_stream"],
        "tokens": totals["selection"]["tokens"],
        "rule": "each cleaned train source's last lines, after its first round((1 - fraction) x lines) "
                "(BabyLlama-2, notebooks/split_dataset.ipynb); chooses checkpoints and sweeps instead of dev"}}
    return {
        **selection,
        "bbl_version": __version__,
        "files": per_file,
        "totals": totals,
        "dtype": stream_dtype(vocab_size).name,
        "vocab_size": vocab_size,
        "mask_token_id": mask_token_id(tok_dir),
        "streams": {split: {"path": f"{split}.npy", "sha256": h["sha256"]} for split, h in hashes.items()},
        "word_starts": {split: {"path": f"{split}.word_starts.npy", "sha256": h["word_starts_sha256"]}
                        for split, h in hashes.items()},
        "texts": {split: {"path": f"{split}.text", "sha256": h["text_sha256"]} for split, h in hashes.items()},
        "offsets": {split: {"path": f"{split}.offsets.npy", "sha256": h["offsets_sha256"]}
                    for split, h in hashes.items()},
        "tokenizer": {"path": "tokenizer/tokenizer.json", "sha256": sha256_file(tok_dir / "tokenizer.json"),
                      "source": str(Path(tokenizer_dir).resolve()) if tokenizer_dir else "trained"},
        "inputs": fingerprint,
    }


def _blocks(text: str, lines_per_block: int = 2000):
    """Split text into blocks of lines so the tokenizer trainer streams it."""
    lines = text.splitlines(keepends=True)
    for i in range(0, len(lines), lines_per_block):
        yield "".join(lines[i:i + lines_per_block])
