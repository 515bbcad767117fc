"""Training on the transformers `Trainer`: teachers, the un-distilled student, and (via a subclass) distillation.

Recipe: resolve config → check prepared data and output dir → build the model → Trainer with the per-epoch window
permutation, eval each epoch (and every N steps), best-by-eval-loss kept → save an HF dir with the tokenizer.
Run under `torchrun --nproc_per_node N` for DDP with the same global batch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bbl import __version__
from bbl.config import Config
from bbl.data import PreparedData
from bbl.errors import BblError
from bbl.ledger import check_budget, final_ledger, plan_words, word_callbacks
from bbl.windows import EpochPermutationSampler, TokenWindows, window_subset

RUN_FILE = "bbl_run.json"
CONFIG_FILE = "bbl_config.yaml"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def resolve_batch(cfg: Config, world: int | None = None) -> tuple[int, int]:
    """(micro batch per device, gradient accumulation steps) giving the global `training.batch_size`.

    Raises:
        BblError: if batch_size is not micro_batch_size x world size x an integer.
    """
    world = world or world_size()
    t = cfg.training
    micro = t.micro_batch_size or max(t.batch_size // world, 1)
    if t.batch_size % (micro * world):
        raise BblError(f"training.batch_size {t.batch_size} is not divisible by micro_batch_size {micro} x "
                       f"{world} process(es); set training.micro_batch_size so that it is")
    return micro, t.batch_size // (micro * world)


def precision_flags(precision: str) -> dict:
    """TrainingArguments bf16/fp16 flags for `precision` (auto: bf16 where the GPU has it, else fp16; fp32 on CPU)."""
    import torch

    if precision == "auto":
        if not torch.cuda.is_available():
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and not torch.cuda.is_available():
        raise BblError(f"training.precision {precision} needs a GPU; use precision=fp32 or auto on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def load_windows(cfg: Config, data: PreparedData) -> tuple[TokenWindows, TokenWindows]:
    """The train windows (all, or the fixed `max_train_windows` subset) and the fixed dev subset."""
    t = cfg.training
    train_stream, dev_stream = data.stream("train"), data.stream("dev")
    n_train = len(train_stream) // t.seq_len
    n_dev = len(dev_stream) // t.seq_len
    data_seed = t.seed if t.data_seed is None else t.data_seed
    if n_train == 0 or n_dev == 0:
        raise BblError(f"{data.path}: fewer than seq_len={t.seq_len} tokens in train or dev; prepare more text")
    train = TokenWindows(train_stream, t.seq_len, window_subset(n_train, t.max_train_windows, seed=data_seed))
    dev = TokenWindows(dev_stream, t.seq_len, window_subset(n_dev, t.dev_windows, seed=data_seed + 1))
    return train, dev


def _callbacks(out: Path, cfg: Config):
    from transformers import TrainerCallback

    class MetricsJsonl(TrainerCallback):
        """One JSON line per logging step in OUT/metrics.jsonl."""

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                with open(out / "metrics.jsonl", "a") as f:
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

    callbacks = [MetricsJsonl()]
    if cfg.training.eval_every_steps:
        callbacks.append(EvalEachEpoch())
    if cfg.training.stop_after_steps:
        callbacks.append(StopAfterSteps())
    return callbacks


def training_arguments(cfg: Config, out: Path):
    import torch
    from transformers import TrainingArguments

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
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        report_to=list(t.report_to) or "none",
        seed=t.seed,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=None if torch.cuda.is_available() or world_size() == 1 else "gloo",
        dataloader_num_workers=t.dataloader_workers,
        remove_unused_columns=False,
        disable_tqdm=not is_main_process(),
        **precision_flags(t.precision),
        **step_kw,
    )


def train_sampler(dataset, seed: int):
    """The train order of `dataset`: its own `sampler()` (the cache's chunk shuffle) or `EpochPermutationSampler`."""
    sampler = getattr(dataset, "sampler", None)
    return sampler() if callable(sampler) else EpochPermutationSampler(len(dataset), seed=seed)


def make_window_trainer(base=None):
    """A Trainer subclass whose train order is `train_sampler` (a new seeded permutation per epoch)."""
    from bbl.trainer_loss import make_loss_trainer

    base = base or make_loss_trainer()

    class WindowTrainer(base):
        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            return train_sampler(ds, self.args.seed)

    return WindowTrainer


def _check_out_dir(out: Path, cfg: Config, resume: bool, data: PreparedData) -> str | None:
    """The checkpoint to resume from (or None). Refuses to mix configs or data, or to overwrite without --resume."""
    from transformers.trainer_utils import get_last_checkpoint

    from bbl.tokenizer import tokenizer_fingerprint

    ckpt_dir = out / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    saved = out / CONFIG_FILE
    if last and not resume:
        raise BblError(f"{out}: holds checkpoints of an earlier run; pass --resume to continue it or choose another --out")
    if last and (Path(last) / "tokenizer.json").is_file() and \
            tokenizer_fingerprint(Path(last)) != tokenizer_fingerprint(data.tokenizer_dir):
        raise BblError(f"{last}: checkpoint was trained with another tokenizer than {data.tokenizer_dir}; "
                       f"resume with the --data it was trained on, or choose another --out")
    if last and saved.is_file():
        import yaml

        old, new = yaml.safe_load(saved.read_text()), cfg.to_dict()
        for d in (old, new):  # settings that change neither the math nor the data may differ on resume
            for key in ("stop_after_steps", "loss_impl", "loss_chunk_rows"):
                d["training"].pop(key, None)
        diff = [f"{s}.{k}" for s in new for k in (new[s] if isinstance(new[s], dict) else {})
                if isinstance(old.get(s), dict) and old[s].get(k) != new[s][k]]
        if diff:
            raise BblError(f"{saved}: --resume with a different config ({', '.join(diff)}); "
                           f"use the original config or another --out")
    return last


def train_lm(cfg: Config, data_dir: Path, out: Path, *, resume: bool = False, kind: str = "teacher",
             train_dataset=None, trainer_base=None, trainer_kwargs: dict | None = None,
             provenance: dict | None = None, log=print):
    """Train `cfg`'s model on the prepared windows; returns the output dir (an HF model dir with tokenizer).

    `train_dataset`, `trainer_base` and `trainer_kwargs` let distillation reuse the recipe with its own dataset
    and `compute_loss`.

    Raises:
        BblError: prepared data missing, vocab mismatch, indivisible batch, resume with another config.
    """
    from transformers import AutoTokenizer, default_data_collator

    from bbl.models import build_model, count_parameters

    data = PreparedData(data_dir, check_hashes=True)
    vocab = data.vocab_size
    if cfg.model.vocab_size is not None and cfg.model.vocab_size != vocab:
        raise BblError(f"{data.tokenizer_dir}: tokenizer has {vocab} tokens but model.vocab_size is "
                       f"{cfg.model.vocab_size}; drop model.vocab_size or re-run bbl prepare --vocab-size")
    if cfg.training.seq_len > cfg.model.max_position_embeddings:
        raise BblError(f"training.seq_len {cfg.training.seq_len} exceeds model.max_position_embeddings "
                       f"{cfg.model.max_position_embeddings}")
    out = Path(out)
    resume_from = _check_out_dir(out, cfg, resume, data)
    args = training_arguments(cfg, out)
    train, dev = load_windows(cfg, data)
    if train_dataset is not None:
        train = train_dataset
    ledger = plan_words(cfg, data, train, teachers=(provenance or {}).get("teacher_ledgers", []))
    check_budget(cfg, ledger)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        cfg.save(out / CONFIG_FILE)
        (out / RUN_FILE).unlink(missing_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(str(data.tokenizer_dir))
    model = build_model(cfg.model, vocab, seed=cfg.training.seed)
    n_params = count_parameters(model)
    micro, accum = resolve_batch(cfg)
    if is_main_process():
        log(f"{kind} {cfg.name}: {cfg.model.architecture} {n_params / 1e6:.2f}M parameters; {len(train):,} train "
            f"windows x {cfg.training.epochs:g} epochs, batch {cfg.training.batch_size} = {micro} x {accum} accum x "
            f"{world_size()} proc; {len(dev):,} dev windows" + (f"; resuming {resume_from}" if resume_from else ""))
    trainer_cls = make_window_trainer(trainer_base)
    trainer = trainer_cls(model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
                          data_collator=default_data_collator,
                          callbacks=_callbacks(out, cfg) + word_callbacks(cfg, out, ledger, tokenizer),
                          loss_impl=cfg.training.loss_impl, loss_chunk_rows=cfg.training.loss_chunk_rows,
                          **(trainer_kwargs or {}))
    result = trainer.train(resume_from_checkpoint=resume_from)
    stopped_early = bool(cfg.training.stop_after_steps) and trainer.state.global_step < trainer.state.max_steps
    if is_main_process():
        trainer.save_model(str(out))
        tokenizer.save_pretrained(str(out))
        run = {
            "bbl_version": __version__, "kind": kind, "config": cfg.to_dict(), "parameters": n_params,
            "architecture": cfg.model.architecture, "tokenizer_sha256": data.tokenizer_sha256,
            "train_stream_sha256": data.stream_sha256("train"), "data_dir": str(Path(data_dir).resolve()),
            "global_step": trainer.state.global_step, "best_eval_loss": trainer.state.best_metric,
            "best_checkpoint": trainer.state.best_model_checkpoint, "train_runtime_s": result.metrics.get("train_runtime"),
            "train_tokens": trainer.state.global_step * cfg.training.batch_size * cfg.training.seq_len,
            "complete": not stopped_early, **{k: v for k, v in (provenance or {}).items() if k != "teacher_ledgers"},
            "ledger": final_ledger(ledger, trainer.state.global_step),
        }
        tmp = out / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(run, indent=2) + "\n")
        os.replace(tmp, out / RUN_FILE)
        log(f"saved {out} (best eval loss {trainer.state.best_metric})")
    _finish_distributed()
    return out


def _finish_distributed() -> None:
    """Wait for rank 0's save, then tear the process group down cleanly (gloo aborts a rank that just exits)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
