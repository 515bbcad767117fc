"""`bbl eval`: the BabyLM 2025 zero-shot suite (BLiMP, the supplement, EWoK, entity tracking, WUG, reading; full
or fast) and dev perplexity for HF causal-LM dirs and logit-mean ensembles.

Settings are an `EvalConfig`. Writes one JSON per model (all numbers, path, parameters, data hashes), the per-item
predictions in the pipeline's layout under `pipeline/` (`bbl.evaluate.predictions`), then `results.md`,
`blimp.png` and, last, `results.json` (`bbl.evaluate.report`) into the output dir: a dir with `results.json`
holds a finished evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from bbl.data.prepared import PreparedData
from bbl.data.tokenizer import check_same_tokenizer, tokenizer_fingerprint
from bbl.data.windows import select_dev_windows
from bbl.errors import BblError, check_options_at_least_one
from bbl.evaluate.predictions import check_revision, predictions_dir, write_predictions
from bbl.evaluate.report import write_report
from bbl.evaluate.suite import PAIR_SCORINGS, check_task_data, score_task
from bbl.evaluate.tasks import SUITES, ZERO_SHOT
from bbl.io import atomic_write_json, load_json
from bbl.models.build import check_model_dir, count_parameters, load_causal_lm
from bbl.models.ensemble import ensemble_logits
from bbl.outputs import claim_output
from bbl.train.ledger import CHECKPOINT_DIR

TASKS = (*ZERO_SHOT, "perplexity")
"""Every task `bbl eval` scores."""
DEFAULT_TASKS = ("blimp", "supplement", "perplexity")
"""`bbl eval`'s tasks when none are named."""
PIPELINE_DIR = "pipeline"
"""The output dir's folder holding the per-item predictions in the pipeline's layout (its `results/`)."""


@dataclass
class EvalConfig:
    """The settings of `bbl eval`."""

    tasks: list[str] | None = None
    """Tasks to score, among `TASKS`; None: the six zero-shot tasks when `suite` is given (a BabyLM submission),
    else `DEFAULT_TASKS`."""
    blimp_dir: Path | None = None
    """Dir of the BLiMP *.jsonl files (the BabyLM pipeline's blimp_filtered or blimp_fast)."""
    supplement_dir: Path | None = None
    """Dir of the BabyLM supplement *.jsonl files (supplement_filtered or supplement_fast)."""
    data_dirs: dict[str, Path] = field(default_factory=dict)
    """The data of the other zero-shot tasks: {task: dir, zip (EWoK) or CSV (reading)}."""
    suite: str | None = None
    """Which data the defaults name: `full` (the pipeline's full_eval) or `fast` (its fast_eval subsets); recorded
    in the results. Naming one asks for the BabyLM suite (see `babylm`); None: `full`, not asked."""
    pair_scoring: str | None = None
    """How BLiMP and the supplement are scored, among `bbl.evaluate.suite.PAIR_SCORINGS`: `bos` (lm-eval's way, as
    bbl always has) or `pipeline` (the BabyLM 2025 pipeline's, with their predictions.json). None: `pipeline` when
    the BabyLM suite is asked (`babylm`), else `bos`. Every other task is scored the pipeline's way."""
    fallbacks: dict[str, str] = field(default_factory=dict)
    """{task: the data dir `suite` names}, for each task whose data is the other suite's since that dir is missing
    (`bbl.evaluate.tasks.resolve_task_data`); marked in the results (`fallback`) and results.md."""
    revision: str = "main"
    """The pipeline's `--revision_name`: predictions go to `pipeline/<model>/<revision>/` (a checkpoint: chck_{N}M)."""
    batch_size: int = 64
    """Sentences per forward pass (dev windows: at most 32)."""
    max_pairs: int | None = None
    """Score only the first N pairs of each task file (tests and demos); None = every pair."""
    seq_len: int = 128
    """Dev window length for perplexity (the trainers' training.seq_len)."""
    dev_windows: int = 8192
    """Dev subset size (the trainers' training.dev_windows)."""
    data_seed: int = 0
    """The runs' data seed: the dev subset is `select_dev_windows(..., seed=data_seed)`, as in training."""
    device: str = "cpu"

    babylm: bool = field(init=False, default=False)
    """Whether the BabyLM suite is asked: a `suite` named, or `tasks` naming a zero-shot task beyond BLiMP and the
    supplement. Then the pipeline's scoring is the default and every task writes its predictions.json."""

    def __post_init__(self):
        self.babylm = self.suite is not None or any(t in ZERO_SHOT and t not in ("blimp", "supplement")
                                                    for t in self.tasks or ())
        if self.tasks is None:
            self.tasks = list(ZERO_SHOT) if self.suite is not None else list(DEFAULT_TASKS)
        self.suite = self.suite or "full"
        if self.pair_scoring is None:
            self.pair_scoring = "pipeline" if self.babylm else "bos"
        check_revision(self.revision)
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise BblError(f"--tasks: unknown task(s) {', '.join(bad)}; use {', '.join(TASKS)}")
        bad = [t for t in self.data_dirs if t not in ZERO_SHOT or t in ("blimp", "supplement")]
        if bad:
            raise BblError(f"--task-data {bad[0]}=...: not a task with its own data; use one of "
                           f"{', '.join(t for t in ZERO_SHOT if t not in ('blimp', 'supplement'))} "
                           "(BLiMP and the supplement: --blimp-dir, --supplement-dir)")
        if self.suite not in SUITES:
            raise BblError(f"--suite {self.suite}: use one of {', '.join(SUITES)}")
        if self.pair_scoring not in PAIR_SCORINGS:
            raise BblError(f"--pair-scoring {self.pair_scoring}: use one of {', '.join(PAIR_SCORINGS)}")
        check_options_at_least_one(self, ("batch_size", "seq_len", "dev_windows", "max_pairs"))


    def task_path(self, task: str) -> Path | None:
        """The data of a zero-shot task: --blimp-dir / --supplement-dir for those two, else `data_dirs`."""
        return {"blimp": self.blimp_dir, "supplement": self.supplement_dir}.get(task, self.data_dirs.get(task))


def load_model(model_dir: Path, device: str):
    """(model in eval mode, HF tokenizer, info) for a model dir.

    Raises:
        BblError: not a model dir, or no tokenizer saved with it.
    """
    from transformers import AutoTokenizer

    d = Path(model_dir)
    check_model_dir(d)
    fingerprint = tokenizer_fingerprint(d)  # reads tokenizer.json: a damaged one is named before transformers
    model = load_causal_lm(d).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(d))
    run = load_json(d / "bbl_run.json", fix=f"re-train {d}, or delete its bbl_run.json (eval reads its ledger only)") or {}
    info = {"path": str(d.resolve()), "parameters": count_parameters(model), "architecture": model.config.model_type,
            "tokenizer_fingerprint": fingerprint, "ledger": run.get("ledger")}
    return model, tokenizer, info


def dev_perplexity(models, data: PreparedData, *, seq_len: int = 128, dev_windows: int = 8192, seed: int = 0,
                   batch_size: int = 32, device: str = "cpu") -> dict:
    """Mean token CE (nats) and perplexity on the fixed dev subset the trainers evaluate on (`select_dev_windows`
    with the runs' data seed), and bits per byte of the scored text.

    Bits per byte (the BabyLM / lm-evaluation-harness convention, `bits_per_byte` = total NLL in nats / ln 2 /
    total UTF-8 bytes of the scored text) compares models with different tokenizers on one scale. The scored text
    of a window is what its tokens 2..S cover in the cleaned dev text (the first token is context, never
    predicted), from the prepared dir's token offsets (`bbl.data.offsets.scored_bytes`); a dir prepared without
    offsets gets a `bits_per_byte_note` instead, naming the upgrade.

    Returns:
        {mean_ce (nats/token), perplexity, windows, tokens, bits_per_byte, bytes} (or bits_per_byte_note).
    """
    import torch

    from bbl.data.offsets import scored_bytes

    windows = select_dev_windows(data.stream("dev"), seq_len, dev_windows, seed=seed)
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            ids = torch.stack([torch.from_numpy(windows.window(i)) for i in
                               range(start, min(start + batch_size, len(windows)))]).to(device)
            logits = ensemble_logits(models, ids, torch.ones_like(ids), vocab_size=data.vocab_size)[:, :-1]
            ce = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                   ids[:, 1:].reshape(-1), reduction="sum")
            total, count = total + float(ce), count + ids[:, 1:].numel()
    mean = total / max(count, 1)
    out = {"mean_ce": mean, "perplexity": math.exp(mean), "windows": len(windows), "tokens": count}
    if data.has_offsets("dev"):
        offsets = data.offsets("dev")
        nbytes = sum(scored_bytes(offsets, int(w) * seq_len, (int(w) + 1) * seq_len) for w in windows.indices)
        out.update(bytes=nbytes, bits_per_byte=total / math.log(2) / max(nbytes, 1))
    else:
        out["bits_per_byte_note"] = (f"{data.path} records no token offsets; re-run `bbl prepare` with the same "
                                     f"arguments and --out {data.path} to report bits per byte")
    return out


def evaluate_models(models, tokenizer, config: EvalConfig, *, data: PreparedData | None = None,
                    progress: bool = True, predictions_to: Path | None = None) -> dict:
    """Every task of `config` for one model (or ensemble, a list of several); returns {task: its results}.

    Args:
        predictions_to: the model's folder in the pipeline's layout (`<out>/pipeline/<model>`); each task scored
            the pipeline's way writes its `predictions.json` under its `config.revision`, its path relative to
            `<out>` recorded as the task's `predictions`. None: write nothing.
    Raises:
        BblError: perplexity asked without prepared data; bad task files.
    """
    out: dict = {}
    for task in (t for t in ZERO_SHOT if t in config.tasks):
        result, predictions = score_task(task, models, tokenizer, config.task_path(task),
                                         scoring=config.pair_scoring, max_items=config.max_pairs,
                                         batch_size=config.batch_size, device=config.device, progress=progress,
                                         suite=config.suite)
        result["suite"] = config.suite
        if task in config.fallbacks:
            result["fallback"] = config.fallbacks[task]
        if predictions is not None and predictions_to is not None:
            written = write_predictions(predictions_dir(predictions_to.parent, predictions_to.name,
                                                        result["pipeline_task"], result["dataset"],
                                                        revision=config.revision), predictions)
            result["predictions"] = str(written.relative_to(predictions_to.parent.parent))
        out[task] = result
    if "perplexity" in config.tasks:
        if data is None:
            raise BblError("--tasks perplexity needs --data PREPARED_DIR (the dev windows to score)")
        out["perplexity"] = dev_perplexity(models, data, seq_len=config.seq_len, dev_windows=config.dev_windows,
                                           seed=config.data_seed, batch_size=min(config.batch_size, 32),
                                           device=config.device)
    return out


def run_eval(model_dirs: list[Path], *, ensembles: list[list[Path]] = (), config: EvalConfig | None = None,
             data_dir=None, out: Path, overwrite: bool = False, progress: bool = True, log=print) -> list[dict]:
    """`_run_eval` into `out` once it is claimed (`bbl.outputs`): new, empty or a results dir (a killed
    evaluation's per-model JSONs included: a re-run continues it); a finished evaluation (results.json) is replaced
    only with `overwrite` (the files earlier evaluations wrote, as the dir's manifest lists them); one writer at a
    time.

    Raises:
        BblError: an --out that is a file, under a file, not a results dir, unwritable or held by another run; a
            finished evaluation without --overwrite; and `_run_eval`'s errors.
    """
    with claim_output(out, "eval", overwrite=overwrite, log=log):
        return _run_eval(model_dirs, ensembles=ensembles, config=config, data_dir=data_dir, out=out,
                         progress=progress, log=log)


def _run_eval(model_dirs: list[Path], *, ensembles: list[list[Path]] = (), config: EvalConfig | None = None,
              data_dir=None, out: Path, progress: bool = True, log=print) -> list[dict]:
    """Evaluate models and ensembles, write JSON per model and the pipeline-layout predictions under
    `out/pipeline/<model>/`, then `results.md`, `blimp.png` and `results.json`; returns the results.

    Raises:
        BblError: missing or bad task data, bad model dirs, ensemble members with different tokenizers, a model
            whose tokenizer is not --data's when perplexity is asked (all checked before anything is written).
    """
    config = config or EvalConfig()
    jobs = job_names([[Path(d)] for d in model_dirs] + [[Path(m) for m in members] for members in ensembles],
                     revision=config.revision)
    for d in dict.fromkeys(m for members, _ in jobs for m in members):
        check_model_dir(d, seq_len=config.seq_len if "perplexity" in config.tasks else None)
    for members, name in jobs:
        if len({tokenizer_fingerprint(m) for m in members}) > 1:
            raise BblError(f"--ensemble {','.join(map(str, members))}: members use different tokenizers "
                           f"({name}); ensemble models of one tokenizer")
    data = PreparedData(data_dir) if data_dir else None
    if "perplexity" in config.tasks and data is None:
        raise BblError("--tasks perplexity needs --data PREPARED_DIR (the dev windows to score)")
    if "perplexity" in config.tasks:  # the dev windows are token ids of --data's tokenizer: only its models read them
        for members, _ in jobs:
            check_same_tokenizer(tokenizer_fingerprint(members[0]), data.tokenizer_fingerprint(),
                                 subject=f"{members[0]}: model", reference=f"--data {data.path}'s",
                                 fix="pass the --data prepared with the model's tokenizer, or leave perplexity out of "
                                     "--tasks (compare models of other tokenizers by bits per byte, each on its own "
                                     "prepared dir)")
    for task in (t for t in ZERO_SHOT if t in config.tasks):
        check_task_data(task, config.task_path(task), scoring=config.pair_scoring)
    loaded: dict[str, tuple] = {}  # every model (ensemble members too) loads before anything is scored or written
    for d in (m for members, _ in jobs for m in members):
        if str(d.resolve()) not in loaded:
            loaded[str(d.resolve())] = load_model(d, config.device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)  # the marker of a finished evaluation, written last
    results = []
    for members, name in jobs:
        parts = [loaded[str(m.resolve())] for m in members]
        log(f"eval {name}")
        r = evaluate_models([p[0] for p in parts], parts[0][1], config, data=data, progress=progress,
                            predictions_to=out / PIPELINE_DIR / _pipeline_name(name, members, config.revision))
        for task, result in r.items():
            if result.get("truncated"):
                log(f"warning: {name} {task}: {result['truncated']} item(s) longer than the model's learned position "
                    "table scored on their last tokens (the pipeline cannot score them; marked truncated in "
                    "results.md and predictions.json)")
        record = {"model": name, "paths": [p[2]["path"] for p in parts],
                  "parameters": sum(p[2]["parameters"] for p in parts), "ensemble": len(parts) > 1,
                  "tokenizer_fingerprint": parts[0][2]["tokenizer_fingerprint"],
                  "dev_stream_sha256": data.stream_sha256("dev") if data else None, "tasks": r,
                  **budget_of([p[2].get("ledger") for p in parts])}
        atomic_write_json(out / f"{_safe(name)}.json", record)
        results.append(record)
    write_report(results, out)
    return results


def budget_of(ledgers: list[dict | None]) -> dict:
    """words_seen and words_seen_with_teachers of a model (an ensemble: the sum over its members), None where a
    member has no ledger (not trained by bbl, or before bbl counted words)."""

    def total(key):
        values = [(led or {}).get(key) for led in ledgers]
        return None if any(v is None for v in values) else int(sum(values))

    with_teachers = [(led or {}).get("words_seen_with_teachers", (led or {}).get("words_seen")) for led in ledgers]
    return {"words_seen": total("words_seen"),
            "words_seen_with_teachers": None if any(v is None for v in with_teachers) else int(sum(with_teachers))}


def job_names(jobs: list[list[Path]], *, revision: str = "main") -> list[tuple[list[Path], str]]:
    """(members, name) of each model (one member: its dir's name) and ensemble ("ensemble(a+b)") of one `bbl eval`.

    Raises:
        BblError: two jobs with one name: their `<name>.json` and predictions would overwrite each other (one JSON
            per name, one column per name in results.md), so they are refused rather than renamed, which would
            change the names a study or a script reads; or a model dir passed twice.
    """
    def dir_name(d: Path) -> str:
        return d.name or d.resolve().name  # `bbl eval .` is named after the working dir

    named = [(members, dir_name(members[0]) if len(members) == 1 else
              "ensemble(" + "+".join(map(dir_name, members)) + ")") for members in jobs]
    seen: dict[tuple[str, str], list[Path]] = {}
    for members, name in named:
        for key in (("json", _safe(name)), ("pipeline", _pipeline_name(name, members, revision))):
            other = seen.setdefault(key, members)
            if other is members:
                continue
            if [m.resolve() for m in other] == [m.resolve() for m in members]:
                raise BblError(f"{','.join(map(str, members))}: passed twice; evaluate each model (or ensemble) once")
            raise BblError(f"{','.join(map(str, other))} and {','.join(map(str, members))}: both named {name}, so "
                           f"one's results would overwrite the other's; give the dirs distinct names (a symlink "
                           f"will do) or evaluate them into separate --out dirs")
    return named


def _pipeline_name(name: str, members: list[Path], revision: str = "main") -> str:
    """The model's folder in the pipeline's layout (`<out>/pipeline/<name>/<revision>`): a bbl word checkpoint
    (`RUN/word_checkpoints/chck_*`) scored as a revision other than main is filed under its run's name, as the
    pipeline files a Hub model's revisions under the model (`collate_preds.py --fast` reads
    `<model>/chck_{N}M/`)."""
    if len(members) == 1 and revision != "main" and members[0].resolve().parent.name == CHECKPOINT_DIR:
        return _safe(members[0].resolve().parent.parent.name)
    return _safe(Path(name).stem if len(members) == 1 else name)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
