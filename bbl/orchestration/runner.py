"""Resumable runs of `bbl` commands as child processes: the one runner the pipeline and the study share.

Each step is a `bbl` command line run as a child process (so its wall time and peak RSS are its own, and a crash
in one leaves the orchestrator able to report and resume). A step is skipped when its recorded fingerprint (the
command line and the bytes of what it depends on) matches and its output is complete: a completion marker that
its stage writes last (`bbl_run.json` saying complete, a cache's `zarr.json` saying complete, `manifest.json`,
`results.json`, `study.json`). The state file is replaced atomically after every step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bbl import RENAMED_OPTIONS
from bbl.errors import BblError
from bbl.io import atomic_write_json, load_json
from bbl.outputs import cache_finished, run_finished

MARKERS = ("bbl_run.json", "zarr.json", "manifest.json", "results.json", "study.json")
"""The file each stage writes last, in the order a dir is searched for one."""


def run_bbl(argv: list[str], *, env: dict | None = None, nproc: int = 1) -> tuple[int, float, float]:
    """Run `python -m bbl ARGV` (under torchrun when nproc > 1); (exit code, seconds, peak RSS MiB of the largest
    process in the child's tree)."""
    launcher = [sys.executable, "-m", "bbl"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "-m", "bbl"]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*launcher, *argv], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1024


def completion_marker(output: Path) -> Path:
    """The marker file of a stage's output dir (the first of `MARKERS` present), else the dir itself."""
    for name in MARKERS:
        if (Path(output) / name).is_file():
            return Path(output) / name
    return Path(output)


def is_complete(output: Path) -> bool:
    """Whether a stage's output is final: its marker exists and, for runs and caches, says complete."""
    marker = completion_marker(output)
    if not marker.is_file():
        return False
    if marker.name == "bbl_run.json":
        return run_finished(output)
    if marker.name == "zarr.json":
        return cache_finished(output)
    return True  # manifest.json, results.json and study.json are written last, atomically


def marker_digest(output: Path) -> bytes:
    """sha256 of an upstream output's marker (empty when it has none): what a downstream fingerprint folds in."""
    marker = completion_marker(output)
    return hashlib.sha256(marker.read_bytes()).digest() if marker.is_file() else b""


def legacy_spelling(argv: list[str]) -> list[str]:
    """`argv` with each option renamed since 0.1 in its old spelling (`bbl.RENAMED_OPTIONS`): what a step's
    fingerprint hashes, so a workdir a pipeline or study left before the rename resumes instead of redoing (and,
    for a dump, overwriting) the step. Both spellings mean the same, so equal commands still hash equal."""
    old = {new: old for old, new in RENAMED_OPTIONS.get(argv[0] if argv else "", {}).items()}
    return [old.get(a, a) for a in argv]


def fingerprint(argv: list[str], parts: list[bytes] = ()) -> str:
    """sha256 of a step: its command line (`legacy_spelling`), then the bytes of what its result depends on."""
    h = hashlib.sha256(json.dumps(legacy_spelling(argv)).encode())
    for part in parts:
        h.update(part)
    return h.hexdigest()


@dataclass
class Step:
    """One `bbl` command of a resumable run."""

    key: str
    """Its record in the state file's `section`."""
    argv: list[str]
    output: Path
    """The dir it writes; done when `is_complete(output)`."""
    upstream: list[Path] = field(default_factory=list)
    """Outputs of earlier steps it reads: their completion markers' digests (read when the step is reached, after
    those steps ran) join its fingerprint."""
    parts: list[bytes] = field(default_factory=list)
    """Other bytes its result depends on (a cache's metadata, a model's run file), after the upstream digests."""
    section: str = "steps"
    label: str = ""
    nproc: int = 1
    on_stale: Literal["resume", "overwrite", "restart"] = "resume"
    """When an earlier run with another fingerprint left output: resume it as is (the command refuses what it
    cannot resume), append `--overwrite`, or remove the output first."""
    failure_hint: str = "re-run the same command to continue"
    env: dict | None = None
    """Variables added to the runner's environment for this step only (e.g. a parallel job's thread count)."""


class Runner:
    """Runs `Step`s, recording each in a JSON state file so a re-run skips what is done.

    Args:
        state_path: the state file (created on the first finished step).
        initial: the state of a new run (e.g. {"preset": NAME, "stages": {}}).
        env: the children's environment. log: where progress lines go.

    `run` may be called from several threads at once (`bbl study --jobs`): the state is read and saved under a lock,
    the children run outside it.
    """

    def __init__(self, state_path: Path, initial: dict, *, env: dict | None = None, log=print):
        self.path, self.env, self.log = Path(state_path), env, log
        self.state = load_json(self.path, fix="delete it: the next run redoes the steps it recorded") or initial
        self.lock = threading.RLock()

    def save(self) -> None:
        with self.lock:
            atomic_write_json(self.path, self.state)

    def run(self, step: Step) -> bool:
        """Run `step` unless done with the same fingerprint; True when it ran.

        Raises:
            BblError: the command failed (names the step, its exit code and the command to reproduce it).
        """
        label = step.label or step.key
        fp = fingerprint(step.argv, [*map(marker_digest, step.upstream), *step.parts])
        with self.lock:
            records = self.state.setdefault(step.section, {})
            record = records.get(step.key, {})
            if record.get("fingerprint") == fp and is_complete(step.output):
                self.log(f"{label}: up to date, skipped")
                return False
            argv = list(step.argv)
            if record.get("fingerprint") not in (None, fp):  # an earlier run of another command left output
                if step.on_stale == "overwrite":
                    argv.append("--overwrite")
                elif step.on_stale == "restart" and Path(step.output).exists():
                    shutil.rmtree(step.output)
            self.log(f"{label}: bbl {shlex.join(argv)}")
            # recorded before the run: a kill now leaves output of this fingerprint, which the next run resumes (it
            # is not overwritten or restarted again); done still needs the output's marker
            records[step.key] = {"fingerprint": fp}
            self.save()
        env = self.env
        if step.env:
            env = {**(self.env if self.env is not None else os.environ), **step.env}
        code, seconds, rss = run_bbl(argv, env=env, nproc=step.nproc)
        if code != 0:
            raise BblError(f"{step.key} failed (exit {code}); fix the error above and {step.failure_hint} "
                           f"(reproduce alone: bbl {shlex.join(argv)})")
        with self.lock:
            records[step.key] = {"fingerprint": fp, "seconds": round(seconds, 1), "peak_rss_mib": round(rss, 1)}
            self.save()
        self.log(f"{label}: done in {seconds:.1f}s, peak RSS {rss:.0f} MiB")
        return True
