"""The fault-injection suite in small (benchmarks/fault_injection.py): the tiny pipeline killed at a random moment
and inside every stage's durable write resumes to byte-equal caches and equal dev CE, and two writers racing for
one output leave one run and one refusal. The full run (10 random kills, sweep, finetune, the bad-input table)
is recorded in BENCHMARKS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import real_data_or_skip

pytestmark = pytest.mark.slow  # real pipelines, SIGKILLed process groups: minutes

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_injection.py"


def test_killed_and_raced_pipelines_lose_nothing(tmp_path):
    data = real_data_or_skip()
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--kills", "1", "--seed", "3",
                        "--only", "random,writes,writers", "--workdir", str(tmp_path / "w"), "--json", str(report)],
                       capture_output=True, text=True, timeout=1800)
    assert report.is_file(), r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(report.read_text())["summary"]
    assert set(summary) == {"random", "durable-write", "two-writers"}, summary
    for kind, counts in summary.items():
        assert counts["lost"] == 0 and counts["stuck"] == 0, (kind, counts, r.stdout[-3000:])
    cases = json.loads(report.read_text())["cases"]
    assert sum(c.get("landed_in_write", False) for c in cases) >= 3, cases  # the kills did land inside writes
    assert r.returncode == 0
