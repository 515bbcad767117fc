"""The BabyLM 2025 zero-shot tasks of `bbl eval`: names, default data per suite, and the readers that turn each
task's files into the items the official pipeline scores (`evaluation_pipeline/sentence_zero_shot/read_files.py`
of babylm/evaluation-pipeline-2025) or into the rows of its reading task (`evaluation_pipeline/reading/run.py`).

EWoK is read from its password-protected zip in memory, never unpacked: its terms forbid plain-text copies.
"""

from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from bbl.errors import BblError
from bbl.io import read_jsonl

ZERO_SHOT = ("blimp", "supplement", "ewok", "entity_tracking", "wug_adj", "reading")
"""The zero-shot tasks of the BabyLM 2025 suite bbl scores (COMPS and wug_past: no data here)."""
SUITES = ("full", "fast")
DATA_NAMES = {
    "blimp": {"full": "blimp_filtered", "fast": "blimp_fast"},
    "supplement": {"full": "supplement_filtered", "fast": "supplement_fast"},
    "ewok": {"full": "ewok_filtered", "fast": "ewok_fast"},
    "entity_tracking": {"full": "entity_tracking", "fast": "entity_tracking_fast"},
    "wug_adj": {"full": "wug_adj_nominalization", "fast": "wug_adj_nominalization"},
    "reading": {"full": "reading", "fast": "reading"},
}
"""Each task's data dir under the pipeline's `evaluation_data/{full_eval,fast_eval}/` (its eval_zero_shot*.sh)."""


def suite_data(task: str, suite: str, locate) -> tuple[Path, bool]:
    """(the data dir of `task` in `suite`, whether it fell back): `locate(DATA_NAMES[task][suite])`, or the other
    suite's dir when only that one exists (here: EWoK only as its fast zip, entity tracking only in full). One rule
    for `bbl eval`'s defaults and the pipeline presets' `eval_suite`.

    Args:
        locate: a dir name -> Path (e.g. DATA / name).
    """
    path = Path(locate(DATA_NAMES[task][suite]))
    other = Path(locate(DATA_NAMES[task]["fast" if suite == "full" else "full"]))
    if not path.exists() and other.exists():
        return other, True
    return path, False


SUITE_DIRS = {"full": "full_eval", "fast": "fast_eval"}
"""The suites' folders under the pipeline's `evaluation_data/`."""


def suite_root(eval_data: Path, suite: str) -> Path:
    """The folder of `suite` in a copy of the pipeline's `evaluation_data/` as it is: `eval_data/{full,fast}_eval`,
    or `eval_data` itself when it is already a suite's folder (holds any task's data dir).

    Raises:
        BblError: neither.
    """
    eval_data = Path(eval_data)
    if (eval_data / SUITE_DIRS[suite]).is_dir():
        return eval_data / SUITE_DIRS[suite]
    names = {n for names in DATA_NAMES.values() for n in names.values()}
    if eval_data.is_dir() and any((eval_data / n).exists() or (eval_data / f"{n}.zip").exists() for n in names):
        return eval_data
    raise BblError(f"--eval-data {eval_data}: no {SUITE_DIRS[suite]}/ inside and no task data dir; pass the "
                   "pipeline's evaluation_data/ (holding full_eval/ and fast_eval/) or one of those two")


def in_layout(eval_data: Path, suite: str):
    """`locate` for `suite_data` in a copy of the pipeline's `evaluation_data/`: NAME in the suite's folder
    (`suite_root`), else in the other suite's folder (where `suite_data` finds a fallback), each as `NAME` or as the
    organisers' `NAME.zip` (EWoK); a name found nowhere is its path in the suite's folder."""
    root = suite_root(eval_data, suite)
    other = Path(eval_data) / SUITE_DIRS["fast" if suite == "full" else "full"]
    folders = [root] + ([other] if other.is_dir() and other != root else [])

    def locate(name: str) -> Path:
        for folder in folders:
            for path in (folder / name, folder / f"{name}.zip"):
                if path.exists():
                    return path
        return root / name
    return locate


def resolve_task_data(tasks, suite: str, locate, *, given: dict | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    """Each zero-shot task's data: `given[task]` (the user's), else its dir in `suite` (`suite_data`: the other
    suite's when only that one exists).

    Args:
        tasks: the tasks asked (others are left out); locate: a dir name -> Path.
    Returns:
        ({task: path}, {task: the dir name the suite asked for, where the other suite's data is scored instead}).
    """
    given = dict(given or {})
    paths, fallbacks = {}, {}
    for task in (t for t in ZERO_SHOT if t in tasks):
        if given.get(task) is not None:
            paths[task] = Path(given[task])
            continue
        paths[task], fell_back = suite_data(task, suite, locate)
        if fell_back:
            fallbacks[task] = DATA_NAMES[task][suite]
    return paths, fallbacks


def pipeline_dataset(task: str, path: Path, suite: str) -> str | None:
    """The dataset folder of a task's predictions in the pipeline's layout, as its collation looks them up
    (`collate_preds.py`: blimp/blimp_filtered, ewok/ewok_fast, ...): the data dir's own name (a zip's stem) when it
    is one of the pipeline's names for the task, else the suite's name, whatever the source folder is called (an
    EWoK copy in `my_ewok/` is filed as ewok_filtered under `--suite full`). None for reading (no dataset folder)."""
    if task == "reading":
        return None
    path = Path(path)
    own = path.stem if path.is_file() else path.name
    return own if own in DATA_NAMES[task].values() else DATA_NAMES[task][suite]


PIPELINE_TASK = {"blimp": "blimp", "supplement": "blimp", "ewok": "ewok", "entity_tracking": "entity_tracking",
                 "wug_adj": "wug_adj", "reading": "reading"}
"""The pipeline's `--task` for each bbl task (the supplement runs as task blimp on another dir)."""
EWOK_PASSWORD = b"BabyLM2025"
"""The password of the organisers' EWoK zips, published in the pipeline's README."""
READING_FILE = "reading_data.csv"
PANDAS_NA = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
"""The strings `pandas.read_csv` reads as missing by default: the pipeline reads the reading CSV with pandas, so
a context "None" (the word) is missing there, and bbl reads it the same way."""


@dataclass(frozen=True)
class RankingItem:
    """One item of a completion-ranking task: which of `sentences` does the model prefer? The correct one is
    index 0 (the pipeline's `label`, always 0)."""

    sentences: tuple[str, ...]
    """The full texts the model reads."""
    completions: tuple[str, ...]
    """The end of each sentence whose tokens are scored (the whole sentence for BLiMP and WUG)."""
    uid: str
    """The pipeline's UID: the subset the item counts in and the key of its predictions."""
    metadata: dict = field(default_factory=dict)
    """The pipeline's aggregation keys (UID, field, context_type, ...) -> this item's value."""
    ratio: float | None = None
    """WUG only: the human preference for sentence 0."""


def jsonl_sources(path: Path, *, option: str, password: bytes | None = None) -> list[tuple[str, list[str]]]:
    """(file stem, lines) of every `*.jsonl` in a dir, or in a zip (a `.zip` path, or a dir holding one zip and no
    `*.jsonl`), sorted by stem. Zip members are read in memory with `password`; nothing is written to disk.

    Raises:
        BblError: the path is missing, holds no `*.jsonl`, or the zip cannot be read (wrong password, not a zip).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if files:
            return [(f.stem, f.read_text(encoding="utf-8").splitlines()) for f in files]
        zips = sorted(path.glob("*.zip"))
        if len(zips) != 1:
            raise BblError(f"{path}: no *.jsonl files; pass {option} the dir of the task's *.jsonl files or its zip")
        path = zips[0]
    if not path.is_file():
        raise BblError(f"{path}: task data not found; pass {option} with the task's data dir (or zip)")
    try:
        with zipfile.ZipFile(path) as z:
            members = sorted((m for m in z.namelist() if m.endswith(".jsonl")), key=lambda m: Path(m).stem)
            out = [(Path(m).stem, z.read(m, pwd=password).decode("utf-8").splitlines()) for m in members]
    except (zipfile.BadZipFile, RuntimeError) as e:
        raise BblError(f"{path}: cannot read the zip ({e}); pass {option} the organisers' zip") from None
    if not out:
        raise BblError(f"{path}: the zip holds no *.jsonl files; pass {option} the task's zip")
    return out


def _rows(name: str, lines: list[str], origin: Path, max_items: int | None) -> list[dict]:
    rows = []
    for _, row in read_jsonl(lines, name=f"{origin}:{name}.jsonl"):
        rows.append(row)
        if max_items is not None and len(rows) >= max_items:
            break
    return rows


def _need(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise BblError(f"{where}: missing field {missing[0]!r}; every row needs {', '.join(keys)}")


def decode_pair(row: dict, stem: str) -> RankingItem:
    """A BLiMP / supplement row as the pipeline's `decode_blimp`: both sentences scored whole; rows with a `field`
    keep their UID and linguistics_term, supplement rows take the file stem as UID."""
    sentences = (row["sentence_good"], row["sentence_bad"])
    if "field" in row:
        meta = {"field": "syntax/semantics" if row["field"] == "syntax_semantics" else row["field"],
                "UID": row["UID"], "linguistics_term": row["linguistics_term"]}
    else:
        meta = {"field": "supplement", "UID": stem, "linguistics_term": "supplement"}
    return RankingItem(sentences, sentences, meta["UID"], meta)


def decode_ewok(row: dict) -> RankingItem:
    """An EWoK row as the pipeline's `decode_ewok` (without --full_sentence_scores, as its scripts run it): both
    targets after Context1, scoring only " " + target."""
    targets = (row["Target1"], row["Target2"])
    meta = {"UID": row["Domain"], "context_type": row["ContextType"], "context_contrast": row["ContextDiff"],
            "target_contrast": row["TargetDiff"]}
    return RankingItem(tuple(" ".join([row["Context1"], t]) for t in targets), tuple(" " + t for t in targets),
                       row["Domain"], meta)


def decode_entity_tracking(row: dict, stem: str) -> RankingItem:
    """An entity-tracking row as the pipeline's `decode_entity_tracking`: prefix + each option, the option scored;
    UID `<file>_<numops>_ops`."""
    uid = f"{stem}_{row['numops']}_ops"
    return RankingItem(tuple(row["input_prefix"] + o for o in row["options"]), tuple(row["options"]), uid,
                       {"UID": uid})


def decode_wug(row: dict, task: str = "wug_adj") -> RankingItem:
    """A WUG row as the pipeline's `decode_wug`: the two tab-separated sentences scored whole; UID = the task."""
    sentences = tuple(row["sentences"].split("\t"))
    return RankingItem(sentences, sentences, task, {"UID": task}, ratio=float(row["ratio"]))


REQUIRED = {"blimp": ("sentence_good", "sentence_bad"), "supplement": ("sentence_good", "sentence_bad"),
            "ewok": ("Context1", "Target1", "Target2", "Domain", "ContextType", "ContextDiff", "TargetDiff"),
            "entity_tracking": ("input_prefix", "options", "numops"), "wug_adj": ("sentences", "ratio")}


def read_items(task: str, path: Path, *, option: str, max_items: int | None = None) -> dict[str, list[RankingItem]]:
    """{file stem: items} of a ranking task's data (first `max_items` rows of each file if given).

    Raises:
        BblError: missing data, malformed JSON or a row without the task's fields (names file:line).
    """
    password = EWOK_PASSWORD if task == "ewok" else None
    out = {}
    for stem, lines in jsonl_sources(path, option=option, password=password):
        items = []
        for i, row in enumerate(_rows(stem, lines, path, max_items), 1):
            _need(row, REQUIRED[task], f"{path}:{stem}.jsonl:{i}")
            if task == "ewok":
                items.append(decode_ewok(row))
            elif task == "entity_tracking":
                items.append(decode_entity_tracking(row, stem))
            elif task == "wug_adj":
                items.append(decode_wug(row, task))
            else:
                items.append(decode_pair(row, stem))
        if not items:
            raise BblError(f"{path}:{stem}.jsonl: no items; the file is empty")
        out[stem] = items
    return out


def reading_file(path: Path, *, option: str) -> Path:
    """The reading CSV: `path` itself, or `path/reading_data.csv`.

    Raises:
        BblError: neither exists.
    """
    path = Path(path)
    file = path / READING_FILE if path.is_dir() else path
    if not file.is_file():
        raise BblError(f"{file}: reading data not found; pass {option} the pipeline's reading/{READING_FILE}")
    return file


def read_reading(path: Path, *, option: str = "--task-data reading=PATH") -> dict[str, list]:
    """Columns of the reading CSV as the pipeline reads it (`pd.read_csv(..., dtype={'item': str})`, then a missing
    `item` filled with the string "None"): strings or None for text columns, float (NaN if missing) for numbers.

    Returns:
        {column: list of length N}; text columns item, word, prev_item, prev_word; every other column float.
    Raises:
        BblError: the file is missing or lacks a column the task needs.
    """
    file = reading_file(path, option=option)
    with open(file, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    need = ("item", "word", "prev_item", "prev_word", "Subtlex_log10", "length", "context_length", "prev_length",
            "RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound", "self_paced_reading_time")
    if not rows or any(k not in rows[0] for k in need):
        missing = [k for k in need if not rows or k not in rows[0]]
        raise BblError(f"{file}: missing column {missing[0]!r}; pass the pipeline's {READING_FILE}")
    text = {"item", "word", "prev_item", "prev_word", "word2", "sentence"}
    cols: dict[str, list] = {}
    for key in rows[0]:
        if key in text:
            cols[key] = [None if r[key] in PANDAS_NA else r[key] for r in rows]
        elif key:
            cols[key] = [_float(r[key]) for r in rows]
    cols["item"] = ["None" if v is None else v for v in cols["item"]]
    return cols


def _float(value: str) -> float:
    if value in PANDAS_NA:
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan

