"""Training on the transformers `Trainer`: teachers, the un-distilled student, and (via a subclass) distillation.

Recipe: resolve config → check prepared data and output dir → build the model → Trainer with the per-epoch window
permutation, eval each epoch (and every N steps) on the dev windows, or on the prepared selection split when the
train words hold one out, best-by-eval-loss kept → save an HF dir with the tokenizer.
Run under `torchrun --nproc_per_node N` for DDP with the same global batch.
"""

from __future__ import annotations

import json
from pathlib import Path

from bbl import __version__
from bbl.config import Config
from bbl.data.prepared import PreparedData
from bbl.data.tokenizer import check_same_tokenizer, save_hf_tokenizer, tokenizer_fingerprint
from bbl.errors import BblError, UsageError
from bbl.io import atomic_write_json, atomic_write_text, load_json, parse_yaml
from bbl.models.build import check_seq_len
from bbl.outputs import check_output, claim_output, run_finished
from bbl.runtime import finish_distributed, is_main_process, world_size
from bbl.train.batching import load_windows, resolve_batch
from bbl.train.checkpoints import resume_checkpoint
from bbl.train.ledger import check_budget, final_ledger, plan_words, row_windows, word_callbacks
from bbl.train.objectives import PhasedDataset, criterion_callback, has_mlm
from bbl.train.trainer import make_window_trainer, run_callbacks, training_arguments

RUN_FILE = "bbl_run.json"
CONFIG_FILE = "bbl_config.yaml"
METRICS_FILE = "metrics.jsonl"


def _check_out_dir(out: Path, cfg: Config, resume: bool, data: PreparedData, log=print) -> str | None:
    """The checkpoint to resume from (or None): the last complete one, a killed save's partial ones moved aside
    (`checkpoints.resume_checkpoint`). Refuses to mix configs or data, or to overwrite without --resume."""
    last = resume_checkpoint(out / "checkpoints", log=log)
    last = None if last is None else str(last)
    saved = out / CONFIG_FILE
    if last and not resume:
        raise BblError(f"{out}: holds checkpoints of an earlier run; pass --resume to continue it or choose another --out")
    if last and (Path(last) / "tokenizer.json").is_file():
        check_same_tokenizer(tokenizer_fingerprint(Path(last)), data.tokenizer_fingerprint(),
                             subject=f"{last}: checkpoint", reference=data.tokenizer_dir,
                             fix="resume with the --data it was trained on, or choose another --out")
    if last and saved.is_file():
        old, new = parse_yaml(saved.read_bytes(), str(saved), fix="restore it, or start over in another --out"), \
            cfg.to_dict()
        if not isinstance(old, dict) or not all(isinstance(old.get(s), dict) for s in new if isinstance(new[s], dict)):
            raise BblError(f"{saved}: not the config bbl saved for this run; restore it, or start over in another --out")
        for d in (old, new):  # settings that change neither the math nor the data may differ on resume
            for key in ("stop_after_steps", "loss_impl", "loss_chunk_rows"):
                d["training"].pop(key, None)
        defaults = Config().to_dict()  # a key saved before it existed had its default (e.g. window_offset)
        diff = [f"{s}.{k}" for s in new for k in (new[s] if isinstance(new[s], dict) else {})
                if isinstance(old.get(s), dict) and old[s].get(k, defaults[s].get(k)) != new[s][k]]
        if diff:
            raise BblError(f"{saved}: --resume with a different config ({', '.join(diff)}); "
                           f"use the original config or another --out")
    return last


def checkpoint_step(checkpoint) -> int:
    """The optimizer step a Trainer checkpoint dir was saved at (0 for None: a run from its first step)."""
    if checkpoint is None:
        return 0
    from bbl.train.checkpoints import STATE_FILE

    state = load_json(Path(checkpoint) / STATE_FILE) or {}
    return int(state.get("global_step") or 0)


def trim_metrics(file: Path, step: int) -> None:
    """Keep in a run's metrics.jsonl only what the run it continues logged up to `step` (its checkpoint): a resumed
    run logs the steps after it again, a run from step 0 starts an empty file, and a segment's summary line
    (train_runtime, train_loss) goes, so the file reads as one uninterrupted run's."""
    if not file.is_file():
        return
    kept = []
    for line in file.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line a kill cut short
        if isinstance(row, dict) and (row.get("step") or 0) <= step and "train_runtime" not in row and step > 0:
            kept.append(line)
    atomic_write_text(file, "".join(line + "\n" for line in kept))


def check_config_data(cfg: Config, data: PreparedData) -> int | None:
    """What `train_lm` checks of a config against the prepared data before it builds a model (`bbl study` checks
    each arm's config with it before its first run): the vocabulary, `training.seq_len` within the model's
    positions, and a `<mask>` token for mlm phases. Returns that token's id (None without mlm phases).

    Raises:
        BblError: naming the key and the fix.
    """
    if cfg.model.vocab_size is not None and cfg.model.vocab_size != data.vocab_size:
        raise BblError(f"{data.tokenizer_dir}: tokenizer has {data.vocab_size} tokens but model.vocab_size is "
                       f"{cfg.model.vocab_size}; drop model.vocab_size or re-run bbl prepare --vocab-size")
    check_seq_len(cfg.training.seq_len, cfg.model.max_position_embeddings, option="training.seq_len",
                  subject="the model (model.max_position_embeddings)")
    if not has_mlm(cfg.training.phases):
        return None
    return data.mask_token_id(needed_by="training.objective_schedule's mlm phases")


def _phased(cfg: Config, data: PreparedData, train, mask_token_id: int, *, cached: bool) -> PhasedDataset:
    """`train` following `training.objective_schedule`; a cache's mlm epochs read the prepared stream's windows of
    the same rows (the cache's `window_idx`), never the cache."""
    from bbl.data.windows import TokenWindows

    t = cfg.training
    mlm_windows = TokenWindows(data.stream("train"), t.seq_len, row_windows(train)) if cached else None
    return PhasedDataset(train, t.phases, seed=t.seed, mask_token_id=mask_token_id, vocab_size=data.vocab_size,
                         probability=t.mlm_probability, target=t.mlm_target, mlm_windows=mlm_windows,
                         mlm_kd_targets=cached and cfg.distill.mlm_kd)


def check_run_out(out: Path, *, resume: bool, overwrite: bool, kind: str = "model") -> str:
    """`bbl.outputs.check_output` for a training run's --out: refuses a dir that is not a bbl model run of `kind`
    (teacher, student_baseline, student_distilled, sweep_trial; a run of another kind whatever `overwrite` says),
    and a finished run unless `resume` (continue it) or `overwrite` (replace its own files); creates nothing.

    Raises:
        BblError: --resume with --overwrite; see `check_output`.
    """
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: --resume continues the run in --out, "
                       "--overwrite replaces it; pass one")
    return check_output(out, kind, overwrite=overwrite, finished_ok=resume)


def train_lm(cfg: Config, data_dir: Path, out: Path, *, resume: bool = False, overwrite: bool = False,
             kind: str = "teacher", train_dataset=None, trainer_base=None, trainer_kwargs: dict | None = None,
             callbacks=(), provenance: dict | None = None, log=print):
    """Train `cfg`'s model on the prepared windows; returns the output dir (an HF model dir with tokenizer).

    `out` must be new, empty or a bbl model run (`bbl.outputs`): a finished run is continued with `resume` or
    replaced with `overwrite` (its own files only), never silently; one process writes it at a time (a lock held
    for the run, rank 0's under torchrun).

    `callbacks` are extra `TrainerCallback`s (a sweep's pruning reads the dev loss through one).
    `train_dataset`, `trainer_base` and `trainer_kwargs` let distillation reuse the recipe with its own dataset
    and `compute_loss`.

    Raises:
        BblError: prepared data missing, vocab mismatch, indivisible batch, resume with another config, an --out
            that is not a model run, a finished run without --resume or --overwrite, an --out held by another run.
    """
    out = Path(out)
    check_run_out(out, resume=resume, overwrite=overwrite, kind=kind)
    data = PreparedData(data_dir, check_hashes=True)
    mask_token_id = check_config_data(cfg, data)
    with claim_output(out, kind, overwrite=overwrite, finished_ok=resume, lock=is_main_process(), log=log):
        return _train(cfg, data, data_dir, out, resume=resume, kind=kind, mask_token_id=mask_token_id,
                      train_dataset=train_dataset, trainer_base=trainer_base, trainer_kwargs=trainer_kwargs,
                      callbacks=callbacks, provenance=provenance, log=log)


def _train(cfg: Config, data: PreparedData, data_dir: Path, out: Path, *, resume: bool, kind: str, mask_token_id,
           train_dataset, trainer_base, trainer_kwargs, callbacks, provenance, log):
    """`train_lm`'s work, under the output's lock."""
    from transformers import AutoTokenizer, default_data_collator

    from bbl.models.build import build_model, count_parameters

    phases, vocab = cfg.training.phases, data.vocab_size
    resume_from = _check_out_dir(out, cfg, resume, data, log)
    if resume and run_finished(out):  # the same config (checked above): a finished run has nothing to continue
        log(f"{out}: the run finished (its {RUN_FILE} says complete); nothing to resume, left as it is")
        return out
    args = training_arguments(cfg, out)
    train, dev = load_windows(cfg, data)
    if train_dataset is not None:
        train = train_dataset
    ledger = plan_words(cfg, data, train, teachers=(provenance or {}).get("teacher_ledgers", []))
    check_budget(cfg, ledger)  # before anything is written
    if mask_token_id is not None:
        train = _phased(cfg, data, train, mask_token_id, cached=train_dataset is not None)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        cfg.save(out / CONFIG_FILE)
        (out / RUN_FILE).unlink(missing_ok=True)
        trim_metrics(out / METRICS_FILE, checkpoint_step(resume_from))

    tokenizer = AutoTokenizer.from_pretrained(str(data.tokenizer_dir))
    model = build_model(cfg.model, vocab, seed=cfg.training.seed)
    n_params = count_parameters(model)
    micro, accum = resolve_batch(cfg)
    if is_main_process():
        log(f"{kind} {cfg.name}: {cfg.model.architecture} {n_params / 1e6:.2f}M parameters; {len(train):,} train "
            f"windows x {cfg.training.epochs:g} epochs, batch {cfg.training.batch_size} = {micro} x {accum} accum x "
            f"{world_size()} proc; {len(dev):,} {data.eval_split} windows"
            + ("; random window offsets" if cfg.training.window_offset == "random" else "")
            + (f"; objectives {cfg.training.objective_schedule}" if mask_token_id is not None else "")
            + (f"; resuming {resume_from}" if resume_from else ""))
    trainer_cls = make_window_trainer(trainer_base)
    trainer = trainer_cls(model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
                          data_collator=default_data_collator,
                          callbacks=run_callbacks(out, cfg) + word_callbacks(cfg, out, ledger, tokenizer)
                          + ([criterion_callback(phases)] if mask_token_id is not None else []) + list(callbacks),
                          loss_impl=cfg.training.loss_impl, loss_chunk_rows=cfg.training.loss_chunk_rows,
                          mlm_target=cfg.training.mlm_target,
                          **(trainer_kwargs or {}))
    result = trainer.train(resume_from_checkpoint=resume_from)
    stopped_early = bool(cfg.training.stop_after_steps) and trainer.state.global_step < trainer.state.max_steps
    if is_main_process():
        trainer.save_model(str(out))
        save_hf_tokenizer(tokenizer, out)  # over the Trainer's copy: the config the BabyLM pipeline also reads
        run = {
            "bbl_version": __version__, "kind": kind, "config": cfg.to_dict(), "parameters": n_params,
            "architecture": cfg.model.architecture, "tokenizer_sha256": data.tokenizer_sha256,
            "train_stream_sha256": data.stream_sha256("train"), "data_dir": str(Path(data_dir).resolve()),
            "global_step": trainer.state.global_step, "best_eval_loss": trainer.state.best_metric,
            "eval_split": data.eval_split,
            "best_checkpoint": trainer.state.best_model_checkpoint, "train_runtime_s": result.metrics.get("train_runtime"),
            "train_tokens": trainer.state.global_step * cfg.training.batch_size * cfg.training.seq_len,
            "complete": not stopped_early, **{k: v for k, v in (provenance or {}).items() if k != "teacher_ledgers"},
            "ledger": final_ledger(ledger, trainer.state.global_step),
        }
        atomic_write_json(out / RUN_FILE, run)
        log(f"saved {out} (best {data.eval_split} loss {trainer.state.best_metric})")
    finish_distributed()
    return out

