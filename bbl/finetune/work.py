"""A fine-tuning task's durable working dir, so that a killed `bbl finetune` continues where it stopped.

`OUT/finetune-tasks/<task>/` holds, while the task trains, `settings.json` (what the work is for), the Trainer's
`checkpoints/` (one per epoch, the last kept) and `best.safetensors` (the best epoch's weights so far, its epoch
and score in the file's metadata); once the task's predictions are written, only `result.json` (written last,
atomically). A re-run keeps a task whose `result.json` holds the same settings, resumes one whose work holds them
from its last complete checkpoint (`bbl.train.checkpoints.resume_checkpoint`), and starts afresh one whose settings
changed. Nothing goes to a temporary dir, so neither a kill nor a finished run leaves one behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

from bbl.finetune.recipe import FinetuneConfig
from bbl.io import atomic_write_json, load_json, sha256_file
from bbl.train.checkpoints import resume_checkpoint

WORK_DIR = "finetune-tasks"
"""OUT's folder of per-task working dirs."""
SETTINGS_FILE, RESULT_FILE, BEST_FILE, CHECKPOINTS = "settings.json", "result.json", "best.safetensors", "checkpoints"


MODEL_FILES = ("config.json", "*.safetensors", "*.bin", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model")
"""The files of a model dir whose bytes `model_digest` reads."""


def model_digest(model_dir: Path) -> str:
    """sha256 over the bytes of a model dir's `MODEL_FILES` (config, weights, tokenizer): what tells a model apart
    from a retrained one in the same dir (once per run: about 3 s for a 705M fp32 model)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for path in sorted({p for pattern in MODEL_FILES for p in model_dir.glob(pattern) if p.is_file()}):
        h.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return h.hexdigest()


def task_settings(task: str, config: FinetuneConfig, *, model: str, max_length: int, train, valid) -> dict:
    """What a task's result depends on: the model (`model_digest`), the task's recipe with the config's overrides,
    seed, read position, input limit, and the examples read (`train`, `valid`: (pairs, labels), hashed)."""
    examples = hashlib.sha256(json.dumps([train, valid], ensure_ascii=False).encode()).hexdigest()
    settings = {"model": model, "task": task, "recipe": dataclasses.asdict(config.recipe(task)), "seed": config.seed,
                "read": config.read, "max_length": max_length, "examples": examples}
    return json.loads(json.dumps(settings))  # as read back from JSON (tuples become lists)


class TaskWork:
    """One task's working dir in `out` (`OUT/finetune-tasks/<task>/`), for runs of `settings` (`task_settings`)."""

    def __init__(self, out: Path, task: str, settings: dict, *, log=print):
        self.dir, self.settings, self.log = Path(out) / WORK_DIR / task, settings, log

    @property
    def checkpoints(self) -> Path:
        """The Trainer's `output_dir`."""
        return self.dir / CHECKPOINTS

    @property
    def best(self) -> Path:
        return self.dir / BEST_FILE

    def finished(self) -> dict | None:
        """The task's result of an earlier run with the same settings (what is left of its training removed), or
        None."""
        done = load_json(self.dir / RESULT_FILE) if (self.dir / RESULT_FILE).is_file() else None
        if not done or done.get("settings") != self.settings:
            return None
        self._tidy()
        return done["result"]

    def begin(self) -> Path | None:
        """Prepare the dir for training; returns the checkpoint to resume from (None: from the first step). Work
        of other settings (or a result of them) is removed first, with a note."""
        recorded = load_json(self.dir / SETTINGS_FILE) if (self.dir / SETTINGS_FILE).is_file() else None
        if self.dir.exists() and (recorded != self.settings or (self.dir / RESULT_FILE).exists()):
            if recorded is not None or any(self.dir.iterdir()):
                self.log(f"note: {self.dir} holds an earlier run's work or result that does not fit this one (other "
                         "settings, or its predictions are gone); starting this task afresh")
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if recorded != self.settings:
            atomic_write_json(self.dir / SETTINGS_FILE, self.settings)
        return resume_checkpoint(self.checkpoints, log=self.log)

    def finish(self, result: dict) -> None:
        """Record the task's `result` (its marker, written last and atomically), then remove its training files."""
        atomic_write_json(self.dir / RESULT_FILE, {"settings": self.settings, "result": result})
        self._tidy()

    def _tidy(self) -> None:
        for path in self.dir.iterdir():
            if path.name != RESULT_FILE:
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def durable_best(keep, path: Path):
    """A `TrainerCallback` that makes `keep` (a `recipe.keep_best_epoch` callback, listed before this one) survive
    a kill: each new best epoch's weights go to `path` (safetensors, with the epoch and score in its metadata,
    written beside it and renamed into place), and a saved best is loaded back into `keep` on creation, so a
    resumed run compares later epochs with it and restores it at the end as an uninterrupted run would."""
    from safetensors.torch import load_file, safe_open, save_file
    from transformers import TrainerCallback

    path = Path(path)
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        keep.best_epoch, keep.best_score = int(meta["best_epoch"]), float(meta["best_score"])
        keep.state_dict = load_file(str(path))

    class DurableBest(TrainerCallback):
        saved = keep.best_epoch

        def on_evaluate(self, args, state, control, **kw):
            if keep.best_epoch is None or keep.best_epoch == self.saved or not state.is_world_process_zero:
                return
            tmp = path.with_name(path.name + ".tmp")
            save_file({k: v.contiguous() for k, v in keep.state_dict.items()}, str(tmp),
                      metadata={"best_epoch": str(keep.best_epoch), "best_score": repr(keep.best_score)})
            os.replace(tmp, path)
            self.saved = keep.best_epoch

    return DurableBest()
