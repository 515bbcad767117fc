"""`bbl study`: the paper's comparison over seeds, from one prepared dir, one cache and its teachers.

Arms (`bbl.study.arms`): `baseline` (plain CE, `train-student`), `cached` (`distill --cache`), `online` (`distill
--teacher ...`: teachers resident, full-vocabulary KL at the cache's temperature) and any `--arm NAME:OPTIONS`.
Seed s means the same initialisation and window order in every arm, and `training.data_seed` keeps the windows
fixed across seeds, so arms are compared per seed (paired). Each run is a child `bbl` process through the
resumable runner (`bbl.orchestration.runner`), scored by `bbl eval` on BLiMP and the supplement, and on any other zero-shot
task of `--tasks` (EWoK, entity tracking, WUG, reading: each one's headline number, `bbl.study.report.TASK_METRICS`).
Writes curves.png, study.md and, last, study.json (`bbl.study.report`); a re-run skips what is done.
"""

from __future__ import annotations

import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bbl.cache.integrity import damage_message
from bbl.cache.reader import open_cache
from bbl.cache.store import cache_location, group_json
from bbl.config import kd_temperature, load_config
from bbl.data.prepared import PreparedData
from bbl.distill.recipe import cache_specs, check_caches, check_distill_inputs
from bbl.errors import BblError
from bbl.evaluate.run import EvalConfig
from bbl.evaluate.suite import check_task_data
from bbl.evaluate.tasks import ZERO_SHOT
from bbl.io import load_json, read_jsonl
from bbl.orchestration.runner import Runner, Step
from bbl.outputs import claim_output
from bbl.study.arms import Arm, parse_arm, run_argv
from bbl.study.report import TASK_METRICS, write_study
from bbl.study.stats import mean_std, paired_interval
from bbl.train.recipe import check_config_data

STATE_FILE = "study_state.json"
METRICS = ("best_dev_ce", "blimp", "supplement")
"""The numbers every study reports; the other tasks of `--tasks` add theirs (`TASK_METRICS`)."""
DEFAULT_TASKS = ("blimp", "supplement")
"""The zero-shot tasks every study scores (its METRICS), and all it scores unless `--tasks` names more."""
RESUME_HINT = "re-run the same `bbl study` command to continue"


def job_envs(jobs: int) -> list[dict]:
    """The environment of each of `jobs` concurrent runs (`bbl study --jobs`): the CPUs this process may use split
    evenly (OMP_NUM_THREADS / MKL_NUM_THREADS, which torch reads at start-up), and with several GPUs visible one
    GPU per job, round robin (CUDA_VISIBLE_DEVICES). One job: no change."""
    if jobs <= 1:
        return [{}]
    import torch

    threads = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
             **({"CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} if gpus > 1 else {})} for i in range(jobs)]


def check_tasks(tasks, task_data: dict, blimp_dir: Path, supplement_dir: Path) -> tuple[list[str], dict[str, Path]]:
    """The study's zero-shot tasks in the suite's order and the data of the other tasks, checked as `bbl eval`
    checks them (`EvalConfig`, `check_task_data`), before anything is written.

    Raises:
        BblError: an unknown task (perplexity too: the study's dev CE is its perplexity), blimp or supplement left
            out, data given for a task not asked, or a task's data missing or unreadable.
    """
    unknown = [t for t in tasks if t not in ZERO_SHOT]
    if unknown:
        raise BblError(f"--tasks: unknown task(s) {', '.join(unknown)}; use {', '.join(ZERO_SHOT)} (the study's "
                       f"dev CE is its perplexity)")
    ordered = [t for t in ZERO_SHOT if t in tasks]  # one order: the default argv stays "blimp,supplement"
    if not set(DEFAULT_TASKS) <= set(ordered):
        raise BblError(f"--tasks {','.join(tasks)}: a study always scores blimp and supplement (its main table); "
                       f"name them too, e.g. --tasks blimp,supplement,ewok")
    task_data = {t: Path(p) for t, p in task_data.items()}
    config = EvalConfig(tasks=ordered, data_dirs=task_data, blimp_dir=blimp_dir, supplement_dir=supplement_dir)
    stray = [t for t in task_data if t not in ordered]
    if stray:
        raise BblError(f"--task-data {stray[0]}=...: --tasks does not name {stray[0]}; add it to --tasks or drop "
                       f"its data")
    for task in ordered:
        check_task_data(task, config.task_path(task))
    return ordered, task_data


def check_arm(arm: Arm, config: str, overrides: list[str], data: PreparedData, teachers: list[Path],
              readers: dict) -> None:
    """Everything an arm's runs would refuse, checked before the study's first run: its config with the study's and
    its own `--set` values, against the prepared data (`check_config_data`), and its cache or teachers
    (`check_distill_inputs`), the cache holding the windows the student trains on. `readers` holds the caches
    opened so far, by location (each is opened once: an open lists the store); an arm of several caches is checked
    as `bbl distill` checks them (`check_caches`: each cache's settings, the same windows, the weights).

    Raises:
        BblError: what the arm's first run would have failed with.
    """
    if arm.mode == "online" and not teachers:
        raise BblError("an online arm needs the study's --teacher DIR ...")
    cfg = load_config(config, [*overrides, *arm.overrides, "training.seed=0"])  # as `run_argv` passes them
    check_config_data(cfg, data)
    if arm.mode == "online":
        check_distill_inputs(cfg, data, teacher_dirs=teachers)
    if arm.mode != "cached":
        return
    specs = cache_specs(arm.caches)
    for location, _ in specs:
        reader = readers.get(location) or readers.setdefault(location, open_cache(location))
        selection = reader.attrs.get("window_selection", {})  # opened: complete, no missing chunk
        t = cfg.training
        want = (t.max_train_windows, t.window_seed if t.max_train_windows else None)
        if (selection.get("max_windows"), selection.get("seed") if selection.get("max_windows") else None) != want:
            raise BblError(f"{location}: dumped for max_windows {selection.get('max_windows')}, seed "
                           f"{selection.get('seed')}, the student trains on max_train_windows {t.max_train_windows}, "
                           f"data_seed {t.window_seed}: arms would see other windows; --set "
                           f"training.max_train_windows=... training.data_seed=... to match the cache")
    check_caches(cfg, data, specs, open_reader=readers.__getitem__)


def _eval_argv(model_dir: Path, out: Path, blimp_dir: Path, supplement_dir: Path, max_pairs: int | None,
               tasks=DEFAULT_TASKS, task_data: dict | None = None) -> list[str]:
    """The `bbl eval` of one model. With the default tasks exactly the command of studies before `--tasks` (the
    runner fingerprints it: an older study resumes without re-running its evals); other tasks add their data."""
    argv = ["eval", str(model_dir), "--tasks", ",".join(tasks), "--out", str(out), "--blimp-dir", str(blimp_dir),
            "--supplement-dir", str(supplement_dir), "--batch-size", "256"]  # small models: fewer, larger batches
    argv += [a for t in tasks if t in (task_data or {}) for a in ("--task-data", f"{t}={task_data[t]}")]
    if any(t not in DEFAULT_TASKS for t in tasks):  # BLiMP as studies always scored it, not the BabyLM-suite default
        argv += ["--pair-scoring", "bos"]
    return argv + (["--max-pairs", str(max_pairs)] if max_pairs else [])


def _eval_step(key: str, model_dir: Path, out: Path, blimp_dir: Path, supplement_dir: Path, max_pairs: int | None,
               label: str, tasks=DEFAULT_TASKS, task_data: dict | None = None, env: dict | None = None) -> Step:
    """The eval of one model; a retrained model (a new run file) invalidates it."""
    run_file = Path(model_dir) / "bbl_run.json"
    return Step(key, _eval_argv(model_dir, out, blimp_dir, supplement_dir, max_pairs, tasks, task_data), out,
                parts=[run_file.read_bytes() if run_file.is_file() else b""], section="evals", label=label,
                on_stale="overwrite", failure_hint=RESUME_HINT, env=env)


def run_study(config: str, data_dir: Path, workdir: Path, **kwargs) -> dict:
    """`_run_study` in `workdir` once it is claimed (`bbl.outputs`): new, empty or a study workdir (re-run to
    resume it), one study process at a time.

    Raises:
        BblError: a workdir that is a file, under a file, not a study's, unwritable or held by another run; and
            `_run_study`'s errors.
    """
    with claim_output(workdir, "study", option="--workdir", log=kwargs.get("log", print)):
        return _run_study(config, data_dir, workdir, **kwargs)


def _run_study(config: str, data_dir: Path, workdir: Path, *, cache: Path | None = None, teachers=(), seeds: int = 3,
               arm_specs=(), overrides=(), blimp_dir: Path, supplement_dir: Path, max_pairs: int | None = None,
               tasks=DEFAULT_TASKS, task_data: dict | None = None, jobs: int = 1, log=print) -> dict:
    """Train and score every arm over `seeds` seeds, then write study.json, study.md, curves.png; returns the study.

    Args:
        jobs: runs trained and scored at once (`job_envs`: the CPUs split between them, one GPU each when there
            are several). Results do not depend on it; wall times do (study.json records it).
        tasks: the zero-shot tasks each model is scored on (`ZERO_SHOT`), blimp and supplement among them.
        task_data: {task: data path} of the tasks other than blimp and supplement (`bbl eval --task-data`).
    Raises:
        BblError: bad config, data, cache, arm or task dirs (checked before anything is written); a run that
            fails (named, with the command to reproduce it).
    """
    if seeds < 1:
        raise BblError(f"--seeds {seeds} must be >= 1")
    if jobs < 1:
        raise BblError(f"--jobs {jobs} must be >= 1")
    cfg = load_config(config, list(overrides))
    data = PreparedData(data_dir)
    teachers = [Path(t) for t in teachers]
    study_cache = open_cache(cache) if cache is not None else None  # opened once: each open lists the store
    arms, spec_names = _study_arms(cfg, cache, study_cache, teachers, arm_specs)
    overrides = _paired_overrides(cfg, overrides, study_cache)
    tasks, task_data = check_tasks(tasks, task_data or {}, blimp_dir, supplement_dir)
    _check_arms(arms, spec_names, config, overrides, data, teachers,
                {cache_location(cache): study_cache} if study_cache else {})
    evals = {"tasks": tasks, "task_data": task_data}

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "study.json").unlink(missing_ok=True)  # the marker of a finished study, written last
    runner = Runner(workdir / STATE_FILE, {"runs": {}}, log=log)
    t0 = time.perf_counter()
    for t in teachers:  # first: a study stopped part-way still has its reference rows
        out = workdir / "teachers" / t.name
        runner.run(_eval_step(f"teacher/{t.name}", t, out, blimp_dir, supplement_dir, max_pairs,
                              f"[study] teacher {t.name} eval", **evals))
    todo = [(arm, seed) for seed in range(seeds) for arm in arms]  # seed-major: a partial study stays balanced

    def train_and_score(i: int, arm, seed: int, env: dict) -> None:
        out = workdir / "runs" / arm.name / f"seed{seed}"
        key = f"{arm.name}/seed{seed}"
        argv = run_argv(arm, config, data_dir, out, seed, overrides, teachers)
        metas = [group_json(location) for location, _ in cache_specs(arm.caches)]
        runner.run(Step(key, argv, out, parts=[m for m in metas if m is not None], section="runs",
                        label=f"[study {i}/{len(todo)}] {key}", on_stale="restart", failure_hint=RESUME_HINT,
                        env=env))
        runner.run(_eval_step(key, out, out / "eval", blimp_dir, supplement_dir, max_pairs,
                              f"[study {i}/{len(todo)}] {key} eval", env=env, **evals))

    _run_concurrently(train_and_score, todo, jobs)
    study = collect(workdir, arms, seeds, teachers, runner.state, tasks=tasks)
    study.update(config=config, overrides=list(overrides), data=str(Path(data_dir).resolve()),
                 cache=str(cache) if cache else None, max_pairs_per_file=max_pairs,
                 task_data={t: str(p) for t, p in task_data.items()},
                 date=time.strftime("%Y-%m-%d"), jobs=jobs, seconds_this_run=round(time.perf_counter() - t0, 1))
    write_study(study, workdir)
    log(f"[study] wrote {workdir / 'study.md'}, study.json, curves.png")
    return study


def _study_arms(cfg, cache, study_cache, teachers: list[Path], arm_specs) -> tuple[list[Arm], set[str]]:
    """The study's arms: baseline, cached (with a cache), online (with teachers, at the cached arm's temperature),
    then each `--arm`; and the names of the `--arm` ones. Raises `BblError` on a repeated name."""
    arms = [Arm("baseline", "baseline")]
    if study_cache is not None:
        arms.append(Arm("cached", "cached", [cache_location(cache)]))
    if teachers:
        temperature = kd_temperature(cfg.distill, study_cache.temperature if study_cache else None)
        arms.append(Arm("online", "online", overrides=[f"distill.temperature={temperature}"]))
    arms += [parse_arm(s, default_cache=cache_location(cache) if cache else None) for s in arm_specs]
    spec_names = {a.name for a in arms[len(arms) - len(arm_specs):]}
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise BblError(f"--arm: arm names must be unique, got {', '.join(names)}")
    return arms, spec_names


def _paired_overrides(cfg, overrides, study_cache) -> list[str]:
    """`overrides` plus, unless the config sets one, the data seed (the cache's, else 0): the windows and the dev
    subset are then the same across seeds, so seeds are paired."""
    overrides = list(overrides)
    if cfg.training.data_seed is None:
        data_seed = study_cache.attrs.get("window_selection", {}).get("seed", 0) if study_cache else 0
        overrides.append(f"training.data_seed={data_seed}")
    return overrides


def _check_arms(arms, spec_names, config, overrides, data, teachers, readers: dict) -> None:
    """Every arm's run checked before anything is written (`check_arm`; an `--arm`'s error names it), then every
    chunk of the study's caches decoded once (crc32c): damage stops the study now, not at its last run."""
    for arm in arms:
        try:
            check_arm(arm, config, overrides, data, teachers, readers)
        except BblError as e:
            raise BblError(f"--arm {arm.name}: {e}" if arm.name in spec_names else str(e)) from None
    for location, reader in readers.items():
        damaged = reader.scan()
        if damaged:
            raise BblError(damage_message(location, damaged, reader.attrs))


def _run_concurrently(work, todo: list, jobs: int) -> None:
    """`work(i, *item, env)` for each item of `todo` (numbered from 1), `jobs` at a time, each holding one of
    `job_envs(jobs)` (its threads and GPU are its own); with several jobs every item is started and the first
    failure is raised once the others have finished."""
    slots = queue.SimpleQueue()
    for env in job_envs(jobs):
        slots.put(env)

    def one(i: int, item) -> None:
        env = slots.get()
        try:
            work(i, *item, env)
        finally:
            slots.put(env)

    if jobs == 1:
        for i, item in enumerate(todo, 1):
            one(i, item)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, i, item) for i, item in enumerate(todo, 1)]
    for future in futures:
        future.result()


def _eval_numbers(path: Path, tasks=DEFAULT_TASKS) -> dict:
    """A model's numbers from its `bbl eval` JSON: BLiMP and supplement (and their pair counts), then each other
    task's headline numbers (`TASK_METRICS`)."""
    results = load_json(path, fix=f"delete {path.parent} and re-run the same `bbl study` command")["tasks"]
    return {"blimp": results["blimp"]["overall"], "supplement": results["supplement"]["overall"],
            "blimp_pairs": results["blimp"].get("pairs"), "supplement_pairs": results["supplement"].get("pairs"),
            **{m.name: results[m.task][m.key] for m in TASK_METRICS if m.task in tasks}}


def dev_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(optimizer step, dev CE) of every evaluation of a run, from its metrics.jsonl."""
    rows = [row for _, row in read_jsonl(run_dir / "metrics.jsonl")]
    curve = {int(r["step"]): float(r["eval_loss"]) for r in rows if "eval_loss" in r}
    return sorted(curve.items())


def collect(workdir: Path, arms: list[Arm], seeds: int, teachers: list[Path], state: dict, *,
            tasks=DEFAULT_TASKS) -> dict:
    """Per-run numbers, per-arm mean/std, paired differences to the baseline, and mean dev curves: of `METRICS`
    and of the other tasks' (`TASK_METRICS`); "metrics" lists them all."""
    metrics = (*METRICS, *(m.name for m in TASK_METRICS if m.task in tasks))
    out = {"seeds": list(range(seeds)), "tasks": list(tasks), "metrics": list(metrics), "arms": {}, "teachers": {}}
    for arm in arms:
        runs = []
        for seed in range(seeds):
            d = workdir / "runs" / arm.name / f"seed{seed}"
            run = load_json(d / "bbl_run.json", fix=f"delete {d} and {RESUME_HINT}")
            ledger = run.get("ledger") or {}
            runs.append({"seed": seed, "best_dev_ce": run["best_eval_loss"], "global_step": run["global_step"],
                         "parameters": run.get("parameters"), "words_seen": ledger.get("words_seen"),
                         "words_seen_with_teachers": ledger.get("words_seen_with_teachers", ledger.get("words_seen")),
                         **_eval_numbers(d / "eval" / f"{d.name}.json", tasks),
                         **{k: state["runs"].get(f"{arm.name}/seed{seed}", {}).get(k) for k in
                            ("seconds", "peak_rss_mib")},
                         "curve": dev_curve(d)})
        summary = {m: dict(zip(("mean", "std"), mean_std([r[m] for r in runs]), strict=True)) for m in metrics}
        out["arms"][arm.name] = {"mode": arm.mode, "cache": str(arm.cache) if arm.cache else None,
                                 **({"caches": [str(c) for c in arm.caches]} if len(arm.caches) > 1 else {}),
                                 "overrides": arm.overrides, "runs": runs, **summary}
    base = out["arms"]["baseline"]["runs"]
    for arm in out["arms"].values():
        arm["vs_baseline"] = {m: paired_interval([r[m] for r in arm["runs"]], [r[m] for r in base]) for m in metrics}
        steps = sorted({s for r in arm["runs"] for s, _ in r["curve"]})
        arm["mean_curve"] = [(s, sum(v for r in arm["runs"] for t, v in r["curve"] if t == s)
                              / sum(1 for r in arm["runs"] for t, _ in r["curve"] if t == s)) for s in steps]
    for t in teachers:
        run = load_json(t / "bbl_run.json", fix=f"re-train teacher {t}, or delete its bbl_run.json") or {}
        out["teachers"][t.name] = {"path": str(t), "best_dev_ce": run.get("best_eval_loss"),
                                   "parameters": run.get("parameters"),
                                   "words_seen": (run.get("ledger") or {}).get("words_seen"),
                                   **_eval_numbers(workdir / "teachers" / t.name / f"{t.name}.json", tasks)}
    return out
