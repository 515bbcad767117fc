"""One zero-shot task of the BabyLM 2025 suite scored end to end for one model or logit-mean ensemble: read its
data (`tasks`), score it (`zero_shot`, `ranking`, `wug`, `reading`), aggregate, and build its per-item predictions
in the pipeline's format (`predictions`). `bbl.evaluate.run.evaluate_models` calls `score_task` once per task.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bbl.errors import BblError
from bbl.evaluate.predictions import ranking_predictions, reading_predictions
from bbl.evaluate.ranking import accuracy_by_metadata, entity_tracking_average, rank_items
from bbl.evaluate.reading import reading_scores, word_surprisals
from bbl.evaluate.tasks import (
    PIPELINE_TASK,
    ZERO_SHOT,
    pipeline_dataset,
    read_items,
    read_reading,
    reading_file,
)
from bbl.evaluate.wug import first_form_probability, spearman
from bbl.evaluate.zero_shot import blimp_accuracy, load_pairs, score_pairs, task_files
from bbl.io import sha256_file

PAIR_SCORINGS = ("bos", "pipeline")
"""How BLiMP and the supplement are scored: `bos` (bbl's default, as lm-evaluation-harness: BOS context, every
token, a tie is wrong) or `pipeline` (the BabyLM 2025 pipeline: the tokenizer's own special tokens, first token
unscored, a tie goes to the good sentence)."""


def data_option(task: str) -> str:
    """The `bbl eval` option that sets a task's data."""
    return {"blimp": "--blimp-dir", "supplement": "--supplement-dir"}.get(task, f"--task-data {task}=PATH")


def check_task_data(task: str, path: Path | None, *, scoring: str = "bos") -> None:
    """Fail early, before any model loads, when a task's data is missing or unreadable.

    Raises:
        BblError: unknown task, no path, or the path holds none of the task's files (names the option to pass).
    """
    if task not in ZERO_SHOT:
        raise BblError(f"unknown task {task!r}; use one of {', '.join(ZERO_SHOT)}")
    if path is None:
        raise BblError(f"--tasks {task} needs its data; pass {data_option(task)}")
    if task == "reading":
        reading_file(path, option=data_option(task))
    elif task in ("blimp", "supplement") and scoring == "bos":
        task_files(path)
    else:
        read_items(task, path, option=data_option(task), max_items=1)


def data_hashes(path: Path) -> dict[str, str]:
    """{file name: sha256} of a task's data: each *.jsonl of a dir, else the file (a zip, the reading CSV)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl")) or sorted(path.glob("*.zip")) or sorted(path.glob("*.csv"))
    else:
        files = [path]
    return {f.name: sha256_file(f) for f in files}


def score_task(task: str, models, tokenizer, path: Path, *, scoring: str = "bos", max_items: int | None = None,
               batch_size: int = 64, device: str = "cpu", progress: bool = True,
               suite: str = "full") -> tuple[dict, dict | None]:
    """Score one task.

    Args:
        task: one of `ZERO_SHOT`; path: its data (dir, zip or CSV); scoring: `PAIR_SCORINGS` (BLiMP, supplement);
        max_items: the first N items of each file (reading: ignored); progress: show a tqdm bar; suite: names the
        predictions' dataset folder when the data's own name is not one of the pipeline's (`pipeline_dataset`).
    Returns:
        (result, predictions): the task's numbers (accuracies are fractions in [0, 1]; `dataset` the pipeline's
        folder for its predictions, `data` the path scored), and its per-item predictions in the pipeline's format,
        or None where bbl's scoring is not the pipeline's (BLiMP and the supplement under `bos`).
    Raises:
        BblError: bad data (names file:line and the fix).
    """
    from tqdm.auto import tqdm

    kw = {"batch_size": batch_size, "device": device}
    bar = tqdm(unit="sent", desc=task, disable=not progress)
    try:
        if task == "reading":
            result, predictions = _reading(models, tokenizer, path, bar=bar, **kw)
        elif task in ("blimp", "supplement") and scoring == "bos":
            result, predictions = _pairs_bos(task, models, tokenizer, path, max_items, bar=bar, **kw), None
        else:
            result, predictions = _ranking(task, models, tokenizer, path, max_items, bar=bar, **kw)
    finally:
        bar.close()
    result["files_sha256"] = data_hashes(path)
    if task != "reading":
        result["max_pairs_per_file"] = max_items
    if task in ("blimp", "supplement"):
        result["scoring"] = scoring
    result["pipeline_task"], result["dataset"] = PIPELINE_TASK[task], pipeline_dataset(task, path, suite)
    result["data"] = str(path)
    return result, predictions


def _pairs_bos(task, models, tokenizer, path, max_items, *, bar, **kw) -> dict:
    pairs = {f.stem: load_pairs(f, max_pairs=max_items) for f in task_files(path)}
    bar.reset(total=2 * sum(len(r) for r in pairs.values()))
    results = {name: (rows, score_pairs(models, tokenizer, rows, progress=bar, **kw)) for name, rows in pairs.items()}
    if task == "blimp":
        return blimp_accuracy(results)
    by_file = {name: float(np.mean(c)) for name, (_, c) in results.items()}
    return {"by_file": by_file, "overall": float(np.mean(list(by_file.values()))),
            "pairs": int(sum(len(c) for _, c in results.values()))}


def _ranking(task, models, tokenizer, path, max_items, *, bar, **kw) -> tuple[dict, dict]:
    by_file = read_items(task, path, option=data_option(task), max_items=max_items)
    items = [it for file_items in by_file.values() for it in file_items]
    bar.reset(total=sum(len(it.sentences) for it in items))
    scores, chosen, cut = rank_items(models, tokenizer, items, progress=bar,
                                     share_prefix=task == "entity_tracking", **kw)
    correct = chosen == 0
    if task == "wug_adj":
        probs = first_form_probability(np.stack(scores))
        rho = spearman(probs, [it.ratio for it in items])
        return ({"spearman": rho, "items": len(items), "truncated": int(cut.sum())},
                ranking_predictions(items, chosen, probs=probs, truncated=cut))
    acc = accuracy_by_metadata(items, correct)
    result: dict = {}
    if task == "blimp":
        start = np.cumsum([0] + [len(v) for v in by_file.values()])
        result = blimp_accuracy({name: ([it.metadata for it in v], correct[a:b])
                                 for (name, v), a, b in zip(by_file.items(), start[:-1], start[1:], strict=True)})
    elif task == "supplement":
        result = {"by_file": acc["UID"], "overall": float(np.mean(list(acc["UID"].values()))), "pairs": len(items)}
    elif task == "ewok":
        result = {"by_domain": acc["UID"], "by_context_type": acc["context_type"],
                  "by_context_contrast": acc["context_contrast"], "by_target_contrast": acc["target_contrast"],
                  "overall": float(np.mean(list(acc["UID"].values()))), "items": len(items)}
    elif task == "entity_tracking":
        try:
            splits, overall = entity_tracking_average(acc["UID"])
        except ValueError:
            raise BblError(f"{path}: no regular / ambiref / move_contents file; pass {data_option(task)} the "
                           "pipeline's entity_tracking dir") from None
        result = {"by_subset": acc["UID"], "by_split": splits, "overall": overall, "items": len(items)}
    result["truncated"] = int(cut.sum())  # items scored on their last tokens only (no official counterpart)
    return result, ranking_predictions(items, chosen, truncated=cut)


def _reading(models, tokenizer, path, *, bar, **kw) -> tuple[dict, dict]:
    columns = read_reading(path, option=data_option("reading"))
    n = len(columns["item"])
    contexts = columns["item"] + columns["prev_item"]
    words = columns["word"] + columns["prev_word"]
    contexts = [c if w is not None else None for c, w in zip(contexts, words, strict=True)]
    surprisal, cut = word_surprisals(models, tokenizer, contexts, words, progress=bar, **kw)
    pred, prev_pred = surprisal[:n], surprisal[n:]
    cut = cut[:n] | cut[n:]  # a row whose item or previous item was cut
    return ({**reading_scores(columns, pred, prev_pred), "words": n, "truncated": int(cut.sum())},
            reading_predictions(pred, prev_pred, truncated=cut))
