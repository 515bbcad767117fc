"""Fault injection: does bbl lose or strand a user's work when it is killed, raced or fed bad input?

Runs real `bbl` processes on the real BabyLM data (../shared/data) and reports, per category, how many cases
*survived* (resumed or refused cleanly, result equal to an uninterrupted run), were *lost* (finished, but with a
result that differs or with a user's files gone) or got *stuck* (could not finish after 3 re-runs):

1. random kills: `bbl pipeline --preset tiny` SIGKILLed (its whole process group) at a uniformly random moment of
   a straight run's whole wall time (measured end to end, eval included), then re-run until it finishes; the
   cache's chunk files must be byte-equal to the straight run's, every model's best dev CE equal, and every
   evaluation number equal.
2. kills at each stage's durable write: one workdir, killed while a checkpoint dir of each training stage exists
   without its trainer_state.json (the Trainer writes that last), while the dump has written its first chunk
   but not its last, and while the eval has written a model's JSON but not results.json; then re-run; same
   equality.
2b. `bbl eval` of the reference's models killed once its first model's JSON exists, then re-run as it was and
   again with --overwrite: both finish, with the numbers of an uninterrupted eval.
2c. `bbl dump-logits` (the pipeline's own command) killed 0-80 ms after its store appears, while it creates its
   arrays and attributes (--kills times), then re-run: it must finish with the reference's chunk files.
3. a sweep worker killed during its second trial, a fine-tuning killed in its second task: re-runs finish, no
   trial stays running, no finished trial's settings are proposed again, the first task is not redone, no
   temporary dir is left.
4. two writers at once (distill, dump-logits) on one output: exactly one runs, the other is one line naming it.
5. the bad-input table: each invocation must exit non-zero with one `error:` line, no traceback, nothing written.

    python benchmarks/fault_injection.py --kills 10 --json docs/results/fault-injection.json

Parts (--only): random, writes, eval, dump-create, sweep, finetune, writers, bad.

Takes ~25 min on 2 CPU cores at --kills 10 (each tiny pipeline run is ~1.5 min). The slow test tier runs a
smaller version (tests/test_fault_injection.py).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
BBL = [sys.executable, "-m", "bbl"]


CASES_LOG: Path | None = None
"""Where each finished case is appended as a JSON line (beside --json), so a run cut short keeps what it measured."""


def log(msg: str) -> None:
    print(f"[fault] {msg}", flush=True)


def record(case: dict) -> dict:
    """Log a finished case and append it to `CASES_LOG`."""
    log(f"{case}")
    if CASES_LOG is not None:
        with open(CASES_LOG, "a") as f:
            f.write(json.dumps(case) + "\n")
    return case


def start(argv: list[str], **kw) -> subprocess.Popen:
    """A bbl command in its own process group (so a kill reaches its children, as a terminal's would)."""
    return subprocess.Popen([*BBL, *map(str, argv)], env=ENV, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def bbl(argv: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*BBL, *map(str, argv)], env=ENV, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------
# what a finished tiny pipeline holds, to compare runs


def cache_files(cache: Path) -> dict:
    """sha256 of every file of a cache store, the root's zarr.json aside (it holds timings)."""
    return {str(q.relative_to(cache)): hashlib.sha256(q.read_bytes()).hexdigest()
            for q in sorted(cache.rglob("*")) if q.is_file() and q.relative_to(cache) != Path("zarr.json")}


def with_option(argv: list, option: str, value) -> list:
    """`argv` with the value after `option` replaced by `value`."""
    at = argv.index(option)
    return [*argv[:at + 1], value, *argv[at + 2:]]


def outcome(workdir: Path) -> dict:
    """The cache's files (`cache_files`), each model's best dev CE and every number of the evaluation
    (`eval_numbers`), of a finished tiny pipeline."""
    chunks = cache_files(workdir / "cache" / "ensemble.zarr")
    ce = {}
    for run in sorted(workdir.glob("teachers/*/bbl_run.json")) + sorted(workdir.glob("student/*/bbl_run.json")):
        ce[run.parent.name] = json.loads(run.read_text())["best_eval_loss"]
    return {"chunks": chunks, "dev_ce": ce, "eval": eval_numbers(workdir / "eval")}


def eval_numbers(out: Path) -> dict:
    """{"model/task/key": number} of every number a finished `bbl eval` reports (results.json); {} when none."""
    file = out / "results.json"
    if not file.is_file():
        return {}
    numbers = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if "second" not in k and "time" not in k:  # timings differ run to run
                    walk(f"{prefix}/{k}", v)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers[prefix] = float(value)

    for record in json.loads(file.read_text()):
        walk(record["model"], record.get("tasks", {}))
    return numbers


def same_numbers(a: dict, b: dict, tol: float = 1e-6) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol * max(1.0, abs(b[k])) for k in a)


def same(a: dict, b: dict) -> bool:
    return a["chunks"] == b["chunks"] and same_numbers(a["dev_ce"], b["dev_ce"]) and same_numbers(a["eval"],
                                                                                                b["eval"])


def pipeline_argv(data: Path, workdir: Path) -> list:
    return ["pipeline", "--preset", "tiny", "--corpus", data, "--workdir", workdir]


def finish(data: Path, workdir: Path, tries: int = 3) -> tuple[bool, int, str]:
    """Re-run the pipeline until it exits 0; (finished, re-runs, last error line)."""
    last = ""
    for i in range(1, tries + 1):
        r = bbl(pipeline_argv(data, workdir))
        if r.returncode == 0:
            return True, i, ""
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
    return False, tries, last


def judge(ref: dict, data: Path, workdir: Path, case: dict) -> dict:
    ok, reruns, error = finish(data, workdir)
    case.update(reruns=reruns)
    if not ok:
        case.update(verdict="stuck", error=error)
    else:
        case["verdict"] = "survived" if same(ref, outcome(workdir)) else "lost"
    return record(case)


def random_kills(data: Path, root: Path, ref: dict, wall: float, n: int, rng: random.Random,
                 not_kills: list) -> list[dict]:
    """`n` kills, each at U(1 s, wall). A run that finishes before its kill time (the machine was quieter than when
    `wall` was measured) is no kill: it goes to `not_kills` (not counted) and the case draws again, from U(1 s, that run's
    own wall time) from then on, so every counted case is killed mid-run."""
    cases = []
    for i in range(n):
        workdir = root / f"kill-{i}"
        while True:
            at = rng.uniform(1.0, wall)
            t0 = time.perf_counter()
            proc = start(pipeline_argv(data, workdir))
            try:
                proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                pass
            ran_out = proc.poll() is not None
            kill_group(proc)
            if not ran_out:
                break
            wall = min(wall, time.perf_counter() - t0)
            not_kills.append(record({"kind": "random", "not_a_kill": True, "at_s": round(at, 1),
                                     "finished_in_s": round(wall, 1)}))
            shutil.rmtree(workdir, ignore_errors=True)
        state = json.loads((workdir / "pipeline_state.json").read_text()) if (
            workdir / "pipeline_state.json").is_file() else {}
        stage = next((k for k, v in state.get("stages", {}).items() if "seconds" not in v), "(between stages)")
        cases.append(judge(ref, data, workdir, {"kind": "random", "at_s": round(at, 1), "stage": stage}))
        shutil.rmtree(workdir, ignore_errors=True)
    return cases


def _partial_checkpoint(out: Path) -> bool:
    return any(not (Path(c) / "trainer_state.json").is_file() for c in glob.glob(str(out / "checkpoints" / "checkpoint-*")))


def _partial_eval(out: Path) -> bool:
    """`bbl eval` has written a model's JSON (the first file it writes per model) but not results.json (its last)."""
    return out.is_dir() and not (out / "results.json").is_file() and any(
        p.suffix == ".json" and not p.name.startswith(".") for p in out.iterdir())


def _partial_dump(cache: Path) -> bool:
    done = cache / "chunk_done" / "c"
    n = len(list(done.iterdir())) if done.is_dir() else 0
    return n >= 1


def kill_when(argv: list, condition, timeout: float = 600) -> bool:
    """Start `argv`, SIGKILL its group the moment `condition()` holds (polled every ms); whether it did."""
    proc = start(argv)
    t0 = time.time()
    hit = False
    while proc.poll() is None and time.time() - t0 < timeout:
        if condition():
            hit = True
            break
        time.sleep(0.001)
    kill_group(proc)
    return hit


def durable_write_kills(data: Path, root: Path, ref: dict) -> list[dict]:
    """One workdir, killed once inside each stage's durable write, in pipeline order, then finished."""
    workdir = root / "write-kills"
    targets = [("teacher-gpt2", lambda: _partial_checkpoint(workdir / "teachers" / "gpt2")),
               ("teacher-llama", lambda: _partial_checkpoint(workdir / "teachers" / "llama")),
               ("dump-logits", lambda: _partial_dump(workdir / "cache" / "ensemble.zarr")),
               ("distill", lambda: _partial_checkpoint(workdir / "student" / "distilled")),
               ("baseline", lambda: _partial_checkpoint(workdir / "student" / "baseline")),
               ("eval", lambda: _partial_eval(workdir / "eval"))]
    cases = []
    for stage, condition in targets:
        hit = kill_when(pipeline_argv(data, workdir), condition)
        cases.append({"kind": "durable-write", "stage": stage, "landed_in_write": hit})
        log(f"killed in {stage}'s write: {hit}")
    ok, reruns, error = finish(data, workdir)
    verdict = ("survived" if same(ref, outcome(workdir)) else "lost") if ok else "stuck"
    for c in cases:
        c.update(verdict=verdict, reruns=reruns, **({"error": error} if error else {}))
        record(c)
    return cases


def dump_create_kills(data: Path, root: Path, ref_dir: Path, n: int, rng: random.Random) -> list[dict]:
    """The pipeline's own `bbl dump-logits` (on the reference's teachers) SIGKILLed U(0, 80 ms) after its store
    appears, while it creates its arrays and attributes (run 4 found a kill there stranded every re-run), then
    re-run as it was: it must finish with the reference's chunk files."""
    sys.path.insert(0, str(REPO))
    from bbl.pipeline import build_stages

    stage = next(s for s in build_stages("tiny", data, ref_dir) if s.key == "dump-logits")
    want = cache_files(ref_dir / "cache" / "ensemble.zarr")
    cases = []
    for i in range(n):
        cache = root / f"dump-create-{i}.zarr"
        shutil.rmtree(cache, ignore_errors=True)
        cmd = with_option(stage.argv, "--cache", cache)
        delay = rng.uniform(0.0, 0.08)
        proc = start(cmd)
        while not cache.exists() and proc.poll() is None:
            time.sleep(0.001)
        time.sleep(delay)
        finished = proc.poll() is not None
        kill_group(proc)
        left = sorted(q.name for q in cache.iterdir()) if cache.is_dir() else []
        r = bbl(cmd)
        case = {"kind": "dump-create", "delay_s": round(delay, 4), "finished_before_kill": finished,
                "left_behind": left, "exit": r.returncode}
        if r.returncode != 0:
            case.update(verdict="stuck", error=(r.stderr.strip().splitlines() or ["?"])[-1])
        else:
            case["verdict"] = "survived" if cache_files(cache) == want else "lost"
        cases.append(record(case))
        shutil.rmtree(cache, ignore_errors=True)
    return cases


def eval_kill(data: Path, root: Path, ref_dir: Path) -> list[dict]:
    """`bbl eval` of the reference's models (the pipeline's own eval command, `bbl.pipeline.build_stages`) SIGKILLed
    once its first model's JSON exists, then re-run: as it was, and with --overwrite. Each must finish with the
    reference evaluation's numbers."""
    sys.path.insert(0, str(REPO))
    from bbl.pipeline import build_stages

    stage = next(s for s in build_stages("tiny", data, ref_dir) if s.key == "eval")
    want = eval_numbers(ref_dir / "eval")
    cases = []
    for rerun in ("same command", "--overwrite"):
        out = root / f"eval-kill-{rerun.strip('-').replace(' ', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = with_option(stage.argv, "--out", out)
        hit = kill_when(cmd, lambda: _partial_eval(out))  # noqa: B023
        r = bbl([*cmd, *(["--overwrite"] if rerun == "--overwrite" else [])])
        case = {"kind": "eval-kill", "rerun": rerun, "landed_after_first_model": hit, "exit": r.returncode}
        if r.returncode != 0:
            case.update(verdict="stuck", error=(r.stderr.strip().splitlines() or ["?"])[-1])
        else:
            case["verdict"] = "survived" if same_numbers(eval_numbers(out), want) else "lost"
        cases.append(record(case))
    return cases


def sweep_kill(data: Path, root: Path, ref_dir: Path) -> dict:
    """A seeded sweep killed during its second trial, then re-run."""
    workdir = root / "sweep"
    space = root / "space.yaml"
    space.write_text("training.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n"
                     "training.warmup_steps: {type: int, low: 0, high: 4}\n")
    argv = ["sweep", "student-tiny", "--data", ref_dir / "prepared", "--space", space, "--trials", 4, "--workdir",
            workdir, "--sampler-seed", 0, "--pruner", "none", "--heartbeat", 1]
    hit = kill_when(argv, lambda: (workdir / "trials" / "bbl-sweep" / "0001").is_dir())  # trials/<study>/NNNN
    time.sleep(2.5)  # past two heartbeats: the dead worker's trial is stale
    r = bbl(argv)
    case = {"kind": "sweep-worker", "landed_in_trial": hit, "exit": r.returncode}
    report = json.loads((workdir / "trials.json").read_text()) if (workdir / "trials.json").is_file() else {}
    trials = report.get("trials", [])
    finished = [t for t in trials if t.get("state") in ("COMPLETE", "PRUNED", "complete", "pruned")]
    running = [t for t in trials if str(t.get("state", "")).lower() == "running"]
    settings = [json.dumps(t.get("params"), sort_keys=True) for t in finished]
    case.update(finished=len(finished), running=len(running), distinct_finished_settings=len(set(settings)))
    if r.returncode != 0:
        case["verdict"], case["error"] = "stuck", (r.stderr.strip().splitlines() or ["?"])[-1]
    else:
        case["verdict"] = "survived" if (len(finished) >= 4 and not running and len(set(settings)) == len(settings)) \
            else "lost"
    return record(case)


def finetune_kill(root: Path, ref_dir: Path, task_data: Path) -> dict:
    """A two-task fine-tuning killed during its second task, then re-run; the first task is kept as it was."""
    out = root / "finetune"
    model = ref_dir / "student" / "distilled"
    argv = ["finetune", model, "--tasks", "rte", "--tasks", "wsc", "--task-data", task_data,
            "--out", out, "--epochs", 2, "--max-train-examples", 64, "--max-valid-examples", 32, "--device", "cpu"]
    tmp_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "bbl-finetune-*")))
    first = lambda: any(out.glob("pipeline/*/main/finetune/rte/predictions.json"))  # noqa: E731
    hit = kill_when(argv, first)
    preds = next(iter(out.glob("pipeline/*/main/finetune/rte/predictions.json")), None)
    stamp = preds.read_bytes() if preds else None
    r = bbl(argv)
    leaked = set(glob.glob(os.path.join(tempfile.gettempdir(), "bbl-finetune-*"))) - tmp_before
    kept = stamp is not None and preds.is_file() and preds.read_bytes() == stamp
    case = {"kind": "finetune", "landed_in_second_task": hit, "exit": r.returncode, "first_task_kept": kept,
            "leaked_temp_dirs": len(leaked), "finished": (out / "finetune.json").is_file()}
    case["verdict"] = ("survived" if kept and not leaked and case["finished"] else "lost") if r.returncode == 0 \
        else "stuck"
    return record(case)


def two_writers(root: Path, ref_dir: Path) -> list[dict]:
    """Two identical commands started together into one output: one runs, one is refused naming it."""
    cases = []
    prepared, cache = ref_dir / "prepared", ref_dir / "cache" / "ensemble.zarr"
    teachers = sorted((ref_dir / "teachers").iterdir())
    commands = {
        "distill": ["distill", "student-tiny", "--cache", cache, "--data", prepared, "--out", root / "race-distill"],
        "dump-logits": ["dump-logits", *[a for t in teachers for a in ("--teacher", t)], "--data", prepared,
                        "--topk", 64, "--temperature", 2.0, "--seq-len", 32, "--max-windows", 64, "--batch-size", 16,
                        "--cache", root / "race.zarr"],
    }
    for name, argv in commands.items():
        procs = [start(argv), start(argv)]
        results = [p.communicate() + (p.returncode,) for p in procs]
        codes = sorted(r[2] for r in results)
        refused = [r for r in results if r[2] != 0]
        named = bool(refused) and "in use by another bbl run" in refused[0][1]
        one_line = bool(refused) and sum(line.startswith("error:") for line in refused[0][1].splitlines()) == 1
        case = {"kind": "two-writers", "command": name, "exit_codes": codes, "refused_names_holder": named}
        if name == "distill" and codes == [0, 1]:
            got = json.loads((root / "race-distill" / "bbl_run.json").read_text())["best_eval_loss"]
            want = json.loads((ref_dir / "student" / "distilled" / "bbl_run.json").read_text())["best_eval_loss"]
            case["dev_ce_equals_a_single_run"] = abs(got - want) <= 1e-6
        case["verdict"] = "survived" if codes == [0, 1] and named and one_line and case.get(
            "dev_ce_equals_a_single_run", True) else "lost"
        cases.append(record(case))
    return cases


# ---------------------------------------------------------------------------------------------------------------
# bad input: one line, nothing written, before any compute


def bad_inputs(root: Path, ref_dir: Path) -> list[dict]:
    prepared, cache = ref_dir / "prepared", ref_dir / "cache" / "ensemble.zarr"
    model = ref_dir / "student" / "distilled"
    b = root / "bad"
    b.mkdir()
    (b / "broken.yaml").write_text("model: {architecture: llama\ntraining: [\n")
    (b / "list.yaml").write_text("- a\n- b\n")
    (b / "scalar.yaml").write_text("42\n")
    (b / "empty.yaml").write_text("")
    (b / "file.txt").write_text("x")
    (b / "space-bad-choice.yaml").write_text("training.lr_scheduler: {type: choice, choices: [cosine, nope]}\n")
    (b / "space.yaml").write_text("training.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")
    (b / "empty-manifest.txt").write_text("")
    (b / "empty-dir").mkdir()
    for name, broken in (("cache-empty-meta", ""), ("cache-truncated-meta", None)):
        copy = b / f"{name}.zarr"
        shutil.copytree(cache, copy)
        meta = (copy / "zarr.json").read_text()
        (copy / "zarr.json").write_text(broken if broken is not None else meta[: len(meta) // 2])
    bad_model = b / "model-empty-config"
    shutil.copytree(model, bad_model)
    (bad_model / "config.json").write_text("")
    bad_prepared = b / "prepared-empty-manifest"
    shutil.copytree(prepared, bad_prepared)
    (bad_prepared / "manifest.json").write_text("")
    twin = b / "twin" / model.name
    shutil.copytree(model, twin)
    unwritable = Path("/sys/bbl-fault/out")
    out = lambda name: b / f"out-{name}"  # noqa: E731
    table = [
        ("--set malformed YAML", ["train-student", "student-tiny", "--data", prepared, "--set", "training.lr=[1,",
                                  "--out", out("set")]),
        ("config file malformed YAML", ["train-student", b / "broken.yaml", "--data", prepared, "--out", out("yaml")]),
        ("config is a list", ["train-student", b / "list.yaml", "--data", prepared, "--out", out("list")]),
        ("config is a scalar", ["train-student", b / "scalar.yaml", "--data", prepared, "--out", out("scalar")]),
        ("config is empty", ["train-student", b / "empty.yaml", "--data", prepared, "--out", out("empty")]),
        ("epochs = .inf", ["train-student", "student-tiny", "--data", prepared, "--set", "training.epochs=.inf",
                           "--out", out("inf")]),
        ("lr = .nan", ["train-student", "student-tiny", "--data", prepared, "--set", "training.lr=.nan", "--out",
                       out("nan")]),
        ("zero-byte zarr.json", ["distill", "student-tiny", "--cache", b / "cache-empty-meta.zarr", "--data",
                                 prepared, "--out", out("zarr0")]),
        ("truncated zarr.json", ["cache", "info", "--cache", b / "cache-truncated-meta.zarr"]),
        ("zero-byte config.json", ["eval", bad_model, "--tasks", "perplexity", "--data", prepared, "--out",
                                   out("config0")]),
        ("zero-byte manifest.json", ["train-student", "student-tiny", "--data", bad_prepared, "--out",
                                     out("manifest0")]),
        ("--out under a file (train)", ["train-student", "student-tiny", "--data", prepared, "--out",
                                        b / "file.txt" / "o"]),
        ("--out under a file (dump)", ["dump-logits", "--teacher", model, "--data", prepared, "--cache",
                                       b / "file.txt" / "o.zarr"]),
        ("unwritable --out (train)", ["train-student", "student-tiny", "--data", prepared, "--out", unwritable]),
        ("unwritable --out (eval)", ["eval", model, "--tasks", "perplexity", "--data", prepared, "--out", unwritable]),
        ("unwritable --out (dump)", ["dump-logits", "--teacher", model, "--data", prepared, "--cache", unwritable]),
        ("unwritable --out (prepare)", ["prepare", "--train-dir", b, "--dev-dir", b, "--out", unwritable]),
        ("unwritable --out (finetune)", ["finetune", model, "--tasks", "rte", "--out", unwritable]),
        ("unwritable --workdir (sweep)", ["sweep", "student-tiny", "--data", prepared, "--space", b / "space.yaml",
                                          "--trials", 1, "--workdir", unwritable]),
        ("data verify on an empty dir", ["data", "verify", b / "empty-dir"]),
        ("data verify with a zero-byte manifest", ["data", "verify", b / "empty-dir", "--manifest",
                                                   b / "empty-manifest.txt"]),
        ("study with a bad --cache", ["study", "student-tiny", "--data", prepared, "--workdir", out("study-cache"),
                                      "--cache", b / "no-such.zarr", "--seeds", 1]),
        ("study arm --set typo", ["study", "student-tiny", "--data", prepared, "--workdir", out("study-arm"),
                                  "--cache", cache, "--seeds", 1, "--arm", "x:--set distill.alhpa=0.3"]),
        ("eval --ensemble with an unusable member", ["eval", model, "--ensemble", f"{model},{b / 'empty-dir'}",
                                                     "--tasks", "perplexity", "--data", prepared, "--out",
                                                     out("ensemble")]),
        ("sweep space with an invalid choice", ["sweep", "student-tiny", "--data", prepared, "--space",
                                                b / "space-bad-choice.yaml", "--trials", 1, "--workdir",
                                                out("sweep")]),
        ("eval two models of one name", ["eval", model, twin, "--tasks", "perplexity", "--data", prepared, "--out",
                                         out("twins")]),
    ]
    cases = []
    for name, argv in table:
        before = {p: p.stat().st_mtime_ns for p in b.rglob("*")}
        t0 = time.time()
        r = bbl(argv, timeout=300)
        seconds = time.time() - t0
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        after = {p: p.stat().st_mtime_ns for p in b.rglob("*")}
        wrote = sorted(str(p.relative_to(b)) for p in after if before.get(p) != after[p])
        case = {"kind": "bad-input", "input": name, "exit": r.returncode, "error_lines": len(errors),
                "traceback": "Traceback" in r.stderr, "wrote": wrote, "seconds": round(seconds, 1),
                "error": errors[0] if errors else (r.stderr.strip().splitlines() or [""])[-1][:200]}
        case["verdict"] = "survived" if (r.returncode != 0 and len(errors) == 1 and not case["traceback"]
                                         and not wrote) else "lost"
        log(f"{case['verdict']}: {name}: {case['error']}")
        cases.append(record(case))
    return cases


def reference_wall(ref_dir: Path, measured: float) -> float:
    """The straight pipeline's whole wall time, start to exit (every stage's child process, their start-up and the
    eval included), the window of the random kills: measured when the reference ran now (and kept beside it), else
    the kept figure, else the stages' own seconds plus a start-up allowance per stage."""
    kept = ref_dir.parent / "reference_wall.json"
    stages = json.loads((ref_dir / "pipeline_state.json").read_text())["stages"]
    inside = sum(v["seconds"] for v in stages.values())
    if measured >= inside:  # the run computed the stages now
        kept.write_text(json.dumps({"wall_s": measured}) + "\n")
        return measured
    if kept.is_file():
        return json.loads(kept.read_text())["wall_s"]
    return inside + 10.0 * len(stages)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--kills", type=int, default=10, help="random kills of the tiny pipeline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="random,writes,eval,dump-create,sweep,finetune,writers,bad",
                    help="comma-separated parts to run")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir, removed at the end")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    global CASES_LOG
    if args.json:
        CASES_LOG = args.json.with_suffix(".cases.jsonl")
        args.json.parent.mkdir(parents=True, exist_ok=True)
    parts = set(args.only.split(","))
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bbl-fault-"))
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    t0 = time.time()
    ref_dir = root / "reference"
    t_ref = time.time()
    r = bbl(pipeline_argv(args.data, ref_dir))  # straight (or skipped when --workdir holds it finished)
    if r.returncode != 0:
        sys.exit(f"the straight tiny pipeline failed: {r.stderr[-2000:]}")
    wall = reference_wall(ref_dir, time.time() - t_ref)
    ref = outcome(ref_dir)
    log(f"reference: {wall:.1f}s, {len(ref['chunks'])} cache files, dev CE {ref['dev_ce']}")
    cases, not_kills = [], []
    if "random" in parts:
        cases += random_kills(args.data, root, ref, wall, args.kills, rng, not_kills)
    if "writes" in parts:
        cases += durable_write_kills(args.data, root, ref)
    if "eval" in parts:
        cases += eval_kill(args.data, root, ref_dir)
    if "dump-create" in parts:
        cases += dump_create_kills(args.data, root, ref_dir, args.kills, rng)
    if "sweep" in parts:
        cases.append(sweep_kill(args.data, root, ref_dir))
    if "finetune" in parts:
        cases.append(finetune_kill(root, ref_dir, args.data / "glue_filtered"))
    if "writers" in parts:
        cases += two_writers(root, ref_dir)
    if "bad" in parts:
        cases += bad_inputs(root, ref_dir)
    summary = {}
    for c in cases:
        s = summary.setdefault(c["kind"], {"survived": 0, "lost": 0, "stuck": 0})
        s[c["verdict"]] += 1
    report = {"machine": f"{os.cpu_count()} CPU cores", "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(["python", "benchmarks/fault_injection.py", *sys.argv[1:]]),
              "reference_wall_s": round(wall, 1), "seconds": round(time.time() - t0, 1), "summary": summary,
              "cases": cases, "not_kills": not_kills}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(s["lost"] == 0 and s["stuck"] == 0 for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
