"""Run one `bbl` command as a child process and measure it: exit code, wall seconds, peak RSS.

The pipeline and the study run each stage or run this way, so a stage's cost is its own (the child's peak RSS,
not the orchestrator's) and a crash in one run leaves the orchestrator able to report and resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


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
