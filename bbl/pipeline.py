"""`bbl pipeline`: the paper's whole experiment from one preset, each stage a `bbl` command, resumable.

prepare → train both teachers → dump the ensemble's top-k at T into WORKDIR/cache/ensemble.zarr → distill the
student from the cache → train the same student without distillation → evaluate everything → results.md/json
and the plot. A stage whose recorded inputs match and whose output is complete is skipped; a killed stage
resumes from its own checkpoints. Each stage runs as a child process so its wall time and peak RSS are exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from bbl.child import run_bbl
from bbl.errors import BblError

PRESETS = {
    "tiny": {"teachers": {"gpt2": "gpt2-tiny", "llama": "llama-tiny"}, "student": "student-tiny",
             "max_pairs": 5, "dump_batch": 16},
    "cpu": {"teachers": {"gpt2": "gpt2-cpu", "llama": "llama-cpu"}, "student": "student-cpu",
            "max_pairs": 40, "dump_batch": 32, "vocab_size": 4096, "temperature": 1.0},
    "paper": {"teachers": {"gpt2": "gpt2-705m", "llama": "llama-360m"}, "student": "llama-58m",
              "max_pairs": None, "dump_batch": 64},
    # The paper's comparison at CPU scale over seeds (issue 10, README "The CPU study"): a CPU-sized vocabulary,
    # teachers trained 8 epochs, a T = 1 cache, the student arms (baseline, cached, online) run by `bbl study`;
    # every BLiMP and supplement pair is scored. "caches": {"t2": 2.0} would add a T = 2 dump and its arm
    # (+~13 min; measured on one seed in the README).
    "cpu-study": {"teachers": {"gpt2": "gpt2-study", "llama": "llama-study"}, "student": "student-study",
                  "max_pairs": None, "dump_batch": 32, "vocab_size": 4096, "temperature": 1.0,
                  "study": {"seeds": 3}},
}
STATE_FILE = "pipeline_state.json"


@dataclass
class Stage:
    name: str
    argv: list[str]
    output: Path
    upstream: list[Path] = field(default_factory=list)
    nproc: int = 1


def _complete(output: Path) -> bool:
    """Whether a stage's output is whole: its marker file exists and, for runs and caches, says complete."""
    marker = _marker(output)
    if not marker.is_file():
        return False
    if marker.name == "bbl_run.json":
        return bool(json.loads(marker.read_text()).get("complete"))
    if marker.name == "zarr.json":
        return bool(json.loads(marker.read_text()).get("attributes", {}).get("complete"))
    return True  # manifest.json (prepare), results.json (eval) and study.json (study) are written last


def _marker(output: Path) -> Path:
    for name in ("bbl_run.json", "zarr.json", "manifest.json", "results.json", "study.json"):
        if (output / name).is_file():
            return output / name
    return output


def _fingerprint(stage: Stage) -> str:
    h = hashlib.sha256(json.dumps(stage.argv).encode())
    for up in stage.upstream:
        marker = _marker(up)
        if marker.is_file():
            h.update(hashlib.sha256(marker.read_bytes()).digest())
    return h.hexdigest()


def build_stages(preset: str, data: Path, workdir: Path, *, nproc: int = 1, blimp_dir: Path | None = None,
                 supplement_dir: Path | None = None) -> list[Stage]:
    """The ordered stages of a preset (see PRESETS); commands are `python -m bbl ...` argument lists."""
    from bbl.config import load_config

    if preset not in PRESETS:
        raise BblError(f"unknown pipeline preset {preset!r}; use {', '.join(PRESETS)}")
    p = PRESETS[preset]
    data, w = Path(data), Path(workdir)
    for split in ("babylm_10M", "babylm_dev"):
        if not (data / split).is_dir():
            raise BblError(f"{data}: no {split}/ inside; pass --data the BabyLM dir holding babylm_10M/ and "
                           f"babylm_dev/ (see README, 'Data')")
    student_cfg = load_config(p["student"])
    t = student_cfg.training
    prepared = w / "prepared"
    teachers = {k: w / "teachers" / k for k in p["teachers"]}
    cache = w / "cache" / "ensemble.zarr"
    distilled, baseline = w / "student" / "distilled", w / "student" / "baseline"
    prep = ["prepare", "--train-dir", str(data / "babylm_10M"), "--dev-dir", str(data / "babylm_dev"), "--out",
            str(prepared)]
    if p.get("vocab_size"):
        prep += ["--vocab-size", str(p["vocab_size"])]
    stages = [Stage("prepare", prep, prepared / "manifest.json")]
    for key, cfg in p["teachers"].items():
        stages.append(Stage(f"teacher-{key}", ["train-teacher", cfg, "--data", str(prepared), "--out",
                                               str(teachers[key]), "--resume"], teachers[key], [prepared], nproc))
    data_seed = t.seed if t.data_seed is None else t.data_seed

    def dump_stage(name: str, out: Path, temperature: float) -> Stage:
        argv = ["dump-logits", *[a for d in teachers.values() for a in ("--teacher", str(d))], "--data",
                str(prepared), "--topk", "64", "--temperature", str(temperature), "--out", str(out), "--seq-len",
                str(t.seq_len), "--seed", str(data_seed), "--batch-size", str(p["dump_batch"])]
        if t.max_train_windows:
            argv += ["--max-windows", str(t.max_train_windows)]
        return Stage(name, argv, out, list(teachers.values()), nproc)

    stages.append(dump_stage("dump-logits", cache, p.get("temperature", 2.0)))
    task_dirs = []
    for flag, given, name in (("--blimp-dir", blimp_dir, "blimp_filtered"),
                              ("--supplement-dir", supplement_dir, "supplement_filtered")):
        task_dir = given or (data / name if (data / name).is_dir() else None)
        if task_dir is None:
            raise BblError(f"{data}: no {name}/ inside; pass {flag} (the BabyLM evaluation pipeline's filtered data)")
        task_dirs += [flag, str(task_dir)]
    if "study" in p:
        study = p["study"]
        arms = []
        for key, temperature in study.get("caches", {}).items():
            extra = w / "cache" / f"ensemble-{key}.zarr"
            stages.append(dump_stage(f"dump-logits-{key}", extra, temperature))
            arms += ["--arm", f"cached-{key}:--cache {extra}"]
        for arm in study.get("arms", []):
            arms += ["--arm", arm]
        argv = ["study", p["student"], "--data", str(prepared), "--workdir", str(w / "study"), "--cache", str(cache),
                *[a for d in teachers.values() for a in ("--teacher", str(d))], "--seeds", str(study["seeds"]),
                *arms, *task_dirs]
        if p["max_pairs"]:
            argv += ["--max-pairs", str(p["max_pairs"])]
        caches = [s.output for s in stages if s.name.startswith("dump-logits")]
        stages.append(Stage("study", argv, w / "study", caches))
        return stages
    stages.append(Stage("distill", ["distill", p["student"], "--cache", str(cache), "--data", str(prepared),
                                    "--out", str(distilled), "--resume"], distilled, [cache], nproc))
    stages.append(Stage("baseline", ["train-student", p["student"], "--data", str(prepared), "--out", str(baseline),
                                     "--resume"], baseline, [prepared], nproc))
    ev = ["eval", *map(str, teachers.values()), str(distilled), str(baseline), "--ensemble",
          ",".join(map(str, teachers.values())), "--data", str(prepared), "--out", str(w / "eval"),
          "--seq-len", str(t.seq_len), "--dev-windows", str(t.dev_windows), *task_dirs]
    if p["max_pairs"]:
        ev += ["--max-pairs", str(p["max_pairs"])]
    stages.append(Stage("eval", ev, w / "eval", [*teachers.values(), distilled, baseline]))
    return stages


def run_pipeline(preset: str, data: Path, workdir: Path, *, until: str | None = None, nproc: int = 1,
                 blimp_dir: Path | None = None, supplement_dir: Path | None = None, log=print) -> dict:
    """Run (or continue) the pipeline; returns the state dict (per stage: seconds, peak RSS, skipped).

    Raises:
        BblError: bad preset or data dir, unknown --until stage, or a stage that fails (named, with its exit code).
    """
    workdir = Path(workdir)
    stages = build_stages(preset, data, workdir, nproc=nproc, blimp_dir=blimp_dir, supplement_dir=supplement_dir)
    if until and until not in [s.name for s in stages]:
        raise BblError(f"--until {until!r}: not a stage; stages: {', '.join(s.name for s in stages)}")
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"preset": preset, "stages": {}}
    if state.get("preset") != preset:
        raise BblError(f"{workdir}: holds a '{state.get('preset')}' pipeline; use another --workdir for '{preset}'")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t_all = time.perf_counter()
    for stage in stages:
        fp = _fingerprint(stage)
        record = state["stages"].get(stage.name, {})
        if record.get("fingerprint") == fp and _complete(stage.output):
            log(f"[pipeline] {stage.name}: up to date, skipped")
        else:
            extra = []
            if stage.name == "dump-logits" and record.get("fingerprint") not in (None, fp):
                extra = ["--overwrite"]  # teachers changed: the old cache is stale
            log(f"[pipeline] {stage.name}: bbl {' '.join(stage.argv + extra)}")
            code, seconds, rss = run_bbl(stage.argv + extra, env=env, nproc=stage.nproc)
            if code != 0:
                raise BblError(f"stage {stage.name} failed (exit {code}); fix the error above and re-run the same "
                               f"`bbl pipeline` command to continue from this stage")
            state["stages"][stage.name] = {"fingerprint": fp, "seconds": round(seconds, 1),
                                           "peak_rss_mib": round(rss, 1)}
            state_path.write_text(json.dumps(state, indent=2) + "\n")
            log(f"[pipeline] {stage.name}: done in {seconds:.1f}s, peak RSS {rss:.0f} MiB")
        if stage.name == until:
            log(f"[pipeline] stopped after {until} (--until); re-run without --until to continue")
            return state
    last = stages[-1].output
    names = ("study.md", "study.json", "curves.png") if stages[-1].name == "study" else \
        ("results.md", "results.json", "blimp.png")
    for name in names:
        shutil.copy(last / name, workdir / name)
    summary = stage_table(state)
    with open(workdir / names[0], "a") as f:
        f.write("\n" + summary)
    log(f"[pipeline] all stages done in {time.perf_counter() - t_all:.1f}s this run\n{summary}")
    log(f"[pipeline] results: {', '.join(str(workdir / n) for n in names)}")
    return state


def stage_table(state: dict) -> str:
    """Markdown table of each stage's last wall time and peak RSS."""
    rows = ["| stage | wall time (s) | peak RSS (MiB) |", "|---|---:|---:|"]
    rows += [f"| {k} | {v['seconds']} | {v['peak_rss_mib']} |" for k, v in state["stages"].items()]
    total = sum(v["seconds"] for v in state["stages"].values())
    return "\n".join([*rows, f"| **total** | **{total:.1f}** | |"]) + "\n"
