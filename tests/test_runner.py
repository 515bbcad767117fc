"""The resumable runner the pipeline and the study share: a step is skipped only when its fingerprint matches and
its output's marker says it finished; every marker is written last and atomically, so a kill during a stage's
last writes never marks it done; the state file survives a kill during its own write."""

import json
import os

import pytest

from bbl.evaluate.report import write_report
from bbl.orchestration.runner import Runner, Step, fingerprint, is_complete
from bbl.study.report import write_study


class Killed(BaseException):
    """What a SIGKILL looks like to the code under test: nothing after it runs (not an Exception to catch)."""


def kill_at(monkeypatch, name):
    """Die at the `os.replace` that would put a file called `name` in place (the write itself, not after it)."""
    real = os.replace

    def replace(src, dst, *a, **kw):
        if os.path.basename(str(dst)) == name:
            raise Killed(name)
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)


RESULTS = [{"model": "m", "parameters": 1000, "tasks": {
    "blimp": {"by_phenomenon": {"anaphor": 0.5, "binding": 0.75}, "overall": 0.625},
    "supplement": {"by_file": {"turns": 0.5}, "overall": 0.5}}}]


def test_eval_report_marker_is_the_last_write(tmp_path, monkeypatch):
    kill_at(monkeypatch, "results.json")
    with pytest.raises(Killed):
        write_report(RESULTS, tmp_path)
    assert (tmp_path / "blimp.png").is_file() and (tmp_path / "results.md").is_file()  # written before it
    assert not (tmp_path / "results.json").exists() and not is_complete(tmp_path)
    monkeypatch.undo()
    write_report(RESULTS, tmp_path)
    assert is_complete(tmp_path) and json.loads((tmp_path / "results.json").read_text()) == RESULTS


def test_a_kill_while_plotting_leaves_no_marker(tmp_path, monkeypatch):
    kill_at(monkeypatch, "blimp.png")
    with pytest.raises(Killed):
        write_report(RESULTS, tmp_path)
    assert not is_complete(tmp_path) and not (tmp_path / "blimp.png").exists()


def study(n_seeds=2):
    runs = [{"seed": s, "best_dev_ce": 3.0 + s / 10, "blimp": 0.6, "supplement": 0.5, "global_step": 10,
             "seconds": 1.0, "peak_rss_mib": 100.0, "words_seen": 1000, "words_seen_with_teachers": 1000}
            for s in range(n_seeds)]
    arm = {"runs": runs, "best_dev_ce": {"mean": 3.05, "std": 0.07}, "blimp": {"mean": 0.6, "std": 0.0},
           "supplement": {"mean": 0.5, "std": 0.0}, "mean_curve": [(5, 3.2), (10, 3.05)],
           "vs_baseline": {m: {"mean": 0.0, "ci95": None} for m in ("best_dev_ce", "blimp", "supplement")}}
    return {"config": "student-tiny", "seeds": list(range(n_seeds)), "date": "2026-11-28", "arms": {"baseline": arm},
            "teachers": {}}


def test_study_report_marker_is_the_last_write(tmp_path, monkeypatch):
    kill_at(monkeypatch, "study.json")
    with pytest.raises(Killed):
        write_study(study(), tmp_path)
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "study.md").is_file()
    assert not is_complete(tmp_path)
    monkeypatch.undo()
    write_study(study(), tmp_path)
    assert is_complete(tmp_path) and json.loads((tmp_path / "study.json").read_text())["config"] == "student-tiny"


def test_runner_reruns_until_the_marker_says_done_and_when_the_command_changes(tmp_path):
    logs = []
    runner = Runner(tmp_path / "state.json", {"steps": {}}, log=logs.append)
    out = tmp_path / "out"
    out.mkdir()
    step = Step("s", ["--version"], out)
    assert runner.run(step)  # ran: the child `bbl --version` exits 0
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["steps"]["s"]["fingerprint"] == fingerprint(["--version"])
    assert runner.run(step)  # recorded, but its output has no marker: not done, so it runs again
    (out / "results.json").write_text("[]")
    assert not runner.run(step) and logs[-1] == "s: up to date, skipped"
    assert Runner(tmp_path / "state.json", {}, log=logs.append).run(step) is False  # a new process resumes too
    assert runner.run(Step("s", ["--help"], out))  # another command: not the recorded step


def test_runner_state_survives_a_kill_during_its_write(tmp_path, monkeypatch):
    runner = Runner(tmp_path / "state.json", {"steps": {}}, log=lambda *_: None)
    out = tmp_path / "out"
    runner.run(Step("first", ["--version"], out))
    before = (tmp_path / "state.json").read_text()
    kill_at(monkeypatch, "state.json")
    with pytest.raises(Killed):
        runner.run(Step("second", ["--version"], out))
    assert (tmp_path / "state.json").read_text() == before  # the old state, whole
    assert "second" not in json.loads(before)["steps"]


def test_a_failed_step_is_one_error_naming_it_and_its_command(tmp_path):
    from bbl.errors import BblError

    runner = Runner(tmp_path / "state.json", {}, log=lambda *_: None)
    with pytest.raises(BblError, match=r"bad failed \(exit 2\).*bbl no-such-command"):  # click's usage error
        runner.run(Step("bad", ["no-such-command"], tmp_path / "o"))
    # the attempt is recorded (so a retry resumes its output rather than restarting it), but not as done
    assert json.loads((tmp_path / "state.json").read_text())["steps"]["bad"] == {
        "fingerprint": fingerprint(["no-such-command"])}


def test_a_retry_after_a_killed_stale_step_resumes_instead_of_restarting(tmp_path):
    """A step whose command changed restarts once (on_stale); killed during that run, the next run resumes it."""
    runner = Runner(tmp_path / "state.json", {"steps": {}}, log=lambda *_: None)
    out = tmp_path / "out"
    out.mkdir()
    runner.state["steps"]["s"] = {"fingerprint": "an older command"}
    (out / "partial").write_text("from the older command")
    runner.run(Step("s", ["--version"], out, on_stale="restart"))  # stale: the old output is removed first
    assert not (out / "partial").exists()
    out.mkdir(exist_ok=True)
    (out / "partial").write_text("what the killed run of the new command wrote")
    runner.run(Step("s", ["--version"], out, on_stale="restart"))  # same command, not done: resumed, not wiped
    assert (out / "partial").exists()


def test_a_training_step_killed_during_a_save_continues_when_re_run(prepared, tmp_path, monkeypatch):
    """What `bbl pipeline` and `bbl study` do after a kill: the same step again (its command passes --resume); a
    checkpoint the kill left half written is moved aside and the step finishes from the last complete one, instead
    of failing on it at every re-run."""
    import shutil

    from bbl.errors import BblError
    from bbl.orchestration import runner as runner_module

    from .helpers import run as run_cli

    calls = []

    def run_in_process(argv, *, env=None, nproc=1):  # the child `bbl` command, in this process (seconds saved)
        calls.append(list(argv))
        if len(calls) == 1:  # the first run is killed after step 4's checkpoint ...
            run_cli([*argv, "--set", "training.stop_after_steps=4"])
            return -9, 1.0, 1.0
        result = run_cli(argv)
        return result.exit_code, 1.0, 1.0

    monkeypatch.setattr(runner_module, "run_bbl", run_in_process)
    out = tmp_path / "teacher"
    sets = ["training.max_steps=8", "training.max_train_windows=64", "training.eval_every_steps=4"]
    step = Step("teacher", ["train-teacher", "llama-tiny", "--data", str(prepared), "--out", str(out), "--resume",
                            *[a for s in sets for a in ("--set", s)]], out)
    runner = Runner(tmp_path / "state.json", {"steps": {}}, log=lambda *_: None)
    with pytest.raises(BblError, match="exit -9"):
        runner.run(step)
    ckpts = out / "checkpoints"
    shutil.copytree(ckpts / "checkpoint-4", ckpts / "checkpoint-8")  # ... while writing step 8's
    (ckpts / "checkpoint-8" / "trainer_state.json").unlink()
    assert not is_complete(out)
    assert runner.run(step) and calls[1] == step.argv  # the same command again
    run = json.loads((out / "bbl_run.json").read_text())
    assert is_complete(out) and run["global_step"] == 8
    assert (out / "partial-checkpoints" / "checkpoint-8").is_dir()
    state = json.loads((ckpts / "checkpoint-8" / "trainer_state.json").read_text())  # written by the re-run
    assert state["global_step"] == 8
