"""Per-item predictions in the BabyLM 2025 pipeline's own layout and format, so its `collate_preds.py` can read
bbl's results: `<root>/<model>/main/zero_shot/causal/<task>/<dataset>/predictions.json` for the ranking tasks and
`<root>/<model>/main/zero_shot/causal/reading/predictions.json` (babylm/evaluation-pipeline-2025
`sentence_zero_shot/run.py` `main` and `save_predictions`, `compute_results.py` `rank_and_evaluate(_wug)`,
`reading/run.py`), and `<root>/<model>/main/finetune/<task>/predictions.json` for the fine-tuned (Super)GLUE tasks
(`finetune/run.py`'s `__main__`; `collate_preds.py` checks one per task and its size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bbl.errors import BblError
from bbl.evaluate.tasks import RankingItem
from bbl.io import atomic_write_json

REVISION = "main"
"""The pipeline's results folder for a model evaluated without --revision_name."""


def check_revision(revision: str) -> str:
    """A revision name that is one folder (`main`, `chck_1M`, ...).

    Raises:
        BblError: empty, a path, or `.`/`..`.
    """
    if not revision or revision in (".", "..") or any(c in revision for c in "/\\") or revision != revision.strip():
        raise BblError(f"--revision-name {revision!r}: use one folder name, e.g. main or chck_10M")
    return revision


def predictions_dir(root: Path, model: str, task: str, dataset: str | None = None, *,
                    revision: str = REVISION) -> Path:
    """`root/model/revision/zero_shot/causal/task[/dataset]`: `task` is the pipeline's task name, `dataset` its
    data folder (blimp_filtered, blimp_fast, ewok_fast, entity_tracking, ...; none for reading), `revision` the
    pipeline's `--revision_name` (main, or a checkpoint's chck_{N}M)."""
    path = Path(root) / model / check_revision(revision) / "zero_shot" / "causal" / task
    return path / dataset if dataset else path


def finetune_predictions_dir(root: Path, model: str, task: str) -> Path:
    """`root/model/main/finetune/task`: where the pipeline's `finetune/run.py` writes a task's predictions.json
    and results.txt (`task` is the pipeline's name: boolq, mnli, mrpc, multirc, qqp, rte, wsc)."""
    return Path(root) / model / REVISION / "finetune" / task


def classification_predictions(task: str, predicted: np.ndarray) -> dict:
    """{task: {"predictions": [{"id": "<task>_<i>", "pred": class index (int)}, ...]}} in the order of the
    task's valid file, as `finetune/run.py` writes them; `predicted` is (N,) int, the argmax class per row."""
    return {task: {"predictions": [{"id": f"{task}_{i}", "pred": int(p)} for i, p in enumerate(predicted)]}}


TRUNCATED = "truncated"
"""The key bbl adds, true, to an item's prediction when it was scored on its last tokens only (longer than the
model's learned position table): the pipeline's code fails on such an item, so it has no official counterpart.
Absent on every other item, so those are the pipeline's format exactly (its collation ignores the key)."""


def ranking_predictions(items: list[RankingItem], chosen: np.ndarray, *, probs: np.ndarray | None = None,
                        truncated: np.ndarray | None = None) -> dict:
    """{UID: {"predictions": [{"id": "<UID>_<i>", "pred": chosen completion[, "prob": p]}, ...]}} in item order,
    the i-th of each UID numbered from 0; `probs` (WUG) adds each item's probability of its first sentence;
    `truncated` ((n,) bool) marks the items cut to their last tokens (`TRUNCATED`)."""
    out: dict[str, dict] = {}
    for n, (item, c) in enumerate(zip(items, chosen, strict=True)):
        preds = out.setdefault(item.uid, {"predictions": []})["predictions"]
        entry = {"id": f"{item.uid}_{len(preds)}", "pred": item.completions[int(c)]}
        if probs is not None:
            entry["prob"] = float(probs[n])
        if truncated is not None and truncated[n]:
            entry[TRUNCATED] = True
        preds.append(entry)
    return out


def reading_predictions(pred: np.ndarray, prev_pred: np.ndarray, *, truncated: np.ndarray | None = None) -> dict:
    """{"reading": {"predictions": [{"id": row, "pred": surprisal, "prev_pred": surprisal or NaN}, ...]}};
    `truncated` ((n,) bool) marks the rows whose item or previous item was cut to its last tokens (`TRUNCATED`)."""
    rows = [{"id": i, "pred": float(p), "prev_pred": float(q)}
            for i, (p, q) in enumerate(zip(pred, prev_pred, strict=True))]
    for i in (np.flatnonzero(truncated) if truncated is not None else ()):
        rows[i][TRUNCATED] = True
    return {"reading": {"predictions": rows}}


def write_predictions(path: Path, predictions: dict) -> Path:
    """`path/predictions.json` (its dirs made), written atomically (NaN as the pipeline's json.dump writes it)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(path) / "predictions.json", predictions)
    return Path(path) / "predictions.json"
