"""The (Super)GLUE tasks of the BabyLM 2025 fine-tuning evaluation: which JSONL fields each task reads, how a
pair's two sides are built from them, how many labels it has, and their tokenization with truncation counted.

Fields, templates and label counts follow babylm/evaluation-pipeline-2025 `evaluation_pipeline/finetune/
dataset.py` (`Dataset.__init__`'s `match task`, `load_file`) and `eval_finetuning.sh` (`--num_labels`); the
files are the pipeline's `evaluation_data/full_eval/glue_filtered/<task>.{train,valid}.jsonl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bbl.errors import BblError
from bbl.io import read_jsonl

PIPELINE_DATA = "evaluation_data/full_eval/glue_filtered"
"""Where the pipeline keeps these files (OSF ryjfm), named in the fix of a missing-file error."""


@dataclass(frozen=True)
class TaskFormat:
    """How one task's JSONL row becomes a (first, second) text pair and a label (`dataset.py` `load_file`)."""

    first_keys: tuple[str, ...]
    """Fields of the first side, joined with one space, or filled into `first_template`."""
    second_keys: tuple[str, ...]
    """Fields of the second side, joined with one space."""
    num_labels: int
    """Classes (eval_finetuning.sh `--num_labels`: 3 for MNLI, 2 otherwise); `label` is an int in [0, num_labels)."""
    first_template: str | None = None
    """A `str.format` template for the first side's fields, None = join them with spaces."""


TASK_FORMATS = {
    "boolq": TaskFormat(("question",), ("passage",), 2),
    "mnli": TaskFormat(("premise",), ("hypothesis",), 3),
    "mrpc": TaskFormat(("sentence1",), ("sentence2",), 2),
    "multirc": TaskFormat(("question", "answer"), ("paragraph",), 2, "Question: {} Answer: {}"),
    "qqp": TaskFormat(("question1",), ("question2",), 2),
    "rte": TaskFormat(("sentence1",), ("sentence2",), 2),
    "wsc": TaskFormat(("span2_text", "span1_text"), ("text",), 2, 'Does "{}" refer to "{}" in this passage?'),
}
"""The seven tasks `eval_finetuning.sh` runs, as `dataset.py` reads them (its cola, qnli and sst2 are not run)."""
FINETUNE_TASKS = tuple(TASK_FORMATS)


def check_finetune_tasks(tasks: list[str]) -> None:
    """Raises BblError naming an unknown task and the known ones."""
    bad = [t for t in tasks if t not in TASK_FORMATS]
    if bad:
        raise BblError(f"--tasks: unknown task(s) {', '.join(bad)}; use {', '.join(FINETUNE_TASKS)}")
    if not tasks:
        raise BblError(f"no task: pass --tasks, among {', '.join(FINETUNE_TASKS)}")


def train_valid_files(data_dir: Path, task: str) -> tuple[Path, Path]:
    """(train, valid) JSONL paths of `task` in `data_dir`; the pipeline trains on train and both validates and
    predicts on valid (`eval_finetuning.sh` passes the valid file as `--valid_data` and `--predict_data`).

    Raises:
        BblError: the dir or either file is missing (BoolQ and MultiRC ship here without train files).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BblError(f"{data_dir}: no such data dir; pass --task-data the dir holding <task>.train.jsonl and "
                       f"<task>.valid.jsonl (the pipeline's {PIPELINE_DATA})")
    train, valid = data_dir / f"{task}.train.jsonl", data_dir / f"{task}.valid.jsonl"
    for path, split in ((train, "training"), (valid, "validation")):
        if not path.is_file():
            raise BblError(f"{path}: no {split} file for {task}; copy {task}.{path.suffixes[0][1:]}.jsonl from the "
                           f"pipeline's {PIPELINE_DATA} into {data_dir}, or leave {task} out of --tasks")
    return train, valid


def read_examples(path: Path, task: str, *, limit: int | None = None) -> tuple[list[tuple[str, str]], list[int]]:
    """The (first, second) text pairs and int labels of a task's JSONL file, in file order (the first `limit`).

    The first side is `first_template.format(*fields)` or the fields joined by one space, the second side its
    fields joined by one space (`dataset.py` `load_file`).

    Raises:
        BblError: a row that is not JSON, lacks a field, or has a label outside [0, num_labels), naming file:line.
    """
    fmt = TASK_FORMATS[task]
    pairs, labels = [], []
    keys = ", ".join((*fmt.first_keys, *fmt.second_keys, "label"))
    for n, row in read_jsonl(path, fix=f"each line must be JSON with {keys}"):
        if limit is not None and len(pairs) >= limit:
            break
        try:
            first = [row[k] for k in fmt.first_keys]
            second = " ".join(row[k] for k in fmt.second_keys)
            label = row["label"]
        except (KeyError, TypeError) as e:
            raise BblError(f"{path}:{n}: not a {task} row ({type(e).__name__}: {e}); each line must be JSON with "
                           f"{keys}") from None
        if not isinstance(label, int) or not 0 <= label < fmt.num_labels:
            raise BblError(f"{path}:{n}: label {label!r} is not an int in [0, {fmt.num_labels}) for {task}")
        pairs.append((fmt.first_template.format(*first) if fmt.first_template else " ".join(first), second))
        labels.append(label)
    if not pairs:
        raise BblError(f"{path}: no rows; a {task} file holds one JSON example per line")
    return pairs, labels


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids of each pair as the tokenizer encodes a text pair (`dataset.py` `collate_function`:
    `tokenizer(pairs, truncation=True, max_length=...)`; bbl's tokenizer has no pair template, so the second
    side's tokens follow the first's with no separator or special token), cut to `max_length` tokens by the
    tokenizer's `longest_first` strategy. Returns (ids per pair, how many pairs were longer and got cut).
    """
    full = tokenizer([a for a, _ in pairs], [b for _, b in pairs])["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    if not truncated:
        return full, 0
    cut = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=max_length)
    return cut["input_ids"], truncated
