"""The words-seen ledger of a training run, its budget checks and its word-count checkpoints (issue 13).

Before training, `plan_words` replays the run's train order (the same sampler the Trainer uses) to know the exact
words and windows seen after every optimizer step (`bbl.data.words.words_per_step`); `check_budget` refuses a run
whose plan passes `training.max_words_seen` (its teachers' training words included, as the BabyLM rules count
helper models' data) or `training.max_epochs_seen`; `WordCheckpoints` saves `chck_{N}M` model dirs as the count
passes each N; `final_ledger` is what `bbl_run.json` records under "ledger".
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import numpy as np

from bbl.config import parse_word_checkpoints
from bbl.data.tokenizer import save_hf_tokenizer
from bbl.data.words import checkpoint_name, span_words, window_words, words_per_step
from bbl.errors import BblError, UsageError
from bbl.io import load_json
from bbl.runtime import world_size
from bbl.train.batching import epoch_order, resolve_batch

CHECKPOINT_DIR = "word_checkpoints"
CHECKPOINT_FILE = "bbl_checkpoint.json"


@dataclass
class WordPlan:
    """Per optimizer step of a planned run: cumulative words (None when the data has no word counts) and rows."""

    rows: int
    seq_len: int
    batch_size: int
    steps: int
    words_at_step: np.ndarray | None
    rows_at_step: np.ndarray
    corpus_words: int | None
    teachers: list[dict] = field(default_factory=list)
    checkpoints: tuple[int, ...] = ()

    def words(self, step: int) -> int | None:
        if self.words_at_step is None:
            return None
        return int(self.words_at_step[step - 1]) if step > 0 else 0

    def teacher_words(self) -> int | None:
        """Words the teachers bbl trained saw (an external pretrained teacher's training words are unknown to bbl, so
        it is listed apart, not counted; docs/commands.md quotes what the BabyLM rules say of such teachers); None
        when one of bbl's teachers has no count."""
        words = [t.get("words_seen") for t in self.teachers if not t.get("external")]
        return None if any(w is None for w in words) else int(sum(words))

    def external_teachers(self) -> list[str]:
        return [t["name"] for t in self.teachers if t.get("external")]


def row_windows(dataset) -> np.ndarray:
    """The train-stream window index of each dataset row (`TokenWindows.indices`, or a cache's `window_idx`)."""
    if hasattr(dataset, "indices"):
        return np.asarray(dataset.indices)
    reader = getattr(dataset, "reader", None)
    if reader is not None:
        return np.asarray(reader.read_array("window_idx", 0, len(reader)))
    raise BblError(f"cannot tell which windows a {type(dataset).__name__} holds; words seen are not countable")


def planned_steps(cfg, rows: int, world: int = 1) -> int:
    """Optimizer steps the Trainer will run: `max_steps`, else ceil(epochs x steps per epoch), with the steps per
    epoch as transformers computes them (a last partial accumulation counts as a step; accelerate gives every
    process ceil(batches / world) micro-batches)."""
    if cfg.training.max_steps:
        return int(cfg.training.max_steps)
    micro, accum = resolve_batch(cfg, world)
    per_process = math.ceil(math.ceil(rows / micro) / world)
    per_epoch = max(math.ceil(per_process / accum), 1)
    return math.ceil(cfg.training.epochs * per_epoch)


MAX_PLANNED_STEPS = 10**7
"""The most optimizer steps a run may plan: the plan holds the words and rows seen at every step (two int64 arrays),
and the paper's longest run takes about 20,000 steps; a larger count is a typo (`training.epochs=1e16`)."""


def plan_words(cfg, data, dataset, *, teachers=(), world: int | None = None) -> WordPlan:
    """The run's plan (see the module docstring).

    Raises:
        BblError: word checkpoints or a word budget asked of data prepared without word counts.
        UsageError: more than `MAX_PLANNED_STEPS` optimizer steps (training.epochs or training.max_steps).
    """
    t = cfg.training
    world = world or world_size()
    rows, steps = len(dataset), planned_steps(cfg, len(dataset), world)
    if steps > MAX_PLANNED_STEPS:
        what = f"training.max_steps {t.max_steps}" if t.max_steps else f"training.epochs {t.epochs:g}"
        raise UsageError(f"{what}: the run would take {steps:,} optimizer steps over its {rows:,} windows, more than "
                         f"bbl plans ({MAX_PLANNED_STEPS:,}); lower it")
    try:
        word_starts = data.word_starts("train")
        words = window_words(word_starts, t.seq_len, row_windows(dataset))
    except BblError:
        if t.word_checkpoints or t.max_words_seen:
            raise
        words = None
    corpus_words = None if words is None else int(words.sum())  # at the windows' home (fixed) positions
    if words is not None and getattr(dataset, "epoch_indexed", False) and callable(getattr(dataset, "starts", None)):
        words = _epoch_words(span_words(word_starts, t.seq_len), dataset)  # random offsets: other tokens each epoch
    sampler = epoch_order(dataset, t.seed)

    def orders():
        for epoch in count():
            sampler.set_epoch(epoch)
            yield np.fromiter(iter(sampler), dtype=np.int64, count=rows)

    rows_at_step = words_per_step(np.ones(rows, dtype=np.int64), orders(), t.batch_size, steps)
    words_at_step = words_per_step(words, orders(), t.batch_size, steps) if words is not None else None
    return WordPlan(rows=rows, seq_len=t.seq_len, batch_size=t.batch_size, steps=steps, words_at_step=words_at_step,
                    rows_at_step=rows_at_step, corpus_words=corpus_words,
                    teachers=list(teachers), checkpoints=parse_word_checkpoints(t.word_checkpoints))


def _epoch_words(span, dataset):
    """The words of each row of `dataset` (random-offset `TokenWindows`) as a function of the epoch: `span`
    (`span_words`) at the rows' starts in that epoch."""
    return lambda epoch: span(dataset.starts(epoch))


def check_budget(cfg, plan: WordPlan) -> None:
    """Refuse a run whose plan passes `training.max_words_seen` or `training.max_epochs_seen`.

    Raises:
        BblError: naming the planned and allowed amounts and what to lower.
    """
    t = cfg.training
    epochs = plan.rows_at_step[-1] / plan.rows if plan.steps else 0.0
    if t.max_epochs_seen is not None and epochs > t.max_epochs_seen + 1e-9:
        raise BblError(f"training.max_epochs_seen {t.max_epochs_seen:g}: the run would pass {epochs:.2f} times over "
                       f"its {plan.rows:,} windows; lower training.epochs or training.max_steps")
    if t.max_words_seen is not None:
        own, helpers = plan.words(plan.steps), plan.teacher_words()
        if helpers is None:
            raise BblError(f"training.max_words_seen: a teacher's words seen are unknown (a bbl run without a "
                           f"ledger: {', '.join(x['path'] for x in plan.teachers if x.get('words_seen') is None)}); "
                           f"drop the budget or retrain the teacher with this bbl")
        external = plan.external_teachers()
        if own + helpers > t.max_words_seen:
            raise BblError(f"training.max_words_seen {t.max_words_seen:,}: the run would see {own:,} words"
                           + (f" + its bbl-trained teachers' {helpers:,}" if len(external) < len(plan.teachers)
                              else "")
                           + f" = {own + helpers:,}"
                           + (f" (external pretrained teachers, whose words bbl cannot count: {', '.join(external)})" if external
                              else "")
                           + "; lower training.epochs or training.max_steps")


def teacher_ledgers(teachers: list[dict]) -> list[dict]:
    """What each teacher saw in training: from its `bbl_run.json` ledger for a teacher bbl trained; a teacher that
    `load_teachers` found without one (a pretrained HF dir such as Llama or Qwen) is recorded as external, with its
    name, parameters and source, and no words (bbl cannot count them: not in words_seen_with_teachers). A bbl teacher whose run file is gone (moved, another machine) has unknown words.

    Args:
        teachers: provenance dicts with `path` (and `parameters`, `architecture`, `external` when known), as
            `load_teachers` returns them and a cache records them.
    """
    out = []
    for info in teachers:
        d = Path(info["path"])
        run = d / "bbl_run.json"
        if info.get("external"):
            out.append({"path": str(d), "name": _model_name(d), "parameters": info.get("parameters"),
                        "architecture": info.get("architecture"), "external": True,
                        "source": "pretrained, not trained by bbl", "words_seen": None})
            continue
        ledger = (load_json(run, fix=f"re-train {d} or delete {run.name} there (its words are then unknown)")
                  or {}).get("ledger") or {}
        out.append({"path": str(d), "words_seen": ledger.get("words_seen"), "tokens_seen": ledger.get("tokens_seen"),
                    "epochs": ledger.get("epochs")})
    return out


def _model_name(model_dir: Path) -> str:
    """A pretrained model's name: its config's `_name_or_path` when that names a hub model (org/name), else the
    dir's name (a hub download saved with `save_pretrained(DIR)`: name DIR after the model)."""
    config = model_dir / "config.json"
    name = (load_json(config, fix="save the model again with save_pretrained") or {}).get("_name_or_path")
    return name if isinstance(name, str) and name.count("/") == 1 and not Path(name).exists() else model_dir.name


def final_ledger(plan: WordPlan, global_step: int) -> dict:
    """The `ledger` of `bbl_run.json` after `global_step` optimizer steps."""
    step = min(global_step, plan.steps)
    rows = int(plan.rows_at_step[step - 1]) if step else 0
    words, helpers = plan.words(step), plan.teacher_words()
    ledger = {"words_seen": words, "tokens_seen": rows * plan.seq_len, "windows_seen": rows,
              "epochs": round(rows / plan.rows, 4), "corpus_windows": plan.rows, "corpus_words": plan.corpus_words}
    if plan.teachers:
        ledger["teachers"] = plan.teachers
        ledger["words_seen_with_teachers"] = None if words is None or helpers is None else words + helpers
        if plan.external_teachers():
            ledger["external_teachers"] = plan.external_teachers()  # pretrained teachers, listed apart
    if plan.checkpoints:
        ledger["word_checkpoints"] = [checkpoint_name(n) for n in plan.checkpoints
                                      if words is not None and n <= words]
    return ledger


def word_callbacks(cfg, out: Path, plan: WordPlan, tokenizer) -> list:
    """[WordCheckpoints] when `training.word_checkpoints` is set, else []."""
    if not plan.checkpoints:
        return []
    from transformers import TrainerCallback

    class WordCheckpoints(TrainerCallback):
        """After each optimizer step, save `chck_{N}` for every N the words seen just reached (rank 0 only).

        Written to a temporary dir and renamed, so a kill never leaves half a checkpoint; a resumed run that
        replays a step finds the dir there and skips it.
        """

        def on_step_end(self, args, state, control, model=None, **kw):
            if not state.is_world_process_zero or state.global_step > plan.steps:
                return
            before, now = plan.words(state.global_step - 1), plan.words(state.global_step)
            for n in plan.checkpoints:
                if before < n <= now:
                    save_word_checkpoint(out, n, model, tokenizer, step=state.global_step, words=now,
                                         tokens=int(plan.rows_at_step[state.global_step - 1]) * plan.seq_len)

    return [WordCheckpoints()]


def save_word_checkpoint(out: Path, target: int, model, tokenizer, *, step: int, words: int, tokens: int) -> Path:
    """Save OUT/word_checkpoints/chck_{N}: an HF model dir with tokenizer and `bbl_checkpoint.json`."""
    final = Path(out) / CHECKPOINT_DIR / checkpoint_name(target)
    if final.is_dir():
        return final
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    save_hf_tokenizer(tokenizer, tmp)
    (tmp / CHECKPOINT_FILE).write_text(json.dumps({"target_words": target, "words_seen": words, "tokens_seen": tokens,
                                                   "step": step}, indent=2) + "\n")
    os.replace(tmp, final)
    return final
