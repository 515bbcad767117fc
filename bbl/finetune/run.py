"""`bbl finetune`: fine-tune a causal LM on (Super)GLUE tasks as the BabyLM 2025 pipeline does, one fresh copy of
the model per task, on the transformers Trainer; write the pipeline's predictions.json per task and a report.

Order: every argument, the model dir and every task file are checked (nothing written on an error); then per task
encode → train with the best epoch kept → predict the valid file → `OUT/pipeline/<model>/main/finetune/<task>/
{predictions.json,results.txt}` (`bbl.evaluate.predictions`; the layout `bbl eval` writes its zero-shot files
in, so both under one OUT feed the pipeline's `collate_preds.py`); last `OUT/finetune.md` and, the marker of a
finished run, `OUT/finetune.json` (named apart from `bbl eval`'s results.json so the two can share OUT).
Each task trains in its own working dir, `OUT/finetune-tasks/<task>/` (`bbl.finetune.work`): a killed run re-run
with the same command keeps the tasks it finished and resumes the one it was on from its last epoch's checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bbl.errors import BblError
from bbl.evaluate.predictions import classification_predictions, finetune_predictions_dir, write_predictions
from bbl.finetune.data import TASK_FORMATS, encode_pairs, read_examples, train_valid_files
from bbl.finetune.recipe import (
    SEQUENCE_LENGTH,
    FinetuneConfig,
    TaskRecipe,
    finetune_arguments,
    keep_best_epoch,
    metrics_function,
    pipeline_optimizer,
    total_steps,
)
from bbl.finetune.work import TaskWork, durable_best, model_digest, task_settings
from bbl.io import atomic_write_json, atomic_write_text
from bbl.models.build import check_model_dir, scoring_positions
from bbl.outputs import claim_output

PIPELINE_DIR = "pipeline"
"""OUT's folder in the pipeline's results layout (as `bbl eval`'s)."""
RESULTS_FILE, REPORT_FILE = "finetune.json", "finetune.md"


def pipeline_model_name(model_dir: Path) -> str:
    """The results folder of a model: its dir's stem (finetune/run.py `Path(model_name_or_path).stem`), with
    characters other than letters, digits, `-_.` replaced by `_` as `bbl eval` names it."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model_dir).stem)


def _examples(ids: list[list[int]], labels: list[int]) -> list[dict]:
    return [{"input_ids": x, "attention_mask": [1] * len(x), "labels": y} for x, y in zip(ids, labels, strict=True)]


def finetune_task(model_dir: Path, task: str, tokenizer, train: tuple[list, list], valid: tuple[list, list], *,
                  config: FinetuneConfig, max_length: int, work: TaskWork, progress: bool = True,
                  log=print) -> tuple[dict, np.ndarray]:
    """Fine-tune a fresh classifier on one task's examples and predict its valid rows with the best epoch.

    Args:
        train, valid: (pairs, labels) from `read_examples`.
        max_length: tokens kept per input (`input_limit`).
        work: the task's working dir: a checkpoint each epoch and the best epoch's weights, for a killed run to
            resume from (`TaskWork.begin`); left to the caller to `finish`.
    Returns:
        (result, predicted): result holds the recipe used, the validation metrics of the kept epoch (`score` is
        the task's selection metric), `best_epoch` (1-based), example and truncation counts; predicted is (N,)
        int64, the class of each valid row.
    Raises:
        BblError: fewer training examples than one batch.
    """
    from transformers import DataCollatorWithPadding, set_seed

    from bbl.finetune.model import CausalLMClassifier
    from bbl.finetune.trainer import FinetuneTrainer

    recipe: TaskRecipe = config.recipe(task)
    train_ids, cut_train = encode_pairs(tokenizer, train[0], max_length)
    valid_ids, cut_valid = encode_pairs(tokenizer, valid[0], max_length)
    if cut_train or cut_valid:
        log(f"warning: {task}: {cut_train} of {len(train_ids)} train and {cut_valid} of {len(valid_ids)} valid "
            f"input(s) longer than {max_length} tokens truncated (longest side first, as the pipeline)")
    set_seed(config.seed)  # before the head is built: run.py seeds everything first
    model = CausalLMClassifier.from_pretrained(model_dir, TASK_FORMATS[task].num_labels, read=config.read)
    keep = keep_best_epoch(recipe.metric)
    resume_from = work.begin()
    if resume_from is not None:
        log(f"{task}: resuming {resume_from}")
    trainer = FinetuneTrainer(
        model=model,
        args=finetune_arguments(recipe, train_examples=len(train_ids), seed=config.seed, device=config.device,
                                output_dir=str(work.checkpoints), progress=progress, checkpoints=True),
        train_dataset=_examples(train_ids, train[1]),
        eval_dataset=_examples(valid_ids, valid[1]),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=metrics_function(recipe),
        optimizers=(pipeline_optimizer(model), None),
        callbacks=[keep, durable_best(keep, work.best)],
    )
    trainer.train(resume_from_checkpoint=None if resume_from is None else str(resume_from))
    output = trainer.predict(_examples(valid_ids, valid[1]))
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    predicted = np.argmax(logits, axis=-1).astype(np.int64)
    metrics = {m: float(output.metrics[f"test_{m}"]) for m in recipe.metrics}
    result = {"metric": recipe.metric, "score": metrics[recipe.metric], **metrics, "best_epoch": keep.best_epoch,
              "epochs": recipe.epochs, "batch_size": recipe.batch_size, "learning_rate": trainer.args.learning_rate,
              "steps": total_steps(len(train_ids), recipe.batch_size, recipe.epochs),
              "train_examples": len(train_ids), "valid_examples": len(valid_ids),
              "truncated": {"train": cut_train, "valid": cut_valid}, "max_length": max_length}
    return result, predicted


def input_limit(model_dir: Path) -> int:
    """Tokens kept per fine-tuning input: the pipeline's 512 (eval_finetuning.sh `--sequence_length`), and at most
    the positions of a model with a learned position table (GPT-2), which could not run more; a rotary model (LLaMA,
    Qwen) takes the 512 as the pipeline gives them (`bbl.models.build.scoring_positions`, read from a weightless
    copy on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir)))
    limit = scoring_positions(skeleton)
    return SEQUENCE_LENGTH if limit is None else min(SEQUENCE_LENGTH, limit)


def run_finetune(model_dir: Path, config: FinetuneConfig, *, data_dir: Path, out: Path, overwrite: bool = False,
                 progress: bool = True, log=print) -> dict:
    """`_run_finetune` into `out` once it is claimed (`bbl.outputs`): new, empty or a results dir; a finished
    fine-tuning (finetune.json) is replaced only with `overwrite`; one writer at a time.

    Raises:
        BblError: an --out that is a file, under a file, not a results dir, unwritable or held by another run; a
            finished fine-tuning without --overwrite; and `_run_finetune`'s errors.
    """
    with claim_output(out, "finetune", overwrite=overwrite, log=log):
        return _run_finetune(model_dir, config, data_dir=data_dir, out=out, progress=progress, log=log)


def _run_finetune(model_dir: Path, config: FinetuneConfig, *, data_dir: Path, out: Path, progress: bool = True,
                  log=print) -> dict:
    """`bbl finetune`: every task of `config` on the model in `model_dir`; returns the record written to
    `OUT/finetune.json` ({model, path, seed, read, deviations, tasks: {task: result}}). A task finished by an
    earlier run with the same settings is kept, not trained again; one it was killed in resumes (`bbl.finetune.work`).

    Raises:
        BblError: a bad model dir, a tokenizer without a pad token, a missing data dir or task file, a bad row
            (all before anything is written), or too few training examples for one batch.
    """
    from transformers import AutoTokenizer

    model_dir, out = Path(model_dir), Path(out)
    check_model_dir(model_dir)
    data = {}
    for task in config.tasks:
        train_file, valid_file = train_valid_files(data_dir, task)
        data[task] = (read_examples(train_file, task, limit=config.max_train_examples),
                      read_examples(valid_file, task, limit=config.max_valid_examples))
    for task in config.tasks:  # the Trainer's own check comes after the task's work dir is written
        recipe, examples = config.recipe(task), len(data[task][0][0])
        if total_steps(examples, recipe.batch_size, recipe.epochs) < 1:
            raise BblError(f"--tasks {task}: {examples} training example(s) do not fill one batch of "
                           f"{recipe.batch_size}; use more examples (--max-train-examples) or a smaller --batch-size")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        raise BblError(f"{model_dir}: its tokenizer has no pad token; batches of uneven inputs need one "
                       "(save the tokenizer with pad_token set)")
    tokenizer.padding_side = "right"  # run.py `--padding_side` default
    max_length = input_limit(model_dir)
    name = pipeline_model_name(model_dir)
    model = model_digest(model_dir)

    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_FILE).unlink(missing_ok=True)  # the marker of a finished run, written last
    record = {"model": name, "path": str(model_dir.resolve()), "seed": config.seed, "read": config.read,
              "deviations": config.deviations(), "tasks": {}}
    for task in config.tasks:
        work = TaskWork(out, task, task_settings(task, config, model=model, max_length=max_length,
                                                 train=data[task][0], valid=data[task][1]), log=log)
        where = finetune_predictions_dir(out / PIPELINE_DIR, name, task)
        result = work.finished()
        if result is not None and (where / "predictions.json").is_file():
            log(f"finetune {name} {task}: finished by an earlier run with the same settings, kept")
            record["tasks"][task] = result
            continue
        log(f"finetune {name} {task}")
        result, predicted = finetune_task(model_dir, task, tokenizer, *data[task], config=config,
                                          max_length=max_length, work=work, progress=progress, log=log)
        write_predictions(where, classification_predictions(task, predicted))
        atomic_write_text(where / "results.txt", "\n".join(f"{m}: {result[m]}" for m in config.recipe(task).metrics))
        work.finish(result)
        record["tasks"][task] = result
        log(f"{task}: {result['metric']} {result['score']:.4f} (best epoch {result['best_epoch']} of "
            f"{result['epochs']})")
    atomic_write_text(out / REPORT_FILE, finetune_table(record))
    atomic_write_json(out / RESULTS_FILE, record)
    return record


def finetune_table(record: dict) -> str:
    """Markdown: one row per task with its selection metric, accuracy, F1, MCC (percent) and the kept epoch."""

    def pct(value):
        return "" if value is None else f"{100 * value:.1f}"

    lines = [f"# bbl finetune: {record['model']} (seed {record['seed']}, reads the {record['read']} token)", ""]
    if record["deviations"]:
        lines += ["Deviates from the pipeline's recipe: " + ", ".join(f"{k} {v}" for k, v in
                                                                      record["deviations"].items()), ""]
    lines += ["| task | metric | score | accuracy | F1 | MCC | best epoch | train | valid |",
              "|---|---|---|---|---|---|---|---|---|"]
    for task, r in record["tasks"].items():
        lines.append(f"| {task} | {r['metric']} | {pct(r['score'])} | {pct(r.get('accuracy'))} | {pct(r.get('f1'))} "
                     f"| {pct(r.get('mcc'))} | {r['best_epoch']}/{r['epochs']} | {r['train_examples']} "
                     f"| {r['valid_examples']} |")
    return "\n".join(lines) + "\n"
