"""`bbl study`: every arm over 2 seeds on the tiny presets, its outputs, resume; the interval arithmetic; the
pairing (same seed = same window order in cached and plain training); the study presets' proportions."""

import json
import math
import random

import numpy as np
import pytest

from bbl.errors import BblError
from bbl.study.arms import parse_arm
from bbl.study.run import job_envs, run_study
from bbl.study.stats import mean_std, paired_interval, paired_ratio_interval, t975

from .conftest import WORDS


def test_paired_interval_on_hand_made_numbers():
    r = paired_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert (r["n"], r["mean"], r["std"]) == (3, 2.0, 1.0)
    half = 4.303 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert r["ci95"] == pytest.approx([2.0 - half, 2.0 + half])
    r = paired_interval([5.0, 5.5], [4.0, 4.0])  # differences 1.0, 1.5: sd = 0.3536, t(0.975, 1) = 12.706
    assert r["ci95"] == pytest.approx([1.25 - 12.706 * 0.25, 1.25 + 12.706 * 0.25], abs=1e-9)
    assert paired_interval([1.0], [0.5])["ci95"] is None
    assert mean_std([2.0, 4.0]) == (3.0, pytest.approx(math.sqrt(2)))
    assert t975(40) == pytest.approx(2.0211, abs=1e-4) and t975(1000) == pytest.approx(1.9623, abs=1e-4)
    with pytest.raises(ValueError):
        paired_interval([1.0], [1.0, 2.0])


def test_the_ratio_interval_is_fiellers():
    # a denominator without spread: the interval is the numerator's t-interval divided by it
    r = paired_ratio_interval([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    half = 4.303 / math.sqrt(3)
    assert r["ratio"] == 1.0 and r["ci95"] == pytest.approx([(2.0 - half) / 2, (2.0 + half) / 2])
    # at each end the paired differences x - R y sit exactly at their t-interval's edge (Fieller's definition)
    x, y = [0.05, 0.02, 0.06, 0.03, 0.04], [0.06, 0.05, 0.08, 0.04, 0.07]
    r = paired_ratio_interval(x, y)
    lo, hi = r["ci95"]
    assert lo < r["ratio"] < hi and r["ratio"] == pytest.approx(0.2 / 0.3)
    for end, edge in ((lo, 0), (hi, 1)):
        assert paired_interval(x, [end * v for v in y])["ci95"][edge] == pytest.approx(0.0, abs=1e-12)
    # a denominator whose own interval holds 0: unbounded, None
    assert paired_ratio_interval([0.1, 0.2, 0.1], [0.1, -0.1, 0.05])["ci95"] is None
    with pytest.raises(ValueError):
        paired_ratio_interval([1.0], [0.0])


def test_arm_specs_parse_or_fail_with_the_syntax():
    from pathlib import Path

    arm = parse_arm("renorm:--set distill.kd_variant=topk_renorm --set distill.alpha=0.3", default_cache=Path("c.zarr"))
    assert arm.mode == "cached" and arm.overrides == ["distill.kd_variant=topk_renorm", "distill.alpha=0.3"]
    assert arm.cache == Path("c.zarr")
    assert parse_arm("t2:--cache other.zarr", default_cache=Path("c.zarr")).cache == Path("other.zarr")
    assert parse_arm("plain2:--baseline --set training.lr=1e-3", default_cache=None).mode == "baseline"
    for bad in ("noseparator", "x:--frobnicate", "bad name:--online"):
        with pytest.raises(BblError, match="--arm"):
            parse_arm(bad, default_cache=None)
    with pytest.raises(BblError, match="needs a cache"):
        parse_arm("x:--set distill.alpha=0.1", default_cache=None)


def test_cached_and_plain_runs_of_one_seed_see_the_same_window_order():
    from bbl.cache import shuffled_order
    from bbl.data.windows import window_permutation

    for epoch in range(3):
        assert shuffled_order(3072, 256, seed=4, epoch=epoch).tolist() == \
            window_permutation(3072, seed=4, epoch=epoch).tolist()


def test_study_presets_keep_teachers_larger_than_the_student():
    from bbl.config import load_config
    from bbl.models.build import build_model, count_parameters

    def params(preset):
        return count_parameters(build_model(load_config(preset).model, 4096, device="meta"))

    student, gpt2, llama = params("student-study"), params("gpt2-study"), params("llama-study")
    assert 1.5e6 < student < 2.5e6
    assert gpt2 >= 2 * student and llama >= 3.5 * student
    for p in ("student-study", "gpt2-study", "llama-study"):
        t = load_config(p).training
        assert (t.data_seed, t.max_train_windows, t.dev_windows) == (0, 3072, 512)  # one fixed subset for all


def test_demo_presets_are_the_rescaled_ones():
    """`make demo` (pipeline preset cpu): vocabulary 4,096 and T = 1, the study's student, teachers well past it."""
    from bbl.config import load_config
    from bbl.models.build import build_model, count_parameters
    from bbl.pipeline import load_pipeline_preset

    def params(preset):
        return count_parameters(build_model(load_config(preset).model, 4096, device="meta"))

    demo = load_pipeline_preset("cpu")
    assert (demo.vocab_size, demo.temperature, demo.student) == (4096, 1.0, "student-cpu")
    assert load_config("student-cpu").model == load_config("student-study").model
    student, gpt2, llama = params("student-cpu"), params("gpt2-cpu"), params("llama-cpu")
    assert gpt2 >= 1.7 * student and llama >= 3 * student
    embeddings = 2 * 4096 * load_config("student-cpu").model.hidden_size  # untied input and output tables
    assert embeddings / student < 0.6
    for p in ("student-cpu", "gpt2-cpu", "llama-cpu"):
        t = load_config(p).training
        assert (t.data_seed, t.max_train_windows, t.dev_windows) == (0, 3072, 256)
    assert load_config("gpt2-cpu").training.epochs == load_config("llama-cpu").training.epochs == 2
    assert load_config("student-cpu").training.epochs == 1


PAIRS_PER_FILE = 4


def write_tasks(root):
    """Hand-made minimal-pair files: 2 BLiMP paradigms, 1 supplement file, 4 pairs each."""
    rng = random.Random(0)
    for sub, files in (("blimp", ("p1", "p2")), ("supplement", ("s1",))):
        d = root / sub
        d.mkdir()
        for f in files:
            rows = []
            for _ in range(PAIRS_PER_FILE):
                words = [rng.choice(WORDS) for _ in range(5)]
                rows.append({"sentence_good": " ".join(words) + " .", "sentence_bad": " ".join(words[::-1]) + " .",
                             "UID": f, "linguistics_term": "t"})
            (d / f"{f}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root / "blimp", root / "supplement"


@pytest.mark.slow
def test_tiny_study_two_seeds_every_arm_then_resume(trained_cache, prepared, tmp_path):
    teachers, cache = trained_cache
    blimp, supplement = write_tasks(tmp_path)
    w = tmp_path / "study"
    logs = []
    kw = {"cache": cache, "teachers": teachers, "seeds": 2, "arm_specs": ["renorm:--set distill.kd_variant=topk_renorm"],
          "overrides": ["training.max_train_windows=null"], "blimp_dir": blimp, "supplement_dir": supplement}
    study = run_study("student-tiny", prepared, w, log=logs.append, **kw)
    assert set(study["arms"]) == {"baseline", "cached", "online", "renorm"}
    n_files = {"blimp": len(list(blimp.glob("*.jsonl"))), "supplement": len(list(supplement.glob("*.jsonl")))}
    for arm in study["arms"].values():
        assert [r["seed"] for r in arm["runs"]] == [0, 1]
        for r in arm["runs"]:
            assert r["best_dev_ce"] == pytest.approx(min(ce for _, ce in r["curve"]), rel=1e-6)  # best eval
            for task in ("blimp", "supplement"):  # a mean over files of k/4 correct pairs: a multiple of 1/(4n)
                assert r[f"{task}_pairs"] == PAIRS_PER_FILE * n_files[task]
                assert r[task] * r[f"{task}_pairs"] == pytest.approx(round(r[task] * r[f"{task}_pairs"]), abs=1e-9)
        d = arm["vs_baseline"]["best_dev_ce"]
        diffs = [a["best_dev_ce"] - b["best_dev_ce"] for a, b in zip(arm["runs"], study["arms"]["baseline"]["runs"],
                                                                      strict=True)]
        assert d["mean"] == pytest.approx(np.mean(diffs))
        half = 12.706 * np.std(diffs, ddof=1) / np.sqrt(2)  # t(0.975, 1 df) x the standard error of 2 paired diffs
        assert d["ci95"] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half], abs=1e-12)
    runs = study["arms"]["cached"]["runs"]
    assert runs[0]["best_dev_ce"] != runs[1]["best_dev_ce"]  # seeds differ ...
    base0 = json.loads((w / "runs" / "baseline" / "seed0" / "bbl_run.json").read_text())
    cached0 = json.loads((w / "runs" / "cached" / "seed0" / "bbl_run.json").read_text())
    assert base0["config"]["training"]["data_seed"] == cached0["config"]["training"]["data_seed"] == 0  # ... data not
    assert cached0["distill_mode"] == "cached"
    online0 = json.loads((w / "runs" / "online" / "seed0" / "bbl_run.json").read_text())
    assert online0["distill_mode"] == "online" and online0["temperature"] == 2.0  # the cache's temperature
    assert set(study["teachers"]) == {t.name for t in teachers}
    saved = json.loads((w / "study.json").read_text())
    assert saved["arms"]["cached"]["best_dev_ce"]["mean"] == pytest.approx(np.mean([r["best_dev_ce"] for r in runs]))
    md = (w / "study.md").read_text()
    assert "| cached | 2 |" in md and "| renorm | 2 |" in md and "teacher" in md
    # the budget line: the distilled arms' words include their teachers', the baseline's do not
    base_words = study["arms"]["baseline"]["runs"][0]["words_seen"]
    runs_words = study["arms"]["cached"]["runs"][0]
    teacher_words = sum(json.loads((t / "bbl_run.json").read_text())["ledger"]["words_seen"] for t in teachers)
    assert base_words == runs_words["words_seen"] > 0  # same windows, same steps
    assert runs_words["words_seen_with_teachers"] == base_words + teacher_words
    assert "## Words seen (the BabyLM budget)" in md and f"| {(base_words + teacher_words) / 1e6:.3f} |" in md
    assert (w / "curves.png").stat().st_size > 1000
    # a re-run skips everything; a lost run (as if the study was killed during it) is redone alone
    logs.clear()
    import shutil

    shutil.rmtree(w / "runs" / "renorm" / "seed1")
    run_study("student-tiny", prepared, w, log=logs.append, **kw)
    redone = [line for line in logs if ": bbl " in line]
    assert len(redone) == 2 and all("renorm/seed1" in line for line in redone)  # its training, then its eval
    assert "bbl distill" in redone[0] and "bbl eval" in redone[1]
    steps = len(study["arms"]) * kw["seeds"] * 2 + len(teachers)  # a training and an eval per run; teacher evals
    assert sum("up to date, skipped" in line for line in logs) == steps - len(redone)


def test_job_envs_split_the_cpus_and_leave_one_job_alone(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(5)))
    assert job_envs(1) == [{}]  # one job: the runner's environment as it is
    envs = job_envs(2)
    assert [e["OMP_NUM_THREADS"] for e in envs] == ["2", "2"]  # 5 CPUs // 2 jobs
    assert all(e["MKL_NUM_THREADS"] == e["OMP_NUM_THREADS"] for e in envs)
    assert [e["OMP_NUM_THREADS"] for e in job_envs(8)] == ["1"] * 8  # never 0 threads


@pytest.mark.slow
def test_parallel_jobs_give_the_same_study_as_one_job(trained_cache, prepared, tmp_path, monkeypatch):
    _, cache = trained_cache
    blimp, supplement = write_tasks(tmp_path)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})  # 2 jobs of 1 thread on any machine
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the one-job study's runs use 1 thread too: same arithmetic
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    kw = {"cache": cache, "seeds": 2, "overrides": ["training.max_train_windows=null"], "blimp_dir": blimp,
          "supplement_dir": supplement}
    logs = []
    two = run_study("student-tiny", prepared, tmp_path / "two", jobs=2, log=logs.append, **kw)
    one = run_study("student-tiny", prepared, tmp_path / "one", jobs=1, log=lambda *_: None, **kw)
    assert two["jobs"] == 2 and one["jobs"] == 1
    for arm in ("baseline", "cached"):
        for a, b in zip(two["arms"][arm]["runs"], one["arms"][arm]["runs"], strict=True):
            assert a["seed"] == b["seed"]
            assert a["best_dev_ce"] == b["best_dev_ce"] and a["blimp"] == b["blimp"]
    assert sum(": done in" in line for line in logs) == 2 * 2 * 2  # every run trained and scored once
    saved = json.loads((tmp_path / "two" / "study.json").read_text())
    assert set(saved["arms"]) == {"baseline", "cached"}


def test_study_refuses_a_cache_of_other_windows_before_writing(trained_cache, prepared, tmp_path):
    teachers, cache = trained_cache
    blimp, supplement = write_tasks(tmp_path)
    with pytest.raises(BblError, match="other windows"):
        run_study("student-tiny", prepared, tmp_path / "w", cache=cache, seeds=2, blimp_dir=blimp,
                  supplement_dir=supplement)  # student-tiny trains on 64 windows, the cache holds all
    assert not (tmp_path / "w").exists()


def test_data_seed_fixes_the_windows_across_seeds(prepared):
    from bbl.config import load_config
    from bbl.data.prepared import PreparedData
    from bbl.train.batching import load_windows

    data = PreparedData(prepared)

    def windows(*overrides):
        train, dev = load_windows(load_config("student-tiny", ["training.max_train_windows=16",
                                                               "training.dev_windows=8", *overrides]), data)
        return train.indices.tolist(), dev.indices.tolist()

    assert windows("training.seed=0", "training.data_seed=0") == windows("training.seed=1", "training.data_seed=0")
    assert windows("training.seed=0") != windows("training.seed=1")  # without it, the seed picks the subsets too


# --- the other zero-shot tasks (issue 23): the eval command, the numbers collected, the report, bad input ---

STUDY_ARGV_TAIL = ["--out", "o", "--blimp-dir", "b", "--supplement-dir", "s", "--batch-size", "256"]


def test_default_eval_command_is_the_one_older_studies_fingerprinted():
    """A study started before --tasks resumes without re-running its evals: the default command is byte-identical."""
    from pathlib import Path

    from bbl.study.run import _eval_argv

    args = (Path("m"), Path("o"), Path("b"), Path("s"))
    assert _eval_argv(*args, None) == ["eval", "m", "--tasks", "blimp,supplement", *STUDY_ARGV_TAIL]
    assert _eval_argv(*args, 8, ("blimp", "supplement"), {}) == \
        ["eval", "m", "--tasks", "blimp,supplement", *STUDY_ARGV_TAIL, "--max-pairs", "8"]


def write_other_tasks(root):
    """Hand-made entity-tracking and WUG data (2 rows each)."""
    et, wug = root / "entity_tracking", root / "wug_adj"
    et.mkdir()
    wug.mkdir()
    rows = [{"input_prefix": "the box holds", "options": [" a cat", " a dog"], "numops": n} for n in (0, 1)]
    (et / "regular.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = [{"sentences": "a wug is wuggy .\ta wug is wuggness .", "ratio": r} for r in (0.2, 0.7)]
    (wug / "wug_adj_nominalization.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"entity_tracking": et, "wug_adj": wug}


def test_other_tasks_add_their_names_and_data_to_the_eval_command(tmp_path):
    from pathlib import Path

    from bbl.study.run import _eval_argv, check_tasks

    blimp, supplement = write_tasks(tmp_path)
    data = write_other_tasks(tmp_path)
    assert check_tasks(["supplement", "blimp"], {}, blimp, supplement) == (["blimp", "supplement"], {})
    tasks, task_data = check_tasks(["wug_adj", "blimp", "supplement", "entity_tracking"], data, blimp, supplement)
    assert tasks == ["blimp", "supplement", "entity_tracking", "wug_adj"]  # the suite's order, whatever was typed
    argv = _eval_argv(Path("m"), Path("o"), Path("b"), Path("s"), 8, tasks, task_data)
    assert argv == ["eval", "m", "--tasks", "blimp,supplement,entity_tracking,wug_adj", *STUDY_ARGV_TAIL,
                    "--task-data", f"entity_tracking={data['entity_tracking']}",
                    "--task-data", f"wug_adj={data['wug_adj']}", "--pair-scoring", "bos", "--max-pairs", "8"]


def write_study_runs(workdir, teacher, numbers):
    """A finished study's files by hand: per arm and seed a run (bbl_run.json, metrics.jsonl) and its eval JSON,
    and the teacher's run and eval; `numbers` = {arm: [per seed {task: results}], "teacher": {task: results}}."""
    for arm, per_seed in numbers.items():
        if arm == "teacher":
            continue
        for seed, tasks in enumerate(per_seed):
            d = workdir / "runs" / arm / f"seed{seed}"
            (d / "eval").mkdir(parents=True)
            (d / "eval" / f"seed{seed}.json").write_text(json.dumps({"tasks": tasks}))
            run = {"best_eval_loss": 5.0 - 0.1 * seed, "global_step": 10, "parameters": 100,
                   "ledger": {"words_seen": 1000}}
            (d / "bbl_run.json").write_text(json.dumps(run))
            (d / "metrics.jsonl").write_text(json.dumps({"step": 10, "eval_loss": run["best_eval_loss"]}) + "\n")
    teacher.mkdir(parents=True)
    (teacher / "bbl_run.json").write_text(json.dumps({"best_eval_loss": 4.0, "parameters": 400}))
    (workdir / "teachers" / teacher.name).mkdir(parents=True)
    (workdir / "teachers" / teacher.name / f"{teacher.name}.json").write_text(json.dumps({"tasks": numbers["teacher"]}))


def eval_tasks(blimp, ewok, rho, eye, spr):
    return {"blimp": {"overall": blimp, "pairs": 8}, "supplement": {"overall": 0.5, "pairs": 4},
            "ewok": {"overall": ewok}, "wug_adj": {"spearman": rho},
            "reading": {"eye_tracking": eye, "self_paced_reading": spr}}


def test_collect_reports_the_other_tasks_with_paired_intervals(tmp_path):
    from bbl.study.arms import Arm
    from bbl.study.report import tasks_table, write_study
    from bbl.study.run import collect

    teacher = tmp_path / "t" / "gpt2"
    write_study_runs(tmp_path / "w", teacher, {
        "baseline": [eval_tasks(0.6, 0.50, 0.10, 0.010, 0.020), eval_tasks(0.6, 0.56, 0.30, 0.012, 0.020)],
        "cached": [eval_tasks(0.7, 0.60, 0.20, 0.011, 0.030), eval_tasks(0.7, 0.62, 0.30, 0.014, 0.040)],
        "teacher": eval_tasks(0.8, 0.75, 0.5, 0.03, 0.05)})
    arms = [Arm("baseline", "baseline"), Arm("cached", "cached", ["c.zarr"])]
    tasks = ["blimp", "supplement", "ewok", "wug_adj", "reading"]
    study = collect(tmp_path / "w", arms, 2, [teacher], {"runs": {}}, tasks=tasks)
    assert study["metrics"] == ["best_dev_ce", "blimp", "supplement", "ewok", "wug_adj", "reading_eye_tracking",
                                "reading_self_paced"]
    cached = study["arms"]["cached"]
    assert [r["ewok"] for r in cached["runs"]] == [0.60, 0.62]
    assert cached["ewok"]["mean"] == pytest.approx(0.61) and cached["ewok"]["std"] == pytest.approx(math.sqrt(2e-4))
    ewok = cached["vs_baseline"]["ewok"]  # differences 0.10, 0.06: mean 0.08, sd 0.02 sqrt(2), t(0.975, 1) 12.706
    half = 12.706 * 0.02  # t x sd / sqrt(2)
    assert ewok["mean"] == pytest.approx(0.08) and ewok["ci95"] == pytest.approx([0.08 - half, 0.08 + half])
    assert cached["vs_baseline"]["wug_adj"]["mean"] == pytest.approx(0.05)
    assert cached["vs_baseline"]["reading_self_paced"]["mean"] == pytest.approx(0.015)
    assert cached["vs_baseline"]["blimp"]["mean"] == pytest.approx(0.1)  # the default metrics as before
    assert "entity_tracking" not in cached  # not asked, not collected
    assert study["teachers"]["gpt2"]["ewok"] == 0.75 and study["teachers"]["gpt2"]["wug_adj"] == 0.5
    study.update(config="student-tiny", date="2026-12-01", max_pairs_per_file=None)
    write_study(study, tmp_path / "w")
    md = (tmp_path / "w" / "study.md").read_text()
    assert "## The other zero-shot tasks" in md and "| EWoK (%) | Δ [95% CI] |" in md
    assert "| cached | 2 | 61.0 ± 1.4 | +8.0 [-17.4, +33.4] | 0.250 ± 0.071 | +0.050 [-0.585, +0.685] |" in md
    assert "| teacher gpt2 | 1 | 75.0 |  | 0.500 |  | 3.00 |  | 5.00 |  |" in md
    assert json.loads((tmp_path / "w" / "study.json").read_text())["arms"]["cached"]["ewok"]["mean"] == \
        pytest.approx(0.61)
    default = collect(tmp_path / "w", arms, 2, [teacher], {"runs": {}})  # the default tasks: no new numbers
    assert default["metrics"] == ["best_dev_ce", "blimp", "supplement"] and "ewok" not in default["arms"]["cached"]
    assert tasks_table(default) == ""


@pytest.mark.parametrize("args, message", [
    (["--tasks", "blimp,supplement,nope"], "unknown task(s) nope"),
    (["--tasks", "blimp,supplement,perplexity"], "unknown task(s) perplexity"),
    (["--tasks", "blimp,ewok"], "always scores blimp and supplement"),
    (["--tasks", "blimp,supplement,ewok", "--task-data", "ewok=missing.zip"], "missing.zip"),
    (["--task-data", "wug_adj=somewhere"], "--tasks does not name wug_adj"),
])
def test_bad_study_tasks_are_one_error_line_before_anything_is_written(prepared, tmp_path, args, message):
    from .helpers import error_lines, run

    blimp, supplement = write_tasks(tmp_path)
    w = tmp_path / "w"
    result = run(["study", "student-tiny", "--data", prepared, "--workdir", w, "--blimp-dir", blimp,
                  "--supplement-dir", supplement, *args])
    assert result.exit_code == 1 and len(error_lines(result)) == 1 and message in error_lines(result)[0]
    assert not w.exists()


def test_pipeline_eval_tasks_reach_the_study_and_eval_stages(tmp_path, monkeypatch):
    """The default eval_tasks leave the commands as they were; more tasks add --tasks and their data."""
    import dataclasses

    import bbl.pipeline as pipeline

    data = tmp_path / "data"
    for d in ("babylm_10M", "babylm_dev", "blimp_filtered", "supplement_filtered", "wug_adj_nominalization"):
        (data / d).mkdir(parents=True)
    for preset in ("cpu-study", "tiny"):
        argv = {s.key: s.argv for s in pipeline.build_stages(preset, data, tmp_path / "w")}
        assert "--tasks" not in argv.get("study", argv.get("eval"))
    load = pipeline.load_pipeline_preset
    monkeypatch.setattr(pipeline, "load_pipeline_preset", lambda name: dataclasses.replace(
        load(name), eval_tasks=["reading", "blimp", "supplement", "wug_adj"]))
    reading = tmp_path / "reading.csv"
    reading.write_text("x\n")
    study = {s.key: s.argv for s in pipeline.build_stages("cpu-study", data, tmp_path / "w",
                                                          task_data={"reading": reading})}["study"]
    tail = ["--tasks", "blimp,supplement,wug_adj,reading", "--task-data",
            f"wug_adj={data / 'wug_adj_nominalization'}", "--task-data", f"reading={reading}"]
    assert study[-len(tail):] == tail
    ev = {s.key: s.argv for s in pipeline.build_stages("tiny", data, tmp_path / "w",
                                                       task_data={"reading": reading})}["eval"]
    assert ev[ev.index("--tasks") + 1] == "blimp,supplement,wug_adj,reading,perplexity"
    with pytest.raises(BblError, match="reading"):  # no reading/ in DATA and none given
        pipeline.build_stages("cpu-study", data, tmp_path / "w")


def test_pipeline_eval_suite_picks_each_tasks_dir_and_a_study_cache_arm_keeps_the_tasks(tmp_path, monkeypatch):
    """eval_suite fast reads ewok_fast, and falls back to entity_tracking (full) when there is no fast one; a study
    with an extra cache arm still passes --tasks and the task data (the loop once reused their variable)."""
    import dataclasses

    import bbl.pipeline as pipeline

    data = tmp_path / "data"
    for d in ("babylm_10M", "babylm_dev", "blimp_filtered", "supplement_filtered", "ewok_fast", "entity_tracking"):
        (data / d).mkdir(parents=True)
    load = pipeline.load_pipeline_preset
    tasks = ["blimp", "supplement", "ewok", "entity_tracking"]

    def preset(suite, **kw):
        monkeypatch.setattr(pipeline, "load_pipeline_preset", lambda name: dataclasses.replace(
            load(name), eval_tasks=tasks, eval_suite=suite, **kw))

    tail = ["--tasks", "blimp,supplement,ewok,entity_tracking", "--task-data", f"ewok={data / 'ewok_fast'}",
            "--task-data", f"entity_tracking={data / 'entity_tracking'}"]
    for suite in ("fast", "full"):  # each suite falls back to the dir that exists
        preset(suite)
        ev = {s.key: s.argv for s in pipeline.build_stages("tiny", data, tmp_path / "w")}["eval"]
        i = ev.index("--tasks")
        assert ev[i:i + 6] == ["--tasks", "blimp,supplement,ewok,entity_tracking,perplexity", *tail[2:]]
    preset("fast", study=pipeline.StudySettings(seeds=2, caches={"t2": 2.0}))
    steps = {s.key: s.argv for s in pipeline.build_stages("cpu-study", data, tmp_path / "w")}
    assert "dump-logits-t2" in steps
    study = steps["study"]
    assert study[-len(tail):] == tail
    assert f"cached-t2:--cache {tmp_path / 'w' / 'cache' / 'ensemble-t2.zarr'}" in study
    preset("medium")
    with pytest.raises(BblError, match="eval_suite 'medium'"):
        pipeline.build_stages("tiny", data, tmp_path / "w")
