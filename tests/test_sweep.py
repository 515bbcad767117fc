"""`bbl sweep` on tiny models: trials and their reports, the best settings as a config every command reads,
pruning fed by the dev loss, a resumed study, a killed worker's trial retried, two workers sharing one study."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from bbl.config import load_config
from bbl.errors import BblError

from .helpers import quiet

optuna = pytest.importorskip("optuna")

OVERRIDES = ["training.max_steps=4", "training.eval_every_steps=2"]
SPACE = {"training.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
         "training.lr_scheduler": {"type": "choice", "choices": ["linear", "cosine"]},
         "training.warmup_steps": {"type": "int", "low": 0, "high": 2}}


def space_file(tmp_path, space=None):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space or SPACE))
    return path


def sweep_config(prepared, tmp_path, **kw):
    from bbl.study.sweep import SweepConfig

    settings = {"config": "student-tiny", "data_dir": prepared, "trials": 3, "workdir": tmp_path / "sweep",
                "overrides": OVERRIDES, "pruner": "none", "seed": 0, **kw}
    if "space" not in settings:
        settings["space"] = space_file(tmp_path)
    return SweepConfig(**settings)


def test_trials_report_their_runs_and_the_best_settings_are_a_config(prepared, tmp_path):
    from bbl.study.sweep import run_sweep

    report = run_sweep(sweep_config(prepared, tmp_path), log=quiet)
    w = tmp_path / "sweep"
    trials = json.loads((w / "trials.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 3
    for t in trials:  # each value is its own run's best dev CE, its steps the run's
        run = json.loads((w / "trials" / "bbl-sweep" / f"{t['number']:04d}" / "bbl_run.json").read_text())
        assert t["value"] == run["best_eval_loss"] and t["steps"] == run["global_step"] == 4
        assert sorted(map(int, t["intermediate"])) == [2, 4]  # each evaluation reached the pruner
        assert 1e-4 <= t["params"]["training.lr"] <= 1e-2 and t["params"]["training.warmup_steps"] in (0, 1, 2)
    best = min(trials, key=lambda t: t["value"])
    assert report["best"]["number"] == best["number"]
    cfg = load_config(w / "best.yaml")  # what train-teacher, train-student, distill and study read
    assert cfg.training.lr == pytest.approx(best["params"]["training.lr"])
    assert cfg.training.lr_scheduler == best["params"]["training.lr_scheduler"] and cfg.training.max_steps == 4
    assert cfg.training.warmup_steps == best["params"]["training.warmup_steps"]
    assert "**best**" in (w / "trials.md").read_text()
    assert (w / "history.png").read_bytes()[:4] == b"\x89PNG" and (w / "importance.png").is_file()
    # the same command with a larger budget continues the study: one more trial, the first three kept
    report = run_sweep(sweep_config(prepared, tmp_path, trials=4), log=quiet)
    assert [t["number"] for t in report["trials"]] == [0, 1, 2, 3]
    assert json.loads(json.dumps(report["trials"][:3])) == trials
    # the same --seed after a restart proposes new settings, not those of trial 0 again
    assert len({json.dumps(t["params"], sort_keys=True) for t in report["trials"]}) == 4
    # ... and refuses to mix another setup into the same study
    with pytest.raises(BblError, match="other settings"):
        run_sweep(sweep_config(prepared, tmp_path, trials=5, overrides=[*OVERRIDES, "training.lr=1e-3"]), log=quiet)


def test_the_pruner_stops_a_run_at_its_first_bad_evaluation(prepared, tmp_path):
    from bbl.study.sweep import run_sweep

    report = run_sweep(sweep_config(prepared, tmp_path, trials=2, pruner="threshold:0.0"), log=quiet)
    for t in report["trials"]:  # every dev CE is above 0 nats: pruned at the first evaluation, step 2 of 4
        assert t["state"] == "pruned" and t["steps"] == 2 and list(map(int, t["intermediate"])) == [2]
    assert report["best"] is None and not (tmp_path / "sweep" / "best.yaml").exists()


@pytest.mark.parametrize("space,message", [
    ({"training.nope": {"type": "uniform", "low": 0, "high": 1}}, "not a config key"),
    ({"training.lr": {"type": "gaussian", "low": 0, "high": 1}}, "type: one of"),
    ({"training.lr": {"type": "loguniform", "low": 0, "high": 1}}, "low > 0"),
    ({"training.warmup_steps": {"type": "int", "low": 5, "high": 5}}, "low < high"),
    ({"training.lr_scheduler": {"type": "choice", "choices": []}}, "choices"),
])
def test_a_bad_space_is_one_error_before_anything_is_written(space, message, prepared, tmp_path):
    from bbl.study.sweep import run_sweep

    with pytest.raises(BblError, match=message):
        run_sweep(sweep_config(prepared, tmp_path, space=space_file(tmp_path, space)), log=quiet)
    assert not (tmp_path / "sweep").exists()


def cli_sweep(prepared, tmp_path, *extra):
    return [sys.executable, "-m", "bbl", "sweep", "student-tiny", "--data", str(prepared), "--space",
            str(space_file(tmp_path)), "--workdir", str(tmp_path / "sweep"), "--pruner", "none",
            *[a for o in OVERRIDES for a in ("--set", o)], *extra]


@pytest.mark.slow
def test_two_workers_share_one_study(prepared, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    argv = cli_sweep(prepared, tmp_path, "--trials", "4", "--storage", storage)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([*argv, "--sampler-seed", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for i in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [e[-2000:] for _, e in outputs]
    study = optuna.load_study(study_name="bbl-sweep", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 4 <= len(finished) <= 5  # each worker stops once 4 are done; one may finish the trial it was on
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert all("[sweep] trial" in out for out, _ in outputs)  # both workers ran trials


@pytest.mark.slow
def test_a_killed_sweep_resumes_and_retries_the_interrupted_trial(prepared, tmp_path):
    argv = cli_sweep(prepared, tmp_path, "--trials", "3", "--heartbeat", "1", "--sampler-seed", "0")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trial_dir = tmp_path / "sweep" / "trials" / "bbl-sweep" / "0001"
    deadline = time.monotonic() + 300
    while not (trial_dir / "bbl_config.yaml").exists():  # trial 1 has started training
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    time.sleep(3)  # past the heartbeat's grace period (2 x 1 s): the interrupted trial is stale
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = json.loads((tmp_path / "sweep" / "trials.json").read_text())["trials"]
    states = [t["state"] for t in trials]
    assert states.count("complete") == 3 and states[1] == "fail"  # killed, failed by the heartbeat ...
    retried = [t for t in trials if t["number"] > 1 and t["params"] == trials[1]["params"]]
    assert retried and retried[0]["state"] == "complete"  # ... and run again with the same settings


def test_a_dead_workers_trial_found_at_the_end_is_failed_and_retried_from_its_checkpoints(prepared, tmp_path):
    """A worker killed during trial 1 leaves it running, its heartbeat fresh for a moment; the sweep re-run once its
    budget is met (trial 0 done) waits until the heartbeat is stale, fails the trial and runs it again with the
    same settings, continuing the dead run from its last checkpoint; the reports show the final states."""
    import dataclasses
    import warnings

    from bbl.study.sweep import load_space, run_sweep, trial_config, trial_dir
    from bbl.train.recipe import train_lm

    sweep = sweep_config(prepared, tmp_path, trials=1, heartbeat_s=1)
    run_sweep(sweep, log=quiet)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'sweep' / 'sweep.db'}", heartbeat_interval=1)
    study = optuna.load_study(study_name="bbl-sweep", storage=storage)
    with warnings.catch_warnings():  # Optuna's note that a heartbeat is meant for Study.optimize
        warnings.simplefilter("ignore")
        trial = study.ask()  # the killed worker's trial: settings drawn, 2 of 4 steps trained and reported
    values = {p.key: p.suggest(trial) for p in load_space(sweep.space)}
    dead = trial_dir(sweep, trial.number)
    train_lm(trial_config(dataclasses.replace(sweep, overrides=[*OVERRIDES, "training.stop_after_steps=2"]), values),
             prepared, dead, kind="sweep_trial", log=quiet)
    trial.report(json.loads((dead / "bbl_run.json").read_text())["best_eval_loss"], 2)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("bbl-sweep"), trial.number))
    restarted, logs = time.time(), []
    report = run_sweep(sweep, log=logs.append)
    rows = report["trials"]
    assert [(r["number"], r["state"]) for r in rows] == [(0, "complete"), (1, "fail"), (2, "complete")], logs
    assert rows[2]["params"] == rows[1]["params"] and rows[2]["retry_of"] == 1
    assert sorted(rows[2]["intermediate"]) == [2, 4] and rows[2]["steps"] == 4
    assert json.loads((tmp_path / "sweep" / "trials.json").read_text())["trials"] == json.loads(json.dumps(rows))
    assert "| 1 | fail |" in (tmp_path / "sweep" / "trials.md").read_text()
    assert any("trial 1: its worker stopped" in line for line in logs), logs
    # the retry continued the dead run in its own dir: steps 1-2 were logged before the restart, none after it
    assert not dead.exists()
    lines = [json.loads(line) for line in (trial_dir(sweep, 2) / "metrics.jsonl").read_text().splitlines()]
    assert max(line["step"] for line in lines if line["time"] < restarted) == 2
    assert min(line["step"] for line in lines if line["time"] >= restarted) > 2
