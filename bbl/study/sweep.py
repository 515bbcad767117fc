"""`bbl sweep`: a hyperparameter search over any bbl training (teacher, baseline or distilled student, cached or
online) minimising its best dev CE, on Optuna (TPE sampler; Hyperband, median or threshold pruning fed by each
evaluation's dev loss; RDB storage). "Dev" is the run's eval split: the selection split when the prepared dir holds
one (`bbl prepare --selection-fraction`, BabyLlama-2's way: never tuned on the BabyLM dev set), else dev.

BabyLlama-2 (Tastet & Timiryasov 2024, Section 3) tuned its teachers and baselines by a Bayesian search with
hyperband early stopping on eval loss; this is that search for bbl runs. A study lives in a database (SQLite by
default, WORKDIR/sweep.db; any SQLAlchemy URL for several machines): a killed sweep re-run with the same command
continues it (a trial the kill interrupted is failed by Optuna's heartbeat and retried once with its settings, from
its last complete checkpoint: `_fail_dead_trials`, `_objective`), and several worker processes given the same
`--storage` share one study. Each trial is an in-process training run in
WORKDIR/trials/NNNN. Outputs (rewritten by each worker when it stops): trials.json and trials.md (every trial),
best.yaml (the config with the best settings, for train-teacher / train-student / distill / study), history.png
and importance.png. The search space is YAML: `SECTION.KEY: {type: loguniform|uniform|int|choice, ...}`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from bbl.config import SECTIONS, Config, load_config
from bbl.errors import BblError, UsageError
from bbl.io import atomic_save_figure, atomic_write_json, atomic_write_text, parse_yaml
from bbl.outputs import check_output, make_output_dir

SPACE_TYPES = ("loguniform", "uniform", "int", "choice")
CHOICE_TYPES = (str, int, float, bool, type(None))
"""What a choice may be: the values Optuna's categorical distribution stores."""
PRUNERS = ("hyperband", "median", "none")
STORE_FILE = "sweep.db"


@dataclass(frozen=True)
class Param:
    """One searched setting: `key` is SECTION.KEY of the run's config."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()
    log: bool = False

    def suggest(self, trial):
        """Optuna's suggestion for this setting (its `suggest_*` by type)."""
        if self.type == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.type == "loguniform")


def load_space(path: Path) -> list[Param]:
    """The search space of a YAML file: {SECTION.KEY: {type, low, high} | {type: choice, choices: [...]}}.

    Raises:
        BblError: a missing file, a key that is not a config field, an unknown type, bad bounds (names the key).
    """
    path = Path(path)
    if not path.is_file():
        raise BblError(f"--space {path}: file not found; pass a YAML of SECTION.KEY: {{type, low, high}} entries")
    raw = parse_yaml(path.read_bytes(), str(path)) or {}
    if not isinstance(raw, dict) or not raw:
        raise BblError(f"{path}: no settings to search; write SECTION.KEY: {{type: loguniform, low: 1e-4, high: 1e-2}}")
    params = []
    for key, spec in raw.items():
        section, _, field = str(key).partition(".")
        if section not in SECTIONS or field not in typing.get_type_hints(SECTIONS[section]):
            raise BblError(f"{path}: {key} is not a config key; use SECTION.KEY with SECTION in {', '.join(SECTIONS)}")
        if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
            raise BblError(f"{path}: {key}: give type: one of {', '.join(SPACE_TYPES)}")
        kind = spec["type"]
        hint = typing.get_type_hints(SECTIONS[section])[field]
        if kind in ("uniform", "loguniform") and float not in (typing.get_args(hint) or (hint,)):
            raise BblError(f"{path}: {key}: a {kind} range draws real numbers, which {key} does not take; use "
                           f"type: int (a whole-number setting) or type: choice")
        if kind == "choice":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise BblError(f"{path}: {key}: a choice needs choices: [A, B, ...]")
            odd = [c for c in choices if not isinstance(c, CHOICE_TYPES)
                   or (isinstance(c, float) and not math.isfinite(c))]
            if odd:  # Optuna stores a categorical's values as they are: numbers, strings, booleans or null
                raise BblError(f"{path}: {key}: choice {odd[0]!r} is not a finite number, a string, true/false or "
                               f"null; write a comma-separated string for a list setting")
            if len(set(choices)) != len(choices):
                raise BblError(f"{path}: {key}: choices {choices} repeat a value; list each once")
            params.append(Param(str(key), kind, choices=tuple(choices)))
            continue
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise BblError(f"{path}: {key}: a {kind} range needs numeric low and high") from None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise BblError(f"{path}: {key}: low {spec['low']} and high {spec['high']} must be finite numbers")
        if not low < high or (kind == "loguniform" and low <= 0):
            raise BblError(f"{path}: {key}: need low < high{' and low > 0' if kind == 'loguniform' else ''}")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise BblError(f"{path}: {key}: log {log!r}: use true or false")
        if kind == "int":
            if low != int(low) or high != int(high):
                raise BblError(f"{path}: {key}: an int range needs whole low and high")
            if log and low < 1:
                raise BblError(f"{path}: {key}: an int range with log: true needs low >= 1")
            low, high = int(low), int(high)
        params.append(Param(str(key), kind, low, high, log=log))
    return params


def check_space(sweep: SweepConfig, params: list[Param]) -> None:
    """Refuse a space value no trial could run with, before the study is created (a study records its space: one
    created from a broken space would refuse the corrected one): each choice, and each range's low and high, as a
    trial would set it on the sweep's config and `--set` values, the other settings at their first value.

    Raises:
        BblError: naming the space file, the key and the value, then the config's own complaint.
    """
    trial_config(sweep, {})  # the sweep's config and --set values alone: their own error
    first = {p.key: p.choices[0] if p.type == "choice" else p.low for p in params}
    for p in params:
        for value in p.choices if p.type == "choice" else (p.low, p.high):
            try:
                trial_config(sweep, {**first, p.key: value})
            except BblError as e:  # the config names the value as the --set a trial passes; the user wrote no --set
                reason = str(e).removeprefix(f"--set {f'{p.key}={_yaml(value)}'!r}: ")
                raise BblError(f"{sweep.space}: {p.key}: {value!r} is no valid value ({reason})") from None


def make_pruner(spec: str):
    """An Optuna pruner: hyperband (the paper's), median, none, or threshold:X (prune a trial whose dev CE
    passes X nats at any evaluation).

    Raises:
        UsageError: an unknown spec (or a threshold that is not a finite number).
    """
    import optuna

    if spec == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if spec == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2)
    if spec == "none":
        return optuna.pruners.NopPruner()
    if spec.startswith("threshold:"):
        try:
            upper = float(spec.split(":", 1)[1])
            if math.isfinite(upper):
                return optuna.pruners.ThresholdPruner(upper=upper)
        except ValueError:
            pass
    raise UsageError(f"--pruner {spec!r}: use {', '.join(PRUNERS)} or threshold:NATS")


@dataclass
class SweepConfig:
    """The settings of `bbl sweep`."""

    config: str
    """The run's config: a preset name or YAML path (its values are the defaults the space overrides)."""
    data_dir: Path
    space: Path
    trials: int
    """Finished (complete or pruned) trials the study stops at, all workers together."""
    workdir: Path
    overrides: list[str] = dataclasses.field(default_factory=list)
    """`--set` overrides applied to every trial before the searched values."""
    cache: str | Path | None = None
    """Distil every trial from this cache; with `teachers` and no cache, online; neither: plain training."""
    teachers: list[Path] = dataclasses.field(default_factory=list)
    storage: str | None = None
    """An SQLAlchemy URL shared by the workers; None = sqlite:///WORKDIR/sweep.db."""
    study_name: str = "bbl-sweep"
    pruner: str = "hyperband"
    seed: int | None = None
    """The TPE sampler's seed (None: random; give each worker its own when fixing it). A re-run continuing the
    study draws from a seed derived from this one and the trials already there (`sampler_seed`)."""
    heartbeat_s: int = 10
    """Optuna's trial heartbeat: a trial silent for 2x this long (its worker was killed) is failed and retried."""

    def __post_init__(self):
        if self.trials < 1:
            raise BblError(f"--trials {self.trials} must be >= 1")
        if self.heartbeat_s < 1:
            raise BblError(f"--heartbeat {self.heartbeat_s} must be >= 1 second")
        if self.cache is not None and self.teachers:
            raise BblError("pass --cache (cached distillation) or --teacher ... (online), not both")

    @property
    def mode(self) -> str:
        return "cached" if self.cache is not None else ("online" if self.teachers else "plain")


def trial_config(sweep: SweepConfig, values: dict) -> Config:
    """The run config of one trial: the sweep's config and overrides, then the searched `values`."""
    return load_config(sweep.config, [*sweep.overrides, *(f"{k}={_yaml(v)}" for k, v in values.items())])


def _yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def sampler_seed(seed: int | None, trials: int) -> int | None:
    """The TPE sampler's seed for a worker that finds `trials` trials (any state) in the study: `seed` itself in a
    new study, else one derived from (seed, trials) by numpy's `SeedSequence`; None stays None (random).

    Why: a sampler seeded alike proposes alike. TPE's first `n_startup_trials` (10) proposals are random draws
    from its seeded generator, so a sweep restarted after a kill with the same `--sampler-seed` re-proposed the
    settings of the trials it had already run (5 finished trials held 3 distinct settings). Deriving the seed keeps a sweep
    reproducible (the same command over the same study makes the same proposals) without repeating a finished
    trial. Skipping duplicates instead would need a rule for spaces too small to avoid them and would still not
    continue the first run's stream of draws; a trial the kill interrupted is re-run on purpose, by its retry
    (`_fail_dead_trials`), not proposed again by the sampler.
    """
    if seed is None or trials == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, trials]).generate_state(1)[0])


def _open_study(sweep: SweepConfig, attempts: int = 5):
    """Create or load the study, its sampler seeded by `sampler_seed`. Workers started together on a new database
    race to create its tables (one loses with an IntegrityError / OperationalError from SQLAlchemy): the loser waits
    a moment and loads them. A trial whose heartbeat stops is failed and retried once (`_fail_dead_trials`), its
    reported dev losses carried to the retry (which resumes the dead trial's run)."""
    import optuna
    import sqlalchemy.exc

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat, plots: stable here
    for attempt in range(attempts):
        try:
            storage = optuna.storages.RDBStorage(
                sweep.storage or f"sqlite:///{Path(sweep.workdir).resolve() / STORE_FILE}",
                heartbeat_interval=sweep.heartbeat_s, grace_period=2 * sweep.heartbeat_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=1, inherit_intermediate_values=True))
            study = optuna.create_study(study_name=sweep.study_name, storage=storage, direction="minimize",
                                        pruner=make_pruner(sweep.pruner), load_if_exists=True)
            study.sampler = optuna.samplers.TPESampler(
                seed=sampler_seed(sweep.seed, len(study.get_trials(deepcopy=False))))
            return study
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as e:
            if attempt == attempts - 1:
                reason = str(getattr(e, "orig", None) or e).splitlines()[0]
                raise BblError(f"--storage {sweep.storage or 'sqlite in --workdir'}: cannot open the study's database "
                               f"({reason}); check the database is reachable and writable") from None
            time.sleep(0.5 * (attempt + 1))


def check_storage(url: str) -> None:
    """Refuse a `--storage` URL before anything is written: one SQLAlchemy cannot parse or has no driver for (a
    usage error), or a SQLite file in a place that is no directory or not writable.

    Raises:
        UsageError: a malformed URL or an unknown database kind.
        BblError: a SQLite database whose dir is missing or read-only.
    """
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(url)
        dialect = parsed.get_dialect()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"--storage {url}: not a database URL SQLAlchemy can open ({reason}); use e.g. "
                         f"sqlite:////abs/path/sweep.db or postgresql://user@host/db") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise BblError(f"--storage {url}: the {parsed.get_backend_name()} driver is not installed ({e}); install "
                       f"that module or use a sqlite:/// URL") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        try:
            usable = folder.is_dir() and os.access(folder, os.W_OK)
        except OSError:
            usable = False
        if not usable:
            raise BblError(f"--storage {url}: cannot write the database there ({folder} is not a writable "
                           f"directory); create it or choose another --storage")


def _finished(study) -> list:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


def _in_state(study, state: str) -> list:
    """The study's trials in `state` (an `optuna.trial.TrialState` name: RUNNING, WAITING, FAIL, ...)."""
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState[state],))


def _fail_dead_trials(study, log) -> list[int]:
    """Fail the running trials whose heartbeat stopped (their worker was killed: Optuna's `fail_stale_trials`),
    each queued again once with its settings as a waiting trial (`RetryHeartbeatStaleTrialCallback`); returns the
    numbers of those failed now. Optuna itself checks only when a worker starts a trial; bbl checks also when a
    sweep starts and when its budget is reached, so a trial killed near the end is still retried."""
    import optuna

    before = {t.number for t in _in_state(study, "FAIL")}
    optuna.storages.fail_stale_trials(study)
    failed = sorted({t.number for t in _in_state(study, "FAIL")} - before)
    retries = {optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t)[-1]: t.number
               for t in _in_state(study, "WAITING") if t.system_attrs.get("retry_history")}
    for number in failed:
        log(f"[sweep] trial {number}: its worker stopped (no heartbeat): failed"
            + (f"; retried as trial {retries[number]}" if number in retries else ""))
    return failed


def _await_running(study, sweep: SweepConfig, log) -> bool:
    """At the end of this worker's trials: wait, at most the heartbeat's grace period and one beat, until every
    trial another worker still has running is either failed as dead or shown alive (its heartbeat kept fresh;
    that worker writes the reports again when it stops). True when one was failed (its retry is waiting)."""
    running = [t.number for t in _in_state(study, "RUNNING")]
    if not running:
        return False
    wait = 3 * sweep.heartbeat_s
    log(f"[sweep] trial(s) {', '.join(map(str, running))} running elsewhere: up to {wait} s to tell a live worker "
        "from a killed one")
    failed, deadline = [], time.monotonic() + wait
    while time.monotonic() < deadline and not failed and _in_state(study, "RUNNING"):
        time.sleep(min(1.0, sweep.heartbeat_s / 2))
        failed = _fail_dead_trials(study, log)
    return bool(failed)


def run_sweep(sweep: SweepConfig, *, log=print) -> dict:
    """Run (or continue, or join) the study until it holds `sweep.trials` finished trials; write its reports.

    Returns the report dict (every trial, the best). Raises:
        BblError: a bad space, config, pruner or data dir (checked before anything is written); a workdir that is
            a file, under a file, or holds anything but a sweep (`bbl.outputs`; workers share a workdir, so it has
            no lock: the study's storage coordinates them).
    """
    check_output(sweep.workdir, "sweep", option="--workdir")
    try:
        import optuna
    except ImportError:
        raise BblError("bbl sweep needs Optuna: pip install 'bbl[sweep]'") from None

    from bbl.data.prepared import PreparedData

    make_pruner(sweep.pruner)
    params = load_space(sweep.space)
    if sweep.storage:
        check_storage(sweep.storage)
    PreparedData(sweep.data_dir)
    check_space(sweep, params)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sweep.storage:  # another machine's database: reached before this worker's workdir is created
        study = _open_study(sweep)
        workdir = make_output_dir(sweep.workdir, option="--workdir")
    else:
        workdir = make_output_dir(sweep.workdir, option="--workdir")
        study = _open_study(sweep)
    settings = {"config": sweep.config, "overrides": list(sweep.overrides), "space": [dataclasses.asdict(p) for p in
                                                                                         params],
                "mode": sweep.mode, "cache": None if sweep.cache is None else str(sweep.cache),
                "teachers": [str(t) for t in sweep.teachers]}
    settings = json.loads(json.dumps(settings))
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        study.set_user_attr("settings", settings)
    elif recorded != settings:
        changed = ", ".join(k for k in settings if settings[k] != recorded.get(k))
        raise BblError(f"study {sweep.study_name!r} in {sweep.storage or workdir / STORE_FILE} was started with other "
                       f"settings ({changed}); re-run its command, or pass another --study-name or --workdir")
    stop = optuna.study.MaxTrialsCallback(sweep.trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.PRUNED))
    _fail_dead_trials(study, log)
    while True:  # until the budget is met, no retry waits, and no trial runs on a dead worker
        left, waiting = sweep.trials - len(_finished(study)), len(_in_state(study, "WAITING"))
        if left > 0:
            log(f"[sweep] {sweep.study_name}: {len(_finished(study))} of {sweep.trials} trials finished; running "
                "more")
            study.optimize(lambda trial: _objective(trial, sweep, params, log), callbacks=[stop], catch=())
        elif waiting:  # retries of killed trials found once the budget was met: run them too
            study.optimize(lambda trial: _objective(trial, sweep, params, log), n_trials=waiting, catch=())
        elif not _await_running(study, sweep, log):
            break
        _fail_dead_trials(study, log)
    report = write_sweep_report(study, sweep)
    best = report["best"]
    log(f"[sweep] best dev CE {best['value']:.4f} (trial {best['number']}): "
        + ", ".join(f"{k}={v}" for k, v in best["params"].items()) + f"; wrote {workdir / 'best.yaml'}"
        if best else "[sweep] no trial completed")
    return report


def _objective(trial, sweep: SweepConfig, params: list[Param], log) -> float:
    """One trial: train with the suggested settings, report each evaluation's dev CE to the pruner."""
    import optuna

    values = {p.key: p.suggest(trial) for p in params}
    cfg = trial_config(sweep, values)
    out = trial_dir(sweep, trial.number)
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    resume = bool(history) and trial_dir(sweep, history[-1]).is_dir() and not out.exists()
    if resume:  # a retry of a killed trial: continue its run (same settings) from its last complete checkpoint
        out.parent.mkdir(parents=True, exist_ok=True)
        trial_dir(sweep, history[-1]).rename(out)
    callback = _pruning_callback(trial, reported=frozen.intermediate_values)
    t0 = time.perf_counter()
    log(f"[sweep] trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in values.items())
        + (f" (retrying trial {history[-1]}, resumed from its checkpoints)" if resume else
           f" (retrying trial {history[-1]})" if history else ""))
    if sweep.mode == "plain":
        from bbl.train.recipe import train_lm

        train_lm(cfg, sweep.data_dir, out, kind="sweep_trial", resume=resume, callbacks=[callback],
                 log=lambda *_: None)
    else:
        from bbl.distill.recipe import distill

        distill(cfg, sweep.data_dir, out, cache_path=sweep.cache, teacher_dirs=list(sweep.teachers), resume=resume,
                callbacks=[callback], log=lambda *_: None)
    run = json.loads((out / "bbl_run.json").read_text())
    trial.set_user_attr("steps", run["global_step"])
    trial.set_user_attr("wall_s", round(time.perf_counter() - t0, 1))
    if callback.pruned:
        log(f"[sweep] trial {trial.number}: pruned at step {run['global_step']}")
        raise optuna.TrialPruned()
    log(f"[sweep] trial {trial.number}: best {run.get('eval_split', 'dev')} CE {run['best_eval_loss']:.4f}")
    return float(run["best_eval_loss"])


def trial_dir(sweep: SweepConfig, number: int) -> Path:
    """Where trial `number` of the sweep's study trains: WORKDIR/trials/STUDY/NNNN."""
    return Path(sweep.workdir) / "trials" / sweep.study_name / f"{number:04d}"


def _pruning_callback(trial, reported=()):
    """A TrainerCallback that reports each evaluation's dev CE to the trial and stops a run the pruner prunes;
    the steps in `reported` (a retry's, inherited from the killed trial) are not reported again."""
    from transformers import TrainerCallback

    class PruneOnDevLoss(TrainerCallback):
        def __init__(self):
            self.pruned, self.reported = False, set(reported)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            # the last step can be evaluated twice (every N steps and at the epoch's end): report it once
            if metrics and "eval_loss" in metrics and state.global_step not in self.reported:
                self.reported.add(state.global_step)
                trial.report(float(metrics["eval_loss"]), state.global_step)
                if trial.should_prune():
                    self.pruned = True
                    control.should_training_stop = True

    return PruneOnDevLoss()


def write_sweep_report(study, sweep: SweepConfig) -> dict:
    """trials.json, trials.md, best.yaml, history.png and importance.png in the sweep's workdir."""
    workdir = Path(sweep.workdir)
    rows = [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
             "steps": t.user_attrs.get("steps"), "wall_s": t.user_attrs.get("wall_s"),
             "intermediate": {int(k): v for k, v in t.intermediate_values.items()},
             "retry_of": (t.system_attrs.get("retry_history") or [None])[-1]}
            for t in study.get_trials(deepcopy=False)]
    complete = [r for r in rows if r["state"] == "complete"]
    best = min(complete, key=lambda r: r["value"]) if complete else None
    report = {"study": sweep.study_name, "config": sweep.config, "overrides": sweep.overrides, "mode": sweep.mode,
              "space": str(sweep.space), "pruner": sweep.pruner, "trials": rows, "best": best}
    if best is not None:
        trial_config(sweep, best["params"]).save(workdir / "best.yaml")
        _plots(study, workdir)
    atomic_write_text(workdir / "trials.md", sweep_table(report))
    atomic_write_json(workdir / "trials.json", report)
    return report


def sweep_table(report: dict) -> str:
    """Markdown: one row per trial (state, best dev CE, steps, wall, the settings), the best marked."""
    keys = sorted({k for r in report["trials"] for k in r["params"]})
    lines = [f"# bbl sweep {report['study']}: {report['config']} ({report['mode']}), pruner {report['pruner']}\n",
             "| trial | state | best dev CE | steps | wall (s) | " + " | ".join(keys) + " |",
             "|---:|---|---:|---:|---:|" + "---|" * len(keys)]
    best = (report["best"] or {}).get("number")
    for r in report["trials"]:
        value = "" if r["value"] is None else f"{r['value']:.4f}" + (" **best**" if r["number"] == best else "")
        cells = [_cell(r["params"].get(k)) for k in keys]
        state = r["state"] + (f", retry of {r['retry_of']}" if r.get("retry_of") is not None else "")
        lines.append(f"| {r['number']} | {state} | {value} | {r['steps'] or ''} | {r['wall_s'] or ''} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _plots(study, workdir: Path) -> None:
    """The optimisation history and, with 2+ complete trials, the parameter importances (Optuna's matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    ax = ovm.plot_optimization_history(study)
    atomic_save_figure(ax.figure, workdir / "history.png")
    plt.close(ax.figure)
    try:
        ax = ovm.plot_param_importances(study)
    except (ValueError, RuntimeError):  # too few complete trials, or a single-valued space
        return
    atomic_save_figure(ax.figure, workdir / "importance.png")
    plt.close(ax.figure)
