"""The transformers `Trainer` as bbl runs it: the chunked head loss (`training.loss_impl: chunked`, the default),
the run's train order, its `TrainingArguments` and callbacks (metrics.jsonl, eval each epoch, stop after N steps,
each checkpoint's tokenizer config made portable).

`LossTrainer` is a `Trainer` subclass whose `compute_loss` runs the model for its last hidden states only
(`logits_to_keep` = no position, `output_hidden_states`), then computes the CE (and, in `bbl.distill`'s subclass,
the KD term) with `bbl.losses.chunked.chunked_head_loss`; `WindowTrainer` adds the run's train order. The model
stays an unmodified transformers model, called through the Trainer's (possibly DDP-wrapped) module, so every
checkpoint is a plain HF dir.
`loss_impl: hf` keeps the Trainer's own loss path, the reference of the equality tests and benchmarks.
A batch marked `mlm` (a masked-LM phase of `training.objective_schedule`, `bbl.train.objectives`) runs with a
bidirectional attention mask and its loss is the CE at the masked positions (`masked_lm_loss`), in both paths.

The returned loss is the per-micro-batch mean (`loss_is_scaled_for_ga = False`: the Trainer divides by the
accumulation steps). HF's default normalises by the token count of the whole accumulated batch instead; the two
are equal in bbl because every window is full (each micro-batch counts the same number of labels).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from bbl.config import Config, LossImpl, MLMTarget
from bbl.data.tokenizer import TOKENIZER_FILE, write_portable_config
from bbl.errors import BblError
from bbl.losses.chunked import IGNORE_INDEX, chunked_head_loss, shift_labels
from bbl.models.build import BIDIRECTIONAL, bidirectional_attention, forward_without_logits
from bbl.runtime import is_main_process, world_size
from bbl.train.batching import resolve_batch, train_sampler
from bbl.train.objectives import CRITERION, has_mlm


class LossTrainer(Trainer):
    """The transformers `Trainer` with the chunked head loss (`loss_impl: chunked`) or its own (`hf`), and AntLM's
    masked-LM batches (`training.objective_schedule`).

    Args (beyond the `Trainer`'s):
        loss_impl: "chunked" (`chunked_head_loss` on the last hidden states) or "hf" (the model's logits and loss).
        loss_chunk_rows: rows per chunk of the chunked loss (None: `default_chunk_rows`).
        mlm_target: "previous" or "own" (`TrainingConfig.mlm_target`): which output predicts a masked token.
    """

    def __init__(self, *args, loss_impl: LossImpl = "chunked", loss_chunk_rows: int | None = None,
                 mlm_target: MLMTarget = "previous", **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_impl, self.loss_chunk_rows, self.mlm_target = loss_impl, loss_chunk_rows, mlm_target
        # None: the Trainer decides as for its own loss; False: ours is a per-micro-batch mean.
        self.loss_is_scaled_for_ga = False if loss_impl == "chunked" else None

    def student_hidden(self, model, input_ids, *, bidirectional: bool = False):
        """(outputs, hidden (B, S, H) after the final norm, head weight (V, H)) without the (B, S, V) logits."""
        outputs = forward_without_logits(model, input_ids, bidirectional=bidirectional)
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise ValueError("the chunked loss supports LM heads without bias (GPT-2, LLaMA); use loss_impl: hf")
        return outputs, outputs.hidden_states[-1], head.weight

    def masked_lm_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The CE at an mlm batch's labelled positions with bidirectional attention, a per-micro-batch mean.
        `mlm_target` previous: position s-1 predicts a masked s (the causal shift); own: s predicts s."""
        shift = self.mlm_target == "previous"
        if self.loss_impl == "chunked":
            outputs, hidden, weight = self.student_hidden(model, inputs["input_ids"], bidirectional=True)
            loss, _, _ = chunked_head_loss(hidden, weight, inputs["labels"], chunk_rows=self.loss_chunk_rows,
                                           shift=shift)
        else:  # the reference: the model's (B, S, V) logits
            with bidirectional_attention(model):
                outputs = model(input_ids=inputs["input_ids"], **BIDIRECTIONAL)
            labels = shift_labels(inputs["labels"]) if shift else inputs["labels"]
            loss = torch.nn.functional.cross_entropy(outputs.logits.float().flatten(0, 1), labels.flatten(),
                                                     ignore_index=IGNORE_INDEX)
            if self.loss_is_scaled_for_ga is None and self.model_accepts_loss_kwargs and num_items_in_batch:
                loss = loss / self.current_gradient_accumulation_steps  # the Trainer will not divide it
        return (loss, outputs) if return_outputs else loss

    @staticmethod
    def pop_mlm(inputs) -> bool:
        """Whether a batch belongs to an mlm phase (`PhasedDataset`'s `mlm` flag, removed from `inputs`)."""
        flag = inputs.pop("mlm", None)
        return flag is not None and bool(flag.any())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.pop_mlm(inputs):
            return self.masked_lm_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.loss_impl != "chunked":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs, hidden, weight = self.student_hidden(model, inputs["input_ids"])
        loss, _, _ = chunked_head_loss(hidden, weight, inputs["labels"], chunk_rows=self.loss_chunk_rows)
        return (loss, outputs) if return_outputs else loss


class WindowTrainer(LossTrainer):
    """The train room's Trainer: `LossTrainer` whose train order is `train_sampler` (a new seeded permutation of
    the windows each epoch, which the ledger replays). Teachers and the baseline student train with it; the
    distillation Trainer (`bbl.distill.trainer.DistillTrainer`) subclasses it."""

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        return train_sampler(ds, self.args.seed)


def make_window_trainer(base: type[LossTrainer] | None = None) -> type[WindowTrainer]:
    """The Trainer class `train_lm` runs: `base` when it already has the window order (`DistillTrainer`), else
    `WindowTrainer`.

    Raises:
        TypeError: a `base` that is not a `WindowTrainer`.
    """
    if base is None:
        return WindowTrainer
    if not issubclass(base, WindowTrainer):
        raise TypeError(f"{base.__name__} must subclass bbl.train.trainer.WindowTrainer")
    return base


def precision_flags(precision: str) -> dict:
    """TrainingArguments bf16/fp16 flags for `precision` (auto: bf16 where the GPU has it, else fp16; fp32 on CPU)."""
    if precision == "auto":
        if not torch.cuda.is_available():
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        raise BblError(f"training.precision {precision} needs a GPU; use precision=fp32 or auto on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def training_arguments(cfg: Config, out: Path):
    t = cfg.training
    micro, accum = resolve_batch(cfg)
    strategy = "steps" if t.eval_every_steps else "epoch"
    step_kw = {"eval_steps": t.eval_every_steps, "save_steps": t.eval_every_steps} if t.eval_every_steps else {}
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        eval_strategy=strategy,
        save_strategy=strategy,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{CRITERION}" if has_mlm(t.phases) else "eval_loss",
        greater_is_better=False,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        report_to=list(t.report_to) or "none",
        seed=t.seed,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=None if torch.cuda.is_available() or world_size() == 1 else "gloo",
        dataloader_num_workers=t.dataloader_workers,
        remove_unused_columns=False,
        torch_compile=t.torch_compile,
        disable_tqdm=not is_main_process(),
        **precision_flags(t.precision),
        **step_kw,
    )


def run_callbacks(out: Path, cfg: Config):
    class MetricsJsonl(TrainerCallback):
        """One JSON line per logging step in OUT/metrics.jsonl."""

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                with open(out / "metrics.jsonl", "a") as f:  # trimmed to the resumed step first (train.recipe)
                    f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, "time": time.time(),
                                        **logs}) + "\n")

    class EvalEachEpoch(TrainerCallback):
        """With step-wise eval, still evaluate and checkpoint at every epoch end."""

        def on_epoch_end(self, args, state, control, **kw):
            control.should_evaluate = control.should_save = True

    class StopAfterSteps(TrainerCallback):
        """Stop like a killed run after `stop_after_steps` (checkpoint saved at that step)."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= cfg.training.stop_after_steps:
                control.should_save = True
                control.should_training_stop = True

    class PortableTokenizerConfig(TrainerCallback):
        """Each saved checkpoint's tokenizer config rewritten as every bbl model dir's (`write_portable_config`)."""

        def on_save(self, args, state, control, **kw):
            saved = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero and (saved / TOKENIZER_FILE).is_file():
                write_portable_config(saved)

    callbacks = [MetricsJsonl(), PortableTokenizerConfig()]
    if cfg.training.eval_every_steps:
        callbacks.append(EvalEachEpoch())
    if cfg.training.stop_after_steps:
        callbacks.append(StopAfterSteps())
    return callbacks
