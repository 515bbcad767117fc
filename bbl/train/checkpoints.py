"""Which Trainer checkpoint a run resumes from: the last complete one; the partial ones a kill left are moved aside.

The transformers Trainer writes `checkpoint-N` in place (`Trainer._save_checkpoint`): the weights, then the
optimizer, scheduler and RNG states, then `trainer_state.json` (plain `open(..., "w")`, not atomic), and only after
that rotates older checkpoints away (`rotate_checkpoints`, a `shutil.rmtree` each). A kill can thus leave the newest
dir without `trainer_state.json` or with half of it, or an older one half deleted; `transformers.trainer_utils.
get_last_checkpoint` picks the highest step whatever it holds, and the resume then crashes. `resume_checkpoint`
is bbl's replacement, used by every training path (`train.recipe`, and so distillation and the sweep's trials;
`finetune.run` per task).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from bbl.runtime import is_main_process

PARTIAL_DIR = "partial-checkpoints"
"""Beside the checkpoints dir: where incomplete checkpoints are moved (out of reach of the Trainer's rotation)."""
STATE_FILE = "trainer_state.json"
"""What `Trainer._save_checkpoint` writes last."""
STATES = ("optimizer.pt", "scheduler.pt")
"""Written before the state file into every checkpoint of a bbl run (no run sets `save_only_model`): a checkpoint
half deleted by an interrupted rotation can keep its state file but not these."""
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils._re_checkpoint


def is_complete_checkpoint(path: Path) -> bool:
    """Whether a Trainer checkpoint dir was written to the end: `trainer_state.json` parses as a state with a
    `global_step`, `optimizer.pt` and `scheduler.pt` are there, and so are the weights (one non-empty
    `model.safetensors` / `pytorch_model.bin`, or every shard a weights index names)."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return False
    if not all((path / name).is_file() for name in STATES):
        return False
    if any((path / name).is_file() and (path / name).stat().st_size > 0 for name in WEIGHTS):
        return True
    for index in INDEXES:
        try:
            shards = set(json.loads((path / index).read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        return bool(shards) and all((path / shard).is_file() for shard in shards)
    return False


def resume_checkpoint(checkpoints: Path, *, log=print) -> Path | None:
    """The checkpoint a run in `checkpoints` (a Trainer's `output_dir`) resumes from: the complete one
    (`is_complete_checkpoint`) of the highest step, or None.

    Every incomplete `checkpoint-N` is moved (by the main process only) to `../partial-checkpoints/checkpoint-N`
    (`-1`, `-2`, ... appended when that name is taken) with a line on `log`, so neither this choice nor the
    Trainer's rotation ever reads it again, and a new save of step N never lands among its files. Moving is a
    rename within one file system, so another rank choosing at the same time sees the dir at either path and
    chooses the same checkpoint.
    """
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in checkpoints.iterdir()
                   if (m := _CHECKPOINT.match(p.name)) and p.is_dir())
    complete = [p for _, p in found if is_complete_checkpoint(p)]
    partial = [p for _, p in found if p not in complete]
    if partial and is_main_process():
        aside = checkpoints.parent / PARTIAL_DIR
        aside.mkdir(exist_ok=True)
        for p in partial:
            target, k = aside / p.name, 0
            while target.exists():
                k += 1
                target = aside / f"{p.name}-{k}"
            os.replace(p, target)
            log(f"note: {p} is incomplete (a kill interrupted its write); moved it to {target}")
        if not complete:
            log(f"note: no complete checkpoint left in {checkpoints}; starting from the first step")
    return complete[-1] if complete else None
