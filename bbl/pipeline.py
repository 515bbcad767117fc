"""`bbl pipeline`: the paper's whole experiment from one preset, each stage a `bbl` command, resumable.

prepare → train both teachers → dump the ensemble's top-k at T into WORKDIR/cache/ensemble.zarr → distill the
student from the cache → train the same student without distillation → evaluate everything → results.md/json
and the plot. Presets are YAML files in `bbl/presets/pipelines/` (`PipelinePreset`). Stages run through the
study's resumable runner (`bbl.orchestration.runner`): a stage whose recorded inputs match and whose output is complete is
skipped; a killed stage resumes from its own checkpoints; each runs as a child process, so its wall time and peak
RSS are exact.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from bbl.cache.format import DEFAULT_TOP_K
from bbl.config import PAPER_TEMPERATURE, load_config
from bbl.errors import BblError
from bbl.evaluate.tasks import SUITES, ZERO_SHOT, suite_data
from bbl.orchestration.runner import Runner, Step
from bbl.outputs import claim_output

STATE_FILE = "pipeline_state.json"


@dataclass
class StudySettings:
    """A pipeline that ends in `bbl study` instead of distill + baseline + eval."""

    seeds: int = 3
    """Seeds 0..N-1 of every arm."""
    caches: dict[str, float] = field(default_factory=dict)
    """Extra caches {name: temperature}, each dumped and added as the arm `cached-NAME`."""
    arms: list[str] = field(default_factory=list)
    """Extra `--arm NAME:OPTIONS` specs."""


@dataclass
class PipelinePreset:
    """A pipeline preset (`bbl/presets/pipelines/NAME.yaml`): which model presets play which part, and the dump."""

    name: str
    teachers: dict[str, str]
    """{key: model preset}: each teacher is trained into WORKDIR/teachers/KEY."""
    student: str
    """The student's model preset (distilled and baseline)."""
    max_pairs: int | None = None
    """BLiMP / supplement pairs scored per file; None = every pair."""
    eval_tasks: list[str] = field(default_factory=lambda: ["blimp", "supplement"])
    """The zero-shot tasks the study (or the eval stage, besides dev perplexity) scores: blimp and supplement, plus
    any of ewok, entity_tracking, wug_adj, reading, whose data is CORPUS/<the pipeline's full_eval dir name> unless
    `--task-data` names it. The default leaves every stage's command as it was before this key."""
    eval_suite: str = "full"
    """Which of the pipeline's data dirs those extra tasks read from CORPUS: `full` (full_eval's names) or `fast`
    (fast_eval's: ewok_fast, entity_tracking_fast); a task whose dir is missing reads the other suite's, as
    `bbl eval` does. BLiMP and the supplement always read blimp_filtered / supplement_filtered."""
    vocab_size: int | None = None
    """`bbl prepare --vocab-size`; None = prepare's default (16,000, the paper's)."""
    mask_token: bool = True
    """`bbl prepare --mask-token` (reserve `<mask>` for masked-LM phases, the default) or --no-mask-token (the
    paper's exact three specials: the `paper` and `babyllama2` presets)."""
    selection_fraction: float = 0.0
    """`bbl prepare --selection-fraction`: the share of each train source's lines held out as the selection split,
    which then chooses every model's best checkpoint instead of dev (`babyllama2`: 0.05, BabyLlama-2's 9.5M / 0.5M
    words); 0 (the other presets) holds nothing out."""
    top_k: int = DEFAULT_TOP_K
    """`dump-logits --topk`."""
    temperature: float = PAPER_TEMPERATURE
    """`dump-logits --temperature`."""
    dump_batch_size: int = 16
    """`dump-logits --batch-size`."""
    study: StudySettings | None = None
    teacher_overrides: dict[str, list[str]] = field(default_factory=dict)
    """{key: [SECTION.KEY=VALUE, ...]}: `--set` overrides of one teacher (e.g. its seed, for two teachers of one
    preset)."""
    baseline_overrides: list[str] = field(default_factory=list)
    """[SECTION.KEY=VALUE, ...]: `--set` overrides of the plain-trained student (the baseline) only, e.g.
    training.window_offset=random, which the cached distillation cannot take (its cache holds fixed windows)."""


def pipeline_preset_names() -> list[str]:
    """The shipped pipeline presets."""
    return sorted(p.name[:-5] for p in resources.files("bbl").joinpath("presets", "pipelines").iterdir()
                  if p.name.endswith(".yaml"))


def load_pipeline_preset(name: str) -> PipelinePreset:
    """A shipped pipeline preset by name.

    Raises:
        BblError: unknown preset, or a preset file with unknown keys.
    """
    if name not in pipeline_preset_names():
        raise BblError(f"unknown pipeline preset {name!r}; use {', '.join(pipeline_preset_names())}")
    raw = yaml.safe_load(resources.files("bbl").joinpath("presets", "pipelines", f"{name}.yaml").read_text()) or {}
    known = {f.name for f in dataclasses.fields(PipelinePreset)} - {"name"}
    study_known = {f.name for f in dataclasses.fields(StudySettings)}
    bad = set(raw) - known | (set(raw.get("study") or {}) - study_known)
    if bad:
        raise BblError(f"pipeline preset {name}: unknown key(s) {', '.join(sorted(bad))}; valid: {', '.join(sorted(known))}")
    study = raw.pop("study", None)
    return PipelinePreset(name=name, **raw, study=None if study is None else StudySettings(**study))


def build_stages(preset: str, data: Path, workdir: Path, *, nproc: int = 1, blimp_dir: Path | None = None,
                 supplement_dir: Path | None = None, task_data: dict | None = None) -> list[Step]:
    """The ordered stages of a preset (`load_pipeline_preset`); commands are `python -m bbl ...` argument lists.

    Args:
        task_data: {task: path} of the preset's `eval_tasks` beyond blimp and supplement (default: CORPUS/<dir>).
    Raises:
        BblError: unknown preset; `data` without babylm_10M/, babylm_dev/ or the task dirs; bad `eval_tasks`.
    """
    p = load_pipeline_preset(preset)
    data, w = Path(data), Path(workdir)
    for split in ("babylm_10M", "babylm_dev"):
        if not (data / split).is_dir():
            raise BblError(f"{data}: no {split}/ inside; pass --corpus the BabyLM dir holding babylm_10M/ and "
                           f"babylm_dev/ (see README, 'Data')")
    student_cfg = load_config(p.student)
    t = student_cfg.training
    prepared = w / "prepared"
    teachers = {k: w / "teachers" / k for k in p.teachers}
    cache = w / "cache" / "ensemble.zarr"
    distilled, baseline = w / "student" / "distilled", w / "student" / "baseline"
    stages = [stage("prepare", _prepare_argv(p, data, prepared), prepared)]
    for key, cfg in p.teachers.items():
        sets = [a for o in p.teacher_overrides.get(key, []) for a in ("--set", o)]
        stages.append(stage(f"teacher-{key}", ["train-teacher", cfg, "--data", str(prepared), "--out",
                                               str(teachers[key]), "--resume", *sets], teachers[key], [prepared],
                            nproc))
    data_seed = t.window_seed

    def dump_stage(name: str, out: Path, temperature: float) -> Step:
        argv = ["dump-logits", *[a for d in teachers.values() for a in ("--teacher", str(d))], "--data",
                str(prepared), "--topk", str(p.top_k), "--temperature", str(temperature), "--cache", str(out),
                "--seq-len", str(t.seq_len), "--data-seed", str(data_seed), "--batch-size", str(p.dump_batch_size)]
        if t.max_train_windows:
            argv += ["--max-windows", str(t.max_train_windows)]
        step = stage(name, argv, out, list(teachers.values()), nproc)
        step.on_stale = "overwrite"  # teachers changed: the old cache is stale
        return step

    stages.append(dump_stage("dump-logits", cache, p.temperature))
    task_dirs = _task_dir_args(data, blimp_dir, supplement_dir)
    eval_tasks, extra = eval_task_args(p, data, task_data or {})
    if p.study is not None and p.baseline_overrides:
        raise BblError(f"pipeline preset {p.name}: baseline_overrides applies to the baseline stage, which a study "
                       f"preset has not; give the study's arms their --set instead")
    if p.study is not None:
        arms = []
        for key, temperature in p.study.caches.items():
            extra_cache = w / "cache" / f"ensemble-{key}.zarr"
            stages.append(dump_stage(f"dump-logits-{key}", extra_cache, temperature))
            arms += ["--arm", f"cached-{key}:--cache {extra_cache}"]
        caches = [s.output for s in stages if s.key.startswith("dump-logits")]
        argv = _study_argv(p, prepared, w / "study", cache, teachers, arms, task_dirs, eval_tasks, extra)
        stages.append(stage("study", argv, w / "study", caches))
        return stages
    stages.append(stage("distill", ["distill", p.student, "--cache", str(cache), "--data", str(prepared),
                                    "--out", str(distilled), "--resume"], distilled, [cache], nproc))
    baseline_sets = [a for o in p.baseline_overrides for a in ("--set", o)]
    stages.append(stage("baseline", ["train-student", p.student, "--data", str(prepared), "--out", str(baseline),
                                     "--resume", *baseline_sets], baseline, [prepared], nproc))
    models = [*teachers.values(), distilled, baseline]
    ev = _eval_argv(p, models, list(teachers.values()), prepared, w / "eval", t, task_dirs, eval_tasks, extra)
    stages.append(stage("eval", ev, w / "eval", models))
    stages[-1].on_stale = "overwrite"  # a model changed: the finished evaluation is stale
    return stages


def _prepare_argv(p: PipelinePreset, data: Path, prepared: Path) -> list[str]:
    """`bbl prepare`'s arguments for the preset (the options it leaves at their defaults are not passed)."""
    argv = ["prepare", "--train-dir", str(data / "babylm_10M"), "--dev-dir", str(data / "babylm_dev"), "--out",
            str(prepared)]
    if p.vocab_size:
        argv += ["--vocab-size", str(p.vocab_size)]
    if not p.mask_token:
        argv += ["--no-mask-token"]
    if p.selection_fraction:
        argv += ["--selection-fraction", str(p.selection_fraction)]
    return argv


def _task_dir_args(data: Path, blimp_dir: Path | None, supplement_dir: Path | None) -> list[str]:
    """--blimp-dir / --supplement-dir: as given, else CORPUS/blimp_filtered and CORPUS/supplement_filtered.

    Raises:
        BblError: neither given nor inside the corpus (one line naming the option).
    """
    args = []
    for flag, given, name in (("--blimp-dir", blimp_dir, "blimp_filtered"),
                              ("--supplement-dir", supplement_dir, "supplement_filtered")):
        task_dir = given or (data / name if (data / name).is_dir() else None)
        if task_dir is None:
            raise BblError(f"{data}: no {name}/ inside; pass {flag} (the BabyLM evaluation pipeline's filtered data)")
        args += [flag, str(task_dir)]
    return args


def _study_argv(p: PipelinePreset, prepared: Path, workdir: Path, cache: Path, teachers: dict, arms: list[str],
                task_dirs: list[str], eval_tasks: list[str], extra: list[str]) -> list[str]:
    """`bbl study`'s arguments of a study preset: its cache's arm, the online arm, the extra caches' `arms`, the
    preset's own arms."""
    for arm in p.study.arms:
        arms = [*arms, "--arm", arm]
    argv = ["study", p.student, "--data", str(prepared), "--workdir", str(workdir), "--cache", str(cache),
            *[a for d in teachers.values() for a in ("--teacher", str(d))], "--seeds", str(p.study.seeds),
            *arms, *task_dirs]
    if extra:
        argv += ["--tasks", ",".join(eval_tasks), *extra]
    if p.max_pairs:
        argv += ["--max-pairs", str(p.max_pairs)]
    return argv


def _eval_argv(p: PipelinePreset, models: list[Path], teachers: list[Path], prepared: Path, out: Path, t,
               task_dirs: list[str], eval_tasks: list[str], extra: list[str]) -> list[str]:
    """`bbl eval`'s arguments: every model, the teachers' ensemble, the students' dev subset (`t`: the student's
    `TrainingConfig`) and the preset's tasks."""
    argv = ["eval", *map(str, models), "--ensemble", ",".join(map(str, teachers)), "--data", str(prepared),
            "--out", str(out), "--seq-len", str(t.seq_len), "--dev-windows", str(t.dev_windows), *task_dirs]
    if t.window_seed:  # the students' dev subset; 0 (every preset's) is eval's default: those commands stay as they were
        argv += ["--data-seed", str(t.window_seed)]
    if extra:  # BLiMP as the presets always scored it, not the BabyLM-suite default (`bbl eval --suite`)
        argv += ["--tasks", ",".join([*eval_tasks, "perplexity"]), *extra, "--pair-scoring", "bos"]
    if p.max_pairs:
        argv += ["--max-pairs", str(p.max_pairs)]
    return argv


def eval_task_args(p: PipelinePreset, data: Path, task_data: dict) -> tuple[list[str], list[str]]:
    """The preset's `eval_tasks` in the suite's order, and `--task-data TASK=PATH` of those beyond blimp and
    supplement ([] when there are none: the stages' commands stay as before the key).

    Raises:
        BblError: an unknown task, blimp or supplement left out, an eval_suite other than full or fast, data given
            for a task not scored, or a task whose data is neither given nor in CORPUS (under either suite's name).
    """
    own = [t for t in ZERO_SHOT if t not in ("blimp", "supplement")]
    if any(t not in ZERO_SHOT for t in p.eval_tasks) or not {"blimp", "supplement"} <= set(p.eval_tasks):
        raise BblError(f"pipeline preset {p.name}: eval_tasks {p.eval_tasks}: name blimp and supplement, plus any "
                       f"of {', '.join(own)}")
    stray = [t for t in task_data if t not in p.eval_tasks]
    if stray:
        raise BblError(f"--task-data {stray[0]}=...: the preset {p.name} does not score {stray[0]} (its eval_tasks: "
                       f"{', '.join(p.eval_tasks)})")
    if p.eval_suite not in SUITES:
        raise BblError(f"pipeline preset {p.name}: eval_suite {p.eval_suite!r}: use full or fast")
    args = []
    for task in (t for t in own if t in p.eval_tasks):
        path = task_data.get(task) or suite_data(task, p.eval_suite, lambda name: data / name)[0]
        if not Path(path).exists():
            raise BblError(f"{path}: not found; pass --task-data {task}=PATH (the preset {p.name} scores {task})")
        args += ["--task-data", f"{task}={path}"]
    return [t for t in ZERO_SHOT if t in p.eval_tasks], args


def stage(name: str, argv: list[str], output: Path, upstream: list[Path] = (), nproc: int = 1) -> Step:
    """A pipeline stage: a `Step` whose fingerprint folds in its upstream outputs' completion markers."""
    return Step(name, argv, output, upstream=list(upstream), section="stages",
                label=f"[pipeline] {name}", nproc=nproc,
                failure_hint="re-run the same `bbl pipeline` command to continue from this stage")


def run_pipeline(preset: str, data: Path, workdir: Path, **kwargs) -> dict:
    """`_run_pipeline` in `workdir` once it is claimed (`bbl.outputs`): new, empty or a pipeline workdir (re-run
    to continue it), one pipeline process at a time.

    Raises:
        BblError: a workdir that is a file, under a file, not a pipeline's, unwritable or held by another run; and
            `_run_pipeline`'s errors.
    """
    with claim_output(workdir, "pipeline", option="--workdir", log=kwargs.get("log", print)):
        return _run_pipeline(preset, data, workdir, **kwargs)


def _run_pipeline(preset: str, data: Path, workdir: Path, *, until: str | None = None, nproc: int = 1,
                  blimp_dir: Path | None = None, supplement_dir: Path | None = None, task_data: dict | None = None,
                  log=print) -> dict:
    """Run (or continue) the pipeline; returns the state dict (per stage: seconds, peak RSS).

    Raises:
        BblError: bad preset or data dir, unknown --until stage, or a stage that fails (named, with its exit code).
    """
    workdir = Path(workdir)
    stages = build_stages(preset, data, workdir, nproc=nproc, blimp_dir=blimp_dir, supplement_dir=supplement_dir,
                          task_data=task_data)
    if until and until not in [s.key for s in stages]:
        raise BblError(f"--until {until!r}: not a stage; stages: {', '.join(s.key for s in stages)}")
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runner = Runner(workdir / STATE_FILE, {"preset": preset, "stages": {}}, env=env, log=log)
    if runner.state.get("preset") != preset:
        raise BblError(f"{workdir}: holds a '{runner.state.get('preset')}' pipeline; use another --workdir for "
                       f"'{preset}'")
    t_all = time.perf_counter()
    for step in stages:
        runner.run(step)
        if step.key == until:
            log(f"[pipeline] stopped after {until} (--until); re-run without --until to continue")
            return runner.state
    last = stages[-1].output
    names = ("study.md", "study.json", "curves.png") if stages[-1].key == "study" else \
        ("results.md", "results.json", "blimp.png")
    for name in names:
        shutil.copy(last / name, workdir / name)
    summary = stage_table(runner.state)
    with open(workdir / names[0], "a") as f:
        f.write("\n" + summary)
    log(f"[pipeline] all stages done in {time.perf_counter() - t_all:.1f}s this run\n{summary}")
    log(f"[pipeline] results: {', '.join(str(workdir / n) for n in names)}")
    return runner.state


def stage_table(state: dict) -> str:
    """Markdown table of each stage's last wall time and peak RSS; "—" for a stage whose run finished but was killed
    before the runner recorded its time (a re-run finds it done and skips it)."""
    rows = ["| stage | wall time (s) | peak RSS (MiB) |", "|---|---:|---:|"]
    rows += [f"| {k} | {v.get('seconds', '—')} | {v.get('peak_rss_mib', '—')} |" for k, v in state["stages"].items()]
    total = sum(v.get("seconds", 0) for v in state["stages"].values())
    return "\n".join([*rows, f"| **total** | **{total:.1f}** | |"]) + "\n"
