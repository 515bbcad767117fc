"""The `bbl` command line: click commands only, each a thin call into the module that owns the stage.

Run `bbl --help` for the list of stages, `bbl COMMAND --help` for each one's options.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bbl import __version__
from bbl.cli.cache_commands import cache
from bbl.cli.export_command import export_cmd, fix_tokenizer_cmd
from bbl.cli.params import (
    CacheArg,
    OneLineErrors,
    PathArg,
    Positive,
    Seed,
    apply_sets,
    config_options,
    default_data,
    set_option,
)
from bbl.errors import UsageError, as_usage_error

MAX_VOCAB = 2**24
"""`bbl prepare --vocab-size` at most: 16.7M ids (the largest real vocabularies hold about 256k); the BPE trainer
aborts the process (a Rust allocation failure, no Python error) on sizes near 1e11."""


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120,
                                         "terminal_width": 120})
@click.version_option(__version__, prog_name="bbl")
def main():
    """bbl — Baby Llama as a tool: train teachers, cache their top-k soft targets in Zarr, distill a student."""


@main.command()
@click.option("--train-dir", type=PathArg, required=True, help="BabyLM train dir with *.train files (babylm_10M/).")
@click.option("--dev-dir", type=PathArg, required=True, help="BabyLM dev dir with *.dev files (babylm_dev/).")
@click.option("--out", type=PathArg, required=True, help="Output dir for cleaned text, tokenizer, streams.")
@click.option("--vocab-size", type=click.IntRange(min=259, max=MAX_VOCAB), default=16000, show_default=True,
              help="BPE vocabulary size (>= 260: the 256 byte tokens and 4 specials; 259 with --no-mask-token; at "
                   f"most {MAX_VOCAB:,}, past which the BPE trainer cannot allocate its tables).")
@click.option("--mask-token/--no-mask-token", default=True, show_default=True,
              help="Reserve the special <mask> (id 3) that masked-LM phases need (training.objective_schedule, "
                   "AntLM); --no-mask-token gives Baby Llama's exact three specials <pad> <s> </s>.")
@click.option("--tokenizer", "tokenizer_dir", type=PathArg, default=None,
              help="Encode with this existing HF tokenizer dir (a pretrained teacher's; needs tokenizer.json) "
                   "instead of training one; --vocab-size is then ignored.")
@click.option("--selection-fraction", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True,
              help="Hold the last lines of each cleaned train source out of training, this share of them, as the "
                   "selection split, which then chooses the best checkpoint and a sweep's trials instead of the dev "
                   "set (BabyLlama-2: 0.05, its 9.5M / 0.5M words); 0 holds nothing out.")
@click.option("--force", is_flag=True, help="Redo every step even when the outputs match the inputs.")
def prepare(train_dir, dev_dir, out, vocab_size, mask_token, force, tokenizer_dir, selection_fraction):
    """Clean BabyLM text, train the BPE tokenizer, encode token streams."""
    from bbl.data.prepare import prepare as run_prepare

    manifest = run_prepare(train_dir, dev_dir, out, vocab_size=vocab_size, force=force, tokenizer_dir=tokenizer_dir,
                           mask_token=mask_token, selection_fraction=selection_fraction, log=click.echo)
    t = manifest["totals"]
    click.echo(f"prepared {out}: train {t['train']['words']:,} words -> {t['train']['tokens']:,} tokens "
               f"({t['train']['tokens_per_word']} tokens/word), "
               + (f"selection {t['selection']['words']:,} words -> {t['selection']['tokens']:,} tokens, "
                  if "selection" in t else "")
               + f"dev {t['dev']['tokens']:,} tokens, vocab {manifest['vocab_size']}, dtype {manifest['dtype']}")


@main.group(cls=OneLineErrors)
def data():
    """Check BabyLM data against the official release."""


@data.command("verify")
@click.argument("directory", type=PathArg)
@click.option("--manifest", "manifests", type=PathArg, multiple=True,
              help="Another release's manifest ('<git blob sha1> <path>' lines, named by the file's stem); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON ({releases, release, files}) instead of a table.")
def data_verify(directory, manifests, as_json):
    """Which BabyLM release DIRECTORY holds (by content), then its files against that release's SHA-1s.

    The 2023 release ships (babylm_10M/, babylm_dev/, babylm_test/); pass others with --manifest. Exits 1 when
    a file of the release is present but modified.
    """
    from bbl.data.verify import verify_release

    result = verify_release(directory, manifests)
    if as_json:
        click.echo(json.dumps({k: result[k] for k in ("releases", "release", "files")}, indent=2))
    else:
        for r in result["files"]:
            click.echo(f"{r['split']:<12} {r['source']:<18} {r['status']}")
        click.echo(", ".join(f"{n} {s}" for s, n in result["counts"].items()))
        click.echo(result["summary"])
    sys.exit(0 if result["ok"] else 1)


def _train_options(f):
    f = click.option("--overwrite", is_flag=True,
                     help="Replace the bbl run in --out (its own files only; a dir that is not a bbl run is never "
                          "touched).")(f)
    f = click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")(f)
    f = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override a config value, e.g. --set training.lr=1e-4 (repeatable).")(f)
    f = click.option("--out", type=PathArg, required=True, help="Output dir (an HF model dir when done).")(f)
    f = click.option("--data", type=PathArg, required=True, help="Prepared dir from `bbl prepare`.")(f)
    return click.argument("config")(f)


@main.command("train-teacher")
@_train_options
def train_teacher(config, data, out, overrides, resume, overwrite):
    """Train a teacher (preset name or YAML path) on the transformers Trainer."""
    from bbl.config import load_config
    from bbl.train.recipe import train_lm

    train_lm(load_config(config, overrides), data, out, resume=resume, overwrite=overwrite, kind="teacher",
             log=click.echo)


@main.command("train-student")
@_train_options
def train_student(config, data, out, overrides, resume, overwrite):
    """Train the student on hard labels only (the paper's no-distillation baseline)."""
    from bbl.config import load_config
    from bbl.train.recipe import train_lm

    train_lm(load_config(config, overrides), data, out, resume=resume, overwrite=overwrite, kind="student_baseline",
             log=click.echo)


DUMP_FLAGS = {"top_k": "--topk", "num_samples": "--samples", "seed": "--data-seed"}
"""The dump-logits option of each `DumpConfig` field not spelled --field-name; every other option is the field's
name, and each option's type, default and help are its field's (`config_options`)."""


def _dump_config_classes() -> list:
    """`DumpConfig` and each registered kind's own subclass of it (`KindOperations.config_class`)."""
    from bbl.cache.compute.registry import (
        OPERATIONS,  # imports numpy and the kinds: only when dump-logits parses
    )
    from bbl.cache.dump_config import DumpConfig

    return [DumpConfig, *dict.fromkeys(o.config_class for o in OPERATIONS.values() if o.config_class is not DumpConfig)]


def _dump_options() -> list[click.Option]:
    """DumpConfig's options, then the options of each kind's own settings (fields of its config subclass), all
    generated from the fields (their docstrings are the help)."""
    import dataclasses

    from bbl.cache.kinds.registry import kind_names

    base, *kinds = _dump_config_classes()
    options = config_options(base, flags=DUMP_FLAGS, choices={"targets": kind_names()})
    names = {f.name for f in dataclasses.fields(base)}
    for cls in kinds:
        own = [f.name for f in dataclasses.fields(cls) if f.name not in names]
        options += [o for o in config_options(cls, flags=DUMP_FLAGS) if o.name in own]
        names |= set(own)
    return options


def _dump_targets(settings: dict, overrides, cross_tokenizer: bool) -> str:
    """The kind a dump-logits command asks for: --targets, a `--set dump.targets=...`, or --cross-tokenizer."""
    from bbl.cache.dump_config import DumpConfig
    from bbl.config import parse_overrides

    targets = settings.get("targets", "topk")
    for item in overrides:
        if item.split("=", 1)[0].strip() == "dump.targets":
            targets = parse_overrides([item], {"dump": DumpConfig})["dump"]["targets"]
    if cross_tokenizer:
        if targets not in ("topk", "cross_tokenizer") or settings.get("num_samples"):
            raise UsageError("--cross-tokenizer stores top-k targets (it is --targets cross_tokenizer); drop "
                                   "--targets/--samples")
        targets = "cross_tokenizer"
    return targets


@main.command("dump-logits", late_options=_dump_options, late_after="cache_path")
@click.option("--teacher", "teachers", type=PathArg, multiple=True, required=True,
              help="Teacher model dir (repeat for an ensemble; logits are averaged).")
@click.option("--data", type=PathArg, required=True, help="Prepared dir the teachers were trained on.")
@click.option("--cache", "cache_path", type=CacheArg, default=Path("cache/ensemble.zarr"), show_default=True,
              help="The cache to write: a local path or an fsspec URL (s3://bucket/name.zarr; credentials and endpoint "
                   "from the environment, e.g. AWS_ENDPOINT_URL). Was --out (deprecated).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available).")
@click.option("--device-map", default=None,
              help="Load each teacher through accelerate's big-model placement (e.g. auto: layers spread over the "
                   "GPUs, then CPU), for a teacher larger than one GPU; the ensemble is formed on --device.")
@set_option("dump", "DumpConfig", "dump.top_k=32")
@click.option("--overwrite", is_flag=True,
              help="Replace the cache at --cache (other settings, or recompute a complete one); a dir that is not a "
                   "cache is never touched.")
@click.option("--cross-tokenizer", is_flag=True,
              help="The same as --targets cross_tokenizer: the teachers' tokenizer may differ from --data's: store "
                   "their top-k in their own vocabulary per teacher token, with byte spans, the alignment to the "
                   "student's tokens and the vocabulary correspondence (docs/cache-format.md; needs a prepared dir "
                   "with token offsets).")
@click.pass_context
def dump_logits_cmd(ctx, teachers, data, cache_path, device, device_map, overrides, overwrite, cross_tokenizer,
                    **settings):
    """Run the teachers once over every window; store their soft targets (top-k log-probs, or sampled ids, or
    both; or, for teachers of another tokenizer, their own top-k aligned to the student's tokens) in Zarr.

    Resumable: re-run the same command after an interruption (draws are seeded per chunk, so the store is
    byte-identical to an uninterrupted dump). Under `torchrun --nproc_per_node N` each rank writes its own chunks
    of the same store.
    """
    import dataclasses

    from bbl.cache.compute.registry import operations_of
    from bbl.cache.dump import dump_logits
    from bbl.runtime import check_device

    targets = _dump_targets(settings, overrides, cross_tokenizer)
    cls = operations_of(targets).config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    for name in [n for n in settings if n not in fields]:  # another kind's own option
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            flag = next(o for p in ctx.command.params if p.name == name for o in p.opts)
            raise UsageError(f"{flag} does not apply to --targets {targets}; drop it")
        del settings[name]
    settings = apply_sets(ctx, {**settings, "targets": targets}, overrides, "dump", cls)
    with as_usage_error():
        config = cls(**settings)
    dump_logits(list(teachers), data, cache_path, config, device=check_device(device), device_map=device_map,
                overwrite=overwrite, log=click.echo)


@main.command("distill")
@_train_options
@click.option("--cache", "caches", multiple=True, metavar="PATH[:KEY=VALUE,...]",
              help="Logit cache from `bbl dump-logits` (a path or an fsspec URL such as s3://bucket/name.zarr). "
                   "Repeat it to distil from several caches (e.g. teachers of two tokenizers), each with its own "
                   "settings after a colon: weight (w_c; the weights sum to 1, equal by default) and any of "
                   "distill's kd_variant, temperature, allow_retemper, reduction, divergence, jsd_beta, skew, "
                   "gold_*, e.g. --cache gpt2.zarr --cache llama.zarr:kd_variant=uld,weight=0.3.")
@click.option("--teacher", "teachers", type=PathArg, multiple=True,
              help="Online reference instead of --cache: keep these teachers resident (full-vocab KL).")
def distill_cmd(config, data, out, overrides, resume, overwrite, caches, teachers):
    """Distill the student from cached soft targets: L = alpha*CE + (1-alpha)*T^2*KD; from several caches,
    L = alpha*CE + (1-alpha) * sum_c w_c * T_c^2 * KD_c, each cache read as its own kind.

    Defaults follow the paper (alpha 0.5, T from the cache); KD variant and reduction are config keys:
    --set distill.kd_variant=topk_renorm, --set distill.reduction=babyllama (the original code's scaling).
    """
    from bbl.config import load_config
    from bbl.distill.recipe import distill

    distill(load_config(config, overrides), data, out, cache_path=list(caches) or None, teacher_dirs=teachers,
            resume=resume, overwrite=overwrite, log=click.echo)


@main.command("eval")
@click.argument("model_dirs", nargs=-1, type=PathArg)
@click.option("--ensemble", "ensembles", multiple=True, metavar="DIR,DIR",
              help="Evaluate the logit-mean ensemble of these models as one model (repeatable).")
@click.option("--tasks", default=None,
              help="Comma-separated, among blimp, supplement, ewok, entity_tracking, wug_adj, reading, perplexity; "
                   "'zero-shot' = the six BabyLM 2025 zero-shot tasks. Default: zero-shot with --suite, else "
                   "blimp,supplement,perplexity.")
@click.option("--suite", type=click.Choice(["full", "fast"]), default=None,
              help="The BabyLM suite: the pipeline's full_eval data or its fast_eval subsets (blimp_fast, "
                   "supplement_fast, ewok_fast, entity_tracking_fast); picks each task's default data dir, and "
                   "--tasks zero-shot and --pair-scoring pipeline unless given. Default data: full.")
@click.option("--eval-data", type=PathArg, default=None,
              help="The pipeline's evaluation_data/ as it is (full_eval/ and fast_eval/ inside; or one of those): "
                   "every task's default data comes from the --suite's folder (default: ../shared/data).")
@click.option("--revision-name", default="main", show_default=True,
              help="The pipeline's --revision_name: predictions go to pipeline/<model>/<revision>/ (a checkpoint: "
                   "chck_{N}M; a bbl word checkpoint is filed under its run's name).")
@click.option("--blimp-dir", type=PathArg, default=None,
              help="Dir of BLiMP *.jsonl (default: ../shared/data/blimp_filtered, or blimp_fast with --suite fast).")
@click.option("--supplement-dir", type=PathArg, default=None, help="Dir of the BabyLM supplement *.jsonl.")
@click.option("--task-data", "task_data", multiple=True, metavar="TASK=PATH",
              help="Data of ewok (dir or the organisers' zip), entity_tracking, wug_adj (dirs) or reading (its CSV "
                   "or dir); default: ../shared/data/<the pipeline's dir name> (repeatable).")
@click.option("--pair-scoring", type=click.Choice(["bos", "pipeline"]), default=None,
              help="BLiMP and supplement scoring: bos (lm-eval's: BOS context, every token) or pipeline (the BabyLM "
                   "2025 pipeline's, which also writes their predictions.json). Default: pipeline when the BabyLM "
                   "suite is asked (--suite, or a task beyond blimp and supplement), else bos.")
@click.option("--data", type=PathArg, default=None, help="Prepared dir, for dev perplexity.")
@click.option("--out", type=PathArg, default=Path("results"), show_default=True, help="Output dir.")
@click.option("--batch-size", type=Positive, default=64, show_default=True, help="Sentences per forward pass.")
@click.option("--max-pairs", type=Positive, default=None, help="Score only the first N items of each task file.")
@click.option("--seq-len", type=Positive, default=128, show_default=True, help="Dev window length for perplexity.")
@click.option("--dev-windows", type=Positive, default=8192, show_default=True, help="Dev subset size (as in training).")
@click.option("--data-seed", type=Seed, default=0, show_default=True,
              help="Seed of the dev subset, as the models' training.data_seed (else training.seed) picked it.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available).")
@set_option("eval", "EvalConfig", "eval.data_seed=1")
@click.option("--overwrite", is_flag=True,
              help="Replace a finished evaluation in --out (its results.json/md, plot and the models' files).")
@click.pass_context
def eval_cmd(ctx, model_dirs, ensembles, tasks, suite, eval_data, revision_name, blimp_dir, supplement_dir, task_data,
             pair_scoring, data, out, batch_size, max_pairs, seq_len, dev_windows, data_seed, device, overrides,
             overwrite):
    """Score models on the BabyLM 2025 zero-shot suite and dev perplexity; write JSON, a table, a plot and the
    pipeline's predictions.json files."""
    from bbl.evaluate.report import written_files
    from bbl.evaluate.run import EvalConfig, run_eval
    from bbl.evaluate.tasks import in_layout, resolve_task_data
    from bbl.runtime import check_device

    if not model_dirs and not ensembles:
        raise UsageError("no model: pass MODEL_DIR ... and/or --ensemble DIR,DIR")
    s = apply_sets(ctx, {"tasks": tasks, "suite": suite, "pair_scoring": pair_scoring, "revision": revision_name,
                         "blimp_dir": blimp_dir, "supplement_dir": supplement_dir, "batch_size": batch_size,
                         "max_pairs": max_pairs, "seq_len": seq_len, "dev_windows": dev_windows,
                         "data_seed": data_seed, "device": device}, overrides, "eval", EvalConfig,
                   options={"data_dirs": "task_data", "revision": "revision_name"})
    device = check_device(s["device"])
    names = _task_names(s["tasks"]) if s["tasks"] else None
    given = {**_given_task_data(task_data), **{k: Path(v) for k, v in (s.get("data_dirs") or {}).items()}}
    with as_usage_error():
        asked = EvalConfig(tasks=names, suite=s["suite"], data_dirs=given, revision=s["revision"],
                           batch_size=s["batch_size"], max_pairs=s["max_pairs"], seq_len=s["seq_len"],
                           dev_windows=s["dev_windows"], pair_scoring=s["pair_scoring"])  # what the options mean
    locate = in_layout(eval_data, asked.suite) if eval_data else default_data
    paths, fallbacks = resolve_task_data(asked.tasks, asked.suite, locate,
                                         given={**given, "blimp": s["blimp_dir"], "supplement": s["supplement_dir"]})
    for task, missing in fallbacks.items():
        click.echo(f"note: {task}: no {missing}/ here; scoring {paths[task]}, marked as a fallback in the results "
                   f"(pass --task-data {task}=PATH for the {asked.suite} set)")
    config = EvalConfig(tasks=names, suite=s["suite"], pair_scoring=s["pair_scoring"], revision=s["revision"],
                        data_dirs={**given, **{t: p for t, p in paths.items() if t not in ("blimp", "supplement")}},
                        blimp_dir=paths.get("blimp", s["blimp_dir"]),
                        supplement_dir=paths.get("supplement", s["supplement_dir"]), fallbacks=fallbacks,
                        batch_size=s["batch_size"], max_pairs=s["max_pairs"], seq_len=s["seq_len"],
                        dev_windows=s["dev_windows"], data_seed=s["data_seed"], device=device)
    results = run_eval(list(model_dirs), ensembles=[[Path(p) for p in e.split(",")] for e in ensembles],
                       config=config, data_dir=data, out=out, overwrite=overwrite, log=click.echo)
    click.echo((Path(out) / "results.md").read_text())
    click.echo(f"wrote {written_files(results)} to {out}")


def _given_task_data(specs) -> dict[str, Path]:
    """`--task-data TASK=PATH` specs as {task: path}."""
    given = {}
    for spec in specs:
        task, sep, path = spec.partition("=")
        if not sep or not path:
            raise UsageError(f"--task-data {spec}: use TASK=PATH, e.g. --task-data ewok=data/ewok_fast/ewok_fast.zip")
        given[task.strip()] = Path(path)
    return given


def _task_names(tasks: str | list[str]) -> list[str]:
    """`--tasks A,B,...` (or a `--set` list) as a list, 'zero-shot' standing for the six zero-shot tasks."""
    from bbl.evaluate.tasks import ZERO_SHOT

    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    return [n for t in names for n in (ZERO_SHOT if t == "zero-shot" else (t,))]


def _task_data(specs, suite: str, tasks=None) -> dict[str, Path]:
    """`--task-data TASK=PATH` specs as {task: path}, each other zero-shot task with data of its own (of `tasks`,
    when given) at its default data dir for `suite` (`default_data`), or the other suite's when only that one is
    here (one `note:` line says so)."""
    from bbl.evaluate.tasks import DATA_NAMES, ZERO_SHOT, suite_data

    given = _given_task_data(specs)
    own = [t for t in ZERO_SHOT if t not in ("blimp", "supplement") and (tasks is None or t in tasks)]
    defaults = {}
    for t in (t for t in own if t not in given):
        path, fell_back = suite_data(t, suite, default_data)
        if fell_back:
            click.echo(f"note: {t}: no {DATA_NAMES[t][suite]}/ here; scoring {path} (pass --task-data {t}=PATH for "
                       f"the {suite} set)")
        defaults[t] = path
    return {**defaults, **given}


@main.command("finetune")
@click.argument("model_dir", type=PathArg)
@click.option("--tasks", multiple=True, metavar="A,B,...",
              help="Among boolq, mnli, mrpc, multirc, qqp, rte, wsc; comma-separated and repeatable; 'all' = the "
                   "seven. Was also --task (deprecated).")
@click.option("--task-data", type=PathArg, default=None,
              help="Dir of <task>.train.jsonl and <task>.valid.jsonl (default: ../shared/data/glue_filtered). Was "
                   "--data (deprecated; --data is a prepared dir in every command).")
@click.option("--out", type=PathArg, default=Path("results"), show_default=True,
              help="Output dir: pipeline/<model>/main/finetune/<task>/predictions.json, finetune.md, finetune.json.")
@click.option("--seed", type=Seed, default=42, show_default=True,
              help="Seeds the head, dropout and data order (the pipeline's default 42).")
@click.option("--read", type=click.Choice(["last", "first"]), default="last", show_default=True,
              help="Position the head reads: the last real token, or the first (what eval_finetuning.sh runs).")
@click.option("--epochs", type=Positive, default=None,
              help="Override every task's epochs (smoke runs; deviates from the recipe's 10, WSC 30).")
@click.option("--batch-size", type=Positive, default=None,
              help="Override every task's batch (deviates from the recipe's 32, BoolQ and MultiRC 16).")
@click.option("--max-train-examples", type=Positive, default=None,
              help="Train on the first N rows only (deviates from the recipe).")
@click.option("--max-valid-examples", type=Positive, default=None,
              help="Validate and predict on the first N rows only (collate_preds then rejects the sizes).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available).")
@set_option("finetune", "FinetuneConfig", "finetune.epochs=1")
@click.option("--overwrite", is_flag=True, help="Replace a finished fine-tuning in --out (finetune.json/md, predictions).")
@click.pass_context
def finetune_cmd(ctx, model_dir, task_data, out, overrides, overwrite, **settings):
    """Fine-tune MODEL_DIR on (Super)GLUE tasks with the BabyLM 2025 pipeline's recipe (eval_finetuning.sh) and
    write its predictions.json per task, finetune.md and finetune.json."""
    from bbl.finetune.data import FINETUNE_TASKS
    from bbl.finetune.recipe import FinetuneConfig
    from bbl.finetune.run import run_finetune
    from bbl.runtime import check_device

    settings["tasks"] = [t.strip() for spec in settings["tasks"] for t in spec.split(",") if t.strip()]
    s = apply_sets(ctx, settings, overrides, "finetune", FinetuneConfig)
    names = [n for t in s["tasks"] for n in (FINETUNE_TASKS if t == "all" else (t,))]
    with as_usage_error():
        config = FinetuneConfig(**{**s, "tasks": list(dict.fromkeys(names)), "device": check_device(s["device"])})
    run_finetune(model_dir, config, data_dir=task_data or default_data("glue_filtered"), out=out, overwrite=overwrite,
                 log=click.echo)
    click.echo((Path(out) / "finetune.md").read_text())
    click.echo(f"wrote finetune.md, finetune.json and pipeline/ predictions to {out}")


@main.command("study")
@click.argument("config")
@click.option("--data", type=PathArg, required=True, help="Prepared dir from `bbl prepare` (the teachers' and cache's).")
@click.option("--workdir", type=PathArg, required=True, help="Where runs, evals and study.md/json/curves.png go.")
@click.option("--cache", "cache_path", type=CacheArg, default=None,
              help="Logit cache (path or fsspec URL): adds the `cached` arm.")
@click.option("--teacher", "teachers", type=PathArg, multiple=True,
              help="The cache's teachers: adds the `online` arm (teachers resident) and their BLiMP rows.")
@click.option("--seeds", type=Positive, default=3, show_default=True, help="Seeds 0..N-1, run for every arm.")
@click.option("--arm", "arm_specs", multiple=True, metavar="NAME:OPTIONS",
              help="An extra arm: --set SECTION.KEY=VALUE, --cache PATH, --online or --baseline; a cached distill "
                   "unless said otherwise, e.g. --arm 'renorm:--set distill.kd_variant=topk_renorm' (repeatable).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override for every arm.")
@click.option("--blimp-dir", type=PathArg, default=None, help="BLiMP *.jsonl dir (default: ../shared/data/...).")
@click.option("--supplement-dir", type=PathArg, default=None, help="Supplement *.jsonl dir.")
@click.option("--max-pairs", type=Positive, default=None,
              help="Score only the first N pairs per file (tests; a reported study scores every pair).")
@click.option("--tasks", default="blimp,supplement", show_default=True,
              help="Zero-shot tasks every model is scored on (`bbl eval --tasks`): blimp and supplement, plus any of "
                   "ewok, entity_tracking, wug_adj, reading ('zero-shot' = all six), shown in a second table.")
@click.option("--task-data", "task_data", multiple=True, metavar="TASK=PATH",
              help="Data of ewok, entity_tracking, wug_adj or reading, passed to `bbl eval` (default: "
                   "../shared/data/<the pipeline's full_eval dir name>; repeatable).")
@click.option("--jobs", type=Positive, default=1, show_default=True,
              help="Runs at once, the CPUs split between them (one GPU each when there are several). Small students "
                   "use 2 threads poorly: on a 2-core CPU, --jobs 2 finishes a study sooner. Results do not change.")
def study_cmd(config, data, workdir, cache_path, teachers, seeds, arm_specs, overrides, blimp_dir, supplement_dir,
              max_pairs, tasks, task_data, jobs):
    """Train the student arms over several seeds and report them side by side with paired 95% intervals.

    Arms: baseline (plain CE), cached (with --cache), online (with --teacher) and every --arm. Seed s is the same
    init and window order in every arm. Writes WORKDIR/study.md, study.json, curves.png; re-run to resume.
    """
    from bbl.study.report import study_table, tasks_table
    from bbl.study.run import run_study

    names = _task_names(tasks)
    study = run_study(config, data, workdir, cache=cache_path, teachers=teachers, seeds=seeds, arm_specs=arm_specs,
                      overrides=overrides, blimp_dir=blimp_dir or default_data("blimp_filtered"),
                      supplement_dir=supplement_dir or default_data("supplement_filtered"), max_pairs=max_pairs,
                      tasks=names, task_data=_task_data(task_data, "full", names), jobs=jobs, log=click.echo)
    click.echo(study_table(study) + tasks_table(study))


@main.command("sweep")
@click.argument("config")
@click.option("--data", type=PathArg, required=True, help="Prepared dir from `bbl prepare`.")
@click.option("--space", type=PathArg, required=True,
              help="YAML search space: SECTION.KEY: {type: loguniform|uniform|int|choice, low, high | choices}.")
@click.option("--trials", type=Positive, required=True,
              help="Stop when the study holds this many finished (complete or pruned) trials, all workers together.")
@click.option("--workdir", type=PathArg, required=True,
              help="Trial runs, sweep.db, trials.json/md, best.yaml, history.png, importance.png.")
@click.option("--cache", "cache_path", type=CacheArg, default=None, help="Distil every trial from this cache.")
@click.option("--teacher", "teachers", type=PathArg, multiple=True, help="Distil online from these teachers.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override for every trial.")
@click.option("--storage", default=None,
              help="SQLAlchemy URL of the study, shared by workers on several machines (default: "
                   "sqlite:///WORKDIR/sweep.db).")
@click.option("--study-name", default="bbl-sweep", show_default=True, help="The study's name in the storage.")
@click.option("--pruner", default="hyperband", show_default=True,
              help="hyperband, median, none, or threshold:NATS (prune a trial whose dev CE passes NATS).")
@click.option("--sampler-seed", "seed", type=Seed, default=None,
              help="TPE sampler seed (default: random). Was --seed (deprecated; --seed is a run's training seed).")
@click.option("--heartbeat", "heartbeat_s", type=Positive, default=10, show_default=True,
              help="Seconds between trial heartbeats; a trial silent for twice this long (killed) is retried once.")
def sweep_cmd(config, data, space, trials, workdir, cache_path, teachers, overrides, storage, study_name, pruner,
              seed, heartbeat_s):
    """Search hyperparameters of a training (teacher, baseline or distilled student) on Optuna, minimising the
    best dev CE with pruning of poor trials.

    Resumable: re-run the same command. Run it in several processes (or machines, with one --storage) to share
    the study. Without --cache or --teacher each trial is plain training; with them, distillation.
    """
    from bbl.study.sweep import SweepConfig, run_sweep

    with as_usage_error():
        sweep = SweepConfig(config=config, data_dir=data, space=space, trials=trials, workdir=workdir,
                            overrides=list(overrides), cache=cache_path, teachers=list(teachers), storage=storage,
                            study_name=study_name, pruner=pruner, seed=seed, heartbeat_s=heartbeat_s)
    run_sweep(sweep, log=click.echo)


def _preset_option() -> list[click.Option]:
    from bbl.pipeline import (
        pipeline_preset_names,  # reads the presets: only when pipeline parses or shows help
    )

    return [click.Option(["--preset"], type=click.Choice(pipeline_preset_names()), default="cpu", show_default=True,
                         help="tiny: seconds (tests); cpu: <= 15 min on 2 cores; cpu-study: the paper's comparison "
                              "over 3 seeds on 2 cores (`bbl study`); paper: the paper's models (GPU); babyllama2: "
                              "BabyLlama-2's 345M teachers and student (GPU), with its data handling: a 5% selection "
                              "split of the train words chooses checkpoints (prepare --selection-fraction 0.05), and "
                              "teachers and baseline train on random-offset windows (training.window_offset=random; "
                              "the cached student reads the cache's fixed windows). The other presets use neither.")]


@main.command("pipeline", late_options=_preset_option)
@click.option("--corpus", type=PathArg, required=True,
              help="BabyLM dir holding babylm_10M/ and babylm_dev/ (raw text; `bbl prepare` runs on it). Was --data "
                   "(deprecated; --data is a prepared dir in every command).")
@click.option("--workdir", type=PathArg, required=True, help="Where every stage writes (e.g. runs/demo).")
@click.option("--blimp-dir", type=PathArg, default=None, help="BLiMP *.jsonl dir (default: CORPUS/blimp_filtered).")
@click.option("--supplement-dir", type=PathArg, default=None,
              help="Supplement *.jsonl dir (default: CORPUS/supplement_filtered).")
@click.option("--nproc", type=Positive, default=1, show_default=True, help="Processes per training/dump stage (torchrun).")
@click.option("--until", default=None, help="Stop after this stage (prepare, teacher-gpt2, ..., eval).")
@click.option("--task-data", "task_data", multiple=True, metavar="TASK=PATH",
              help="Data of a task the preset's eval_tasks adds (ewok, entity_tracking, wug_adj, reading); default: "
                   "CORPUS/<the pipeline's full_eval dir name> (repeatable).")
def pipeline_cmd(preset, corpus, workdir, blimp_dir, supplement_dir, nproc, until, task_data):
    """Run the whole experiment: prepare, teachers, dump, distill, baseline, eval. Resumable."""
    from bbl.pipeline import run_pipeline

    run_pipeline(preset, corpus, workdir, until=until, nproc=nproc, blimp_dir=blimp_dir, supplement_dir=supplement_dir,
                 task_data=_task_data(task_data, "full", ()), log=click.echo)


main.add_command(cache)
main.add_command(export_cmd)
main.add_command(fix_tokenizer_cmd)
