"""The BabyLM 2025 pipeline's fine-tuning recipe as transformers `Trainer` settings: per-task batch, epochs and
model-selection metric, the optimizer, the schedule, the metrics, and keeping the best epoch.

Every setting is the one babylm/evaluation-pipeline-2025 runs (HEAD bf55c11): `eval_finetuning.sh` (per task),
`evaluation_pipeline/finetune/run.py` (argument defaults), `finetune/trainer.py` (optimizer, schedule, best
model, metrics), `finetune/utils.py` (`cosine_schedule_with_warmup`). Where the pipeline's code and the issue's
summary of it part, the code is followed and the docstring says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bbl.data.windows import EpochPermutationSampler
from bbl.errors import BblError, check_options_at_least_one
from bbl.finetune.data import check_finetune_tasks
from bbl.finetune.model import READ_POSITIONS

LEARNING_RATE = 3e-5
"""eval_finetuning.sh LR (run.py `--learning_rate`)."""
BETAS = (0.9, 0.999)
"""run.py `--beta1`, `--beta2`: AdamW (trainer.py `_init_opitmizer`, `torch.optim.AdamW`, amsgrad off)."""
ADAM_EPS = 1e-8
"""run.py `--optimizer_eps`."""
WEIGHT_DECAY = 0.01
"""run.py `--weight_decay`, applied by trainer.py to every parameter: biases and LayerNorm weights too (the
transformers Trainer's own optimizer would exempt them; bbl passes the pipeline's AdamW instead)."""
WARMUP_PROPORTION = 0.06
"""run.py `--warmup_proportion`: warmup steps = int(0.06 * total steps) (trainer.py `_init_scheduler`, floored)."""
MIN_LR_FACTOR = 0.1
"""Cosine decay to 0.1 x lr (trainer.py passes the literal 0.1 to `utils.cosine_schedule_with_warmup`; its
`--min_factor` is not read). transformers' `cosine_with_min_lr` with `min_lr_rate` 0.1 is the same function."""
SEQUENCE_LENGTH = 512
"""eval_finetuning.sh `--sequence_length`: inputs are cut to at most this many tokens (bbl: also to the model's
positions, where the pipeline would fail)."""
EVAL_BATCH_SIZE = 64
"""run.py `--valid_batch_size`."""
DEFAULT_SEED = 42
"""eval_finetuning.sh SEED."""


@dataclass(frozen=True)
class TaskRecipe:
    """eval_finetuning.sh's settings for one task."""

    batch_size: int
    """Training examples per optimizer step (`--batch_size`: $BSZ 32, $BIG_BSZ 16 for BoolQ and MultiRC)."""
    epochs: int
    """`--num_epochs`: $MAX_EPOCHS 10, $WSC_EPOCHS 30 for WSC."""
    metric: str
    """`--metric_for_valid`: the validation metric whose best epoch is kept (f1 for MRPC and QQP)."""
    metrics: tuple[str, ...]
    """`--metrics` reported (accuracy, f1, mcc; MNLI accuracy only)."""


_BINARY = ("accuracy", "f1", "mcc")
TASK_RECIPES = {
    "boolq": TaskRecipe(16, 10, "accuracy", _BINARY),
    "multirc": TaskRecipe(16, 10, "accuracy", _BINARY),
    "rte": TaskRecipe(32, 10, "accuracy", _BINARY),
    "wsc": TaskRecipe(32, 30, "accuracy", _BINARY),
    "mrpc": TaskRecipe(32, 10, "f1", _BINARY),
    "qqp": TaskRecipe(32, 10, "f1", _BINARY),
    "mnli": TaskRecipe(32, 10, "accuracy", ("accuracy",)),
}


@dataclass
class FinetuneConfig:
    """The settings of `bbl finetune`. None in an override field means the pipeline's value."""

    tasks: list[str]
    """Tasks to fine-tune, each on its own fresh copy of the model, among `bbl.finetune.data.FINETUNE_TASKS`."""
    seed: int = DEFAULT_SEED
    """Seeds the head's initialisation, dropout and the data order (run.py `seed_everything`)."""
    read: str = "last"
    """Position the head reads: `last` real token (the issue's recipe; the pipeline's `--causal --take_final`
    intent) or `first` (what eval_finetuning.sh runs: it passes neither flag, so `classifier_model.py` reads
    position 0, which in a causal model has seen only the first token)."""
    epochs: int | None = None
    """Override every task's epochs (smoke runs; deviates from the recipe, recorded in the results)."""
    batch_size: int | None = None
    """Override every task's training batch (deviates from the recipe)."""
    max_train_examples: int | None = None
    """Train on the first N rows of each train file only (deviates from the recipe)."""
    max_valid_examples: int | None = None
    """Validate and predict on the first N valid rows only (smoke runs; the pipeline's `collate_preds.py` then
    rejects the predictions.json for its size)."""
    device: str = "cpu"

    def __post_init__(self):
        check_finetune_tasks(self.tasks)
        if self.read not in READ_POSITIONS:
            raise BblError(f"--read {self.read}: use one of {', '.join(READ_POSITIONS)}")
        check_options_at_least_one(self, ("epochs", "batch_size", "max_train_examples", "max_valid_examples"))

    def recipe(self, task: str) -> TaskRecipe:
        """The task's `TaskRecipe` with this config's overrides applied."""
        base = TASK_RECIPES[task]
        return TaskRecipe(self.batch_size or base.batch_size, self.epochs or base.epochs, base.metric, base.metrics)

    def deviations(self) -> dict:
        """The overrides set, {option: value}: what makes a run differ from the pipeline's recipe."""
        names = ("epochs", "batch_size", "max_train_examples", "max_valid_examples")
        out = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        if self.read != "last":
            out["read"] = self.read
        return out


def classification_metrics(predicted: np.ndarray, labels: np.ndarray, metrics: tuple[str, ...]) -> dict:
    """Accuracy, binary F1 and Matthews correlation of argmax predictions, as trainer.py `calculate_metrics`
    computes them with scikit-learn (`accuracy_score`, `f1_score` (positive class 1), `matthews_corrcoef`; F1 and
    MCC are 0.0 where their denominator is 0, as scikit-learn returns them).

    Args:
        predicted: (N,) int predicted classes; labels: (N,) int true classes.
        metrics: names among accuracy, f1, mcc (f1 and mcc need binary labels).
    Returns:
        {name: float in [0, 1] ([-1, 1] for mcc)}.
    """
    predicted, labels = np.asarray(predicted).astype(np.int64), np.asarray(labels).astype(np.int64)
    tp = float(np.sum((predicted == 1) & (labels == 1)))
    tn = float(np.sum((predicted == 0) & (labels == 0)))
    fp = float(np.sum((predicted == 1) & (labels == 0)))
    fn = float(np.sum((predicted == 0) & (labels == 1)))
    out = {}
    for name in metrics:
        if name == "accuracy":
            out[name] = float(np.mean(predicted == labels))
        elif name == "f1":
            out[name] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        elif name == "mcc":
            denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            out[name] = (tp * tn - fp * fn) / denominator if denominator else 0.0
        else:
            raise ValueError(f"unknown metric {name!r}; use accuracy, f1 or mcc")
    return out


def total_steps(train_examples: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps of a run: full batches per epoch (the train loader drops the last partial batch,
    trainer.py `load_data`) times epochs."""
    return (train_examples // batch_size) * epochs


class FullBatchSampler(EpochPermutationSampler):
    """Each epoch a new seeded permutation of the training examples, cut to whole batches: the pipeline's train
    loader (`shuffle=True, drop_last=True`, trainer.py `load_data`) without dropping the valid set's last batch,
    which the Trainer's `dataloader_drop_last` would do too."""

    def __init__(self, n: int, *, batch_size: int, seed: int):
        super().__init__(n, seed=seed)
        self.kept = (n // batch_size) * batch_size

    def __len__(self) -> int:
        return self.kept

    def order(self) -> np.ndarray:
        return super().order()[:self.kept]


def finetune_arguments(recipe: TaskRecipe, *, train_examples: int, seed: int, device: str, output_dir: str,
                       progress: bool = True, checkpoints: bool = False):
    """`TrainingArguments` of one task's run: the recipe's batch and epochs, lr 3e-5 with 6% linear warmup and
    cosine decay to 0.1 x, evaluation on the valid set after every epoch, fp32 (the pipeline runs no mixed
    precision), nothing saved unless `checkpoints` (then a checkpoint in `output_dir` at each epoch's end, the last
    one kept, for a killed run to resume from; the best epoch is kept by `keep_best_epoch`); the partial train
    batch is dropped by `FullBatchSampler`.

    Raises:
        BblError: fewer training examples than one batch (the pipeline drops the partial batch: no step at all).
    """
    import torch
    from transformers import TrainingArguments

    steps = total_steps(train_examples, recipe.batch_size, recipe.epochs)
    if steps < 1:
        raise BblError(f"{train_examples} training example(s) do not fill one batch of {recipe.batch_size}; "
                       "use more examples (--max-train-examples) or a smaller --batch-size")
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=ADAM_EPS,  # recorded; `pipeline_optimizer` is used
        weight_decay=WEIGHT_DECAY,
        num_train_epochs=recipe.epochs,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": MIN_LR_FACTOR},
        warmup_steps=int(WARMUP_PROPORTION * steps),
        eval_strategy="epoch",
        save_strategy="epoch" if checkpoints else "no",
        save_total_limit=1 if checkpoints else None,
        logging_strategy="epoch",
        report_to="none",
        seed=seed,
        use_cpu=device == "cpu" or not torch.cuda.is_available(),
        remove_unused_columns=False,
        disable_tqdm=not progress,
    )


def pipeline_optimizer(model):
    """`torch.optim.AdamW` over every parameter with lr 3e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0.01,
    amsgrad off (trainer.py `_init_opitmizer`)."""
    import torch

    return torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=BETAS, eps=ADAM_EPS,
                             weight_decay=WEIGHT_DECAY, amsgrad=False)


def keep_best_epoch(metric: str):
    """A `TrainerCallback` that copies the model's weights (to CPU) whenever the validation `metric` beats every
    earlier epoch's, strictly (a tie keeps the earlier epoch), and loads the best back when training ends
    (trainer.py `train`: `keep_best_model`, `higher_is_better`, `_compare_scores`). Its `best_epoch` (1-based) and
    `best_score` say which was kept."""
    from transformers import TrainerCallback

    class KeepBestEpoch(TrainerCallback):
        def __init__(self):
            self.best_score: float | None = None
            self.best_epoch: int | None = None
            self.state_dict = None

        def on_evaluate(self, args, state, control, model=None, metrics=None, **kw):
            score = (metrics or {}).get(f"eval_{metric}")
            if score is None or model is None:
                return
            if self.best_score is None or score > self.best_score:
                self.best_score, self.best_epoch = float(score), int(round(state.epoch or 0))
                self.state_dict = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

        def on_train_end(self, args, state, control, model=None, **kw):
            if self.state_dict is not None and model is not None:
                model.load_state_dict(self.state_dict)

    return KeepBestEpoch()


def metrics_function(recipe: TaskRecipe):
    """`compute_metrics` for the Trainer: the recipe's metrics of the argmax of (N, labels) logits."""

    def compute(prediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return classification_metrics(np.argmax(logits, axis=-1), prediction.label_ids, recipe.metrics)

    return compute
