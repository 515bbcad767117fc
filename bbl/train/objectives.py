"""Objective schedules (AntLM, Yu et al. 2024, arXiv 2412.03275): epochs that alternate the causal objective (CLM)
and the masked one (MLM) in the same network, e.g. `training.objective_schedule: clm:4,mlm:16,clm:4`.

How a phase reaches the loss: `PhasedDataset` wraps the train dataset (windows or a cache) and is `epoch_indexed`,
so the train sampler yields `epoch * rows + row` (`bbl.data.windows.EpochIndexSampler`, `train_sampler`); the item
then knows its epoch, hence its phase, exactly, in any DataLoader worker and after `--resume` (the Trainer replays
the epoch's order and skips the batches it has done). A base that is itself epoch-indexed (random-offset windows)
gets the folded index too. An MLM item carries masked `input_ids`, labels at the selected positions only and
`mlm = 1`; the Trainer runs it with a bidirectional attention mask (`bbl.models.build.bidirectional_attention`).
A batch never mixes phases: a DataLoader batch lies within one epoch.

Masking (BERT, Devlin et al. 2019, Section 3.1, as AntLM): each token is selected with probability
`mlm_probability` (0.15); of the selected, 80% become `<mask>`, 10% a uniformly random id, 10% stay. The draw
depends only on (seed, epoch, window), so a resumed run sees the masks a straight run sees.
"""

from __future__ import annotations

import math

import numpy as np

from bbl.config import Phase
from bbl.losses.chunked import IGNORE_INDEX
from bbl.train.batching import epoch_order

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1
"""Of the selected tokens: 80% `<mask>`, 10% a random id, the rest (10%) unchanged (BERT, Section 3.1)."""


def epoch_objectives(phases: tuple[Phase, ...]) -> list[str]:
    """The objective of each epoch, in order: [clm, clm, mlm, ...] for phases clm:2,mlm:1,..."""
    return [p.objective for p in phases for _ in range(p.epochs)]


def has_mlm(phases: tuple[Phase, ...]) -> bool:
    return any(p.objective == "mlm" for p in phases)


def mask_window(ids: np.ndarray, rng: np.random.Generator, *, mask_token_id: int, vocab_size: int,
                probability: float = 0.15, target: str = "previous") -> tuple[np.ndarray, np.ndarray]:
    """One window's MLM input and labels.

    Args:
        ids: (S,) int64 token ids.
        rng: the window's generator (`PhasedDataset` seeds it by (seed, epoch, window)).
        mask_token_id: the tokenizer's `<mask>`; vocab_size: random replacements are drawn from [0, vocab_size).
        probability: the share of positions selected. target: "previous" (position s-1 predicts a masked s; position
            0 is never selected, it has no previous position) or "own" (position s predicts itself).
    Returns:
        (input_ids, labels), both (S,) int64; labels hold the original id at selected positions and -100 elsewhere.
        At least one position is selected (a window with none would have no loss).
    """
    s = len(ids)
    eligible = np.ones(s, dtype=bool)
    if target == "previous":
        eligible[0] = False
    selected = (rng.random(s) < probability) & eligible
    if not selected.any():
        selected[rng.choice(np.flatnonzero(eligible))] = True
    kind = rng.random(s)
    replacements = rng.integers(0, vocab_size, s)
    inputs = ids.copy()
    inputs[selected & (kind < MASK_SHARE)] = mask_token_id
    randomised = selected & (kind >= MASK_SHARE) & (kind < MASK_SHARE + RANDOM_SHARE)
    inputs[randomised] = replacements[randomised]
    labels = np.full(s, IGNORE_INDEX, dtype=np.int64)
    labels[selected] = ids[selected]
    return inputs, labels


class PhasedDataset:
    """A train dataset whose items follow the objective schedule (see the module docstring).

    Items of a clm epoch are the base dataset's (a cache's rows keep their KD targets) plus `mlm` = 0. Items of
    an mlm epoch are `mask_window` of the window's ids plus `mlm` = 1, with no KD targets; their ids come from
    `mlm_windows` (the prepared stream's windows of the same rows) when given, so an mlm epoch of a cached
    student never reads the cache. With `mlm_kd_targets` an mlm item keeps the base item's KD targets too
    (`distill.mlm_kd`), and the cache is read in every epoch.
    """

    epoch_indexed = True  # items are `epoch * rows + row` (`bbl.train.batching.train_sampler` folds the order)

    def __init__(self, base, phases: tuple[Phase, ...], *, seed: int, mask_token_id: int, vocab_size: int,
                 probability: float = 0.15, target: str = "previous", mlm_windows=None, mlm_kd_targets: bool = False):
        self.base, self.rows, self.seed = base, len(base), seed
        self.objectives = epoch_objectives(phases)
        self.mask_token_id, self.vocab_size = mask_token_id, vocab_size
        self.probability, self.target = probability, target
        self.mlm_kd_targets = mlm_kd_targets
        self.mlm_windows = mlm_windows if mlm_windows is not None and not mlm_kd_targets else base
        if len(self.mlm_windows) != self.rows:
            raise ValueError(f"mlm_windows has {len(self.mlm_windows)} rows, the dataset {self.rows}")

    def __len__(self) -> int:
        return self.rows

    def objective(self, epoch: int) -> str:
        """The epoch's objective (past the schedule's end, e.g. a last partial epoch: the last phase's)."""
        return self.objectives[min(epoch, len(self.objectives) - 1)]

    def sampler(self):
        """The base's order of rows each epoch (`epoch_order`; `train_sampler` folds the epoch in)."""
        return epoch_order(self.base, self.seed)

    def __getitem__(self, index: int) -> dict:
        import torch

        epoch, row = divmod(int(index), self.rows)
        if self.objective(epoch) == "clm":
            return {**_item(self.base, index, row), "mlm": torch.tensor(0)}
        item = _item(self.mlm_windows, index, row)
        rng = np.random.default_rng([self.seed, epoch, row, 0x4D4C4D])
        inputs, labels = mask_window(item["input_ids"].numpy(), rng, mask_token_id=self.mask_token_id,
                                     vocab_size=self.vocab_size, probability=self.probability, target=self.target)
        targets = {k: v for k, v in item.items() if k not in ("input_ids", "labels")} if self.mlm_kd_targets else {}
        return {**targets, "input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
                "mlm": torch.tensor(1)}


def _item(dataset, index: int, row: int) -> dict:
    """`dataset`'s item of `row` in the epoch `index` folds in: the folded index for an epoch-indexed dataset."""
    return dataset[index] if getattr(dataset, "epoch_indexed", False) else dataset[row]


def in_last_phase(phases: tuple[Phase, ...], epoch: float | None) -> bool:
    """Whether an evaluation at the Trainer's `state.epoch` (1.0 = the end of the first epoch) falls in the last
    phase; None (outside training) counts."""
    if epoch is None:
        return True
    in_progress = math.ceil(round(epoch, 6)) - 1
    return in_progress >= sum(p.epochs for p in phases) - phases[-1].epochs


CRITERION = "criterion_loss"
"""With an mlm phase the best checkpoint is chosen by `eval_criterion_loss`: the dev CE in the last phase, +inf
before it (the dev CE after an mlm phase is not the model's causal quality yet)."""


def criterion_callback(phases: tuple[Phase, ...]):
    """A `TrainerCallback` adding `eval_criterion_loss` to each evaluation's metrics (see `CRITERION`)."""
    from transformers import TrainerCallback

    class LastPhaseCriterion(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if metrics is not None and "eval_loss" in metrics:
                counted = in_last_phase(phases, state.epoch)
                metrics[f"eval_{CRITERION}"] = metrics["eval_loss"] if counted else float("inf")

    return LastPhaseCriterion()
