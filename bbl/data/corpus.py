"""A BabyLM corpus in any of its released layouts, read as named sources (issue 13; docs/commands.md, "Data").

Layouts `bbl prepare --train-dir/--dev-dir` accept:
- BabyLM text dirs: one `<source>.train` / `<source>.dev` file per source. The 2023 release (`babylm_10M/`,
  `babylm_dev/`: aochildes, bnc_spoken, cbt, children_stories, gutenberg, open_subtitles, qed, simple_wikipedia,
  switchboard, wikipedia) and the 2024 one (`train_10M/`, `dev/`: bnc_spoken, childes, gutenberg, open_subtitles,
  simple_wiki, switchboard), whose renamed sources map to the cleaners of the same corpora (`bbl.data.cleaning.SOURCE_ALIASES`).
- A local copy of a Hugging Face dataset (the 2025-2026 data are HF datasets): a file, or a dir of files, saved as
  parquet (`Dataset.to_parquet`), JSON lines (`Dataset.to_json`) or plain text (one document per line). Rows give
  their text in a `text` column and, when present, their source in a `source` / `domain` / `filename` column; rows
  are grouped into one source per value (the `.txt` / no-column case: one source per file, named by its stem).
A source without a cleaner of its own gets generic cleaning and is named in a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bbl.errors import BblError
from bbl.io import read_jsonl

TEXT_COLUMNS = ("text", "TEXT", "content", "sentence")
SOURCE_COLUMNS = ("source", "domain", "filename", "file", "subset")
DATASET_SUFFIXES = (".parquet", ".jsonl", ".json", ".txt")


@dataclass
class Source:
    """One source of a split: its name, the file(s) it came from and its raw text (documents joined by newlines)."""

    name: str
    paths: list[Path]
    text: str
    label: str  # the key of the inputs fingerprint (the file name for BabyLM text files, as before)


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


def read_sources(location: Path, suffix: str) -> list[Source]:
    """The sources of one split, sorted by name, from a BabyLM text dir or a local HF dataset copy (see above).

    Raises:
        BblError: the location is missing or holds no file of any accepted layout, a file is empty or not UTF-8,
            a dataset file has no text column (names the file and its columns).
    """
    location = Path(location)
    if location.is_dir() and sorted(location.glob(f"*.{suffix}")):
        return [Source(p.stem, [p], read_text(p), p.name) for p in sorted(location.glob(f"*.{suffix}"))]
    if location.is_file() and location.suffix in DATASET_SUFFIXES:
        files = [location]
    elif location.is_dir():
        files = sorted(p for p in location.iterdir() if p.suffix in DATASET_SUFFIXES)
    else:
        raise BblError(f"{location}: directory not found; pass the BabyLM dir holding the *.{suffix} files or a "
                       f"local copy of a Hugging Face dataset (parquet, jsonl or txt)")
    if not files:
        raise BblError(f"{location}: no *.{suffix} files and no parquet / jsonl / txt dataset files; pass the BabyLM "
                       f"dir (e.g. babylm_10M/ or train_10M/ for train) or a saved Hugging Face dataset")
    groups: dict[str, tuple[list[Path], list[str]]] = {}
    for f in files:
        for source, text in _rows(f):
            paths, texts = groups.setdefault(source, ([], []))
            if f not in paths:
                paths.append(f)
            texts.append(text)
    return [Source(name, paths, "\n".join(t.rstrip("\n") for t in texts) + "\n", f"{'+'.join(p.name for p in paths)}#{name}")
            for name, (paths, texts) in sorted(groups.items())]


def _rows(path: Path):
    """(source, text) rows of one dataset file."""
    if path.suffix == ".txt":
        for line in read_text(path).splitlines():
            yield path.stem, line
        return
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise BblError(f"{path}: reading parquet needs pyarrow; pip install pyarrow (or save the dataset as "
                           f"jsonl with Dataset.to_json)") from None
        records = pq.read_table(path).to_pylist()
    else:
        records = [row for _, row in read_jsonl(read_text(path).splitlines(), name=str(path),
                                                fix="save the dataset with Dataset.to_json(path, lines=True)")]
    if not records:
        raise BblError(f"{path}: no rows; the dataset file is empty")
    columns = list(records[0])
    text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
    if text_col is None:
        raise BblError(f"{path}: no text column (has {', '.join(columns)}); name it one of {', '.join(TEXT_COLUMNS)}")
    source_col = next((c for c in SOURCE_COLUMNS if c in columns), None)
    for r in records:
        if isinstance(r.get(text_col), str) and r[text_col].strip():
            name = str(r[source_col]) if source_col and r.get(source_col) is not None else path.stem
            yield Path(name).stem if source_col in ("filename", "file") else name, r[text_col]
