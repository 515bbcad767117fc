"""The fault-injection suite in small (benchmarks/fault_injection.py): the tiny pipeline killed at a random moment
and at every stage's durable write resumes to byte-equal caches and equal dev CE. The full run (random kills,
sweep, finetune, racing writers, the bad-input table) is recorded in BENCHMARKS.md; two writers are tested
deterministically in tests/test_outputs.py (a race of two real processes depends on their start-up times)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import real_data_or_skip

pytestmark = pytest.mark.slow  # real pipelines, SIGKILLed process groups: minutes

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_injection.py"


def test_a_pipeline_killed_at_random_and_in_every_durable_write_resumes_to_equal_results(tmp_path):
    data = real_data_or_skip()
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--kills", "1", "--seed", "3",
                        "--only", "random,writes", "--workdir", str(tmp_path / "w"), "--json", str(report)],
                       capture_output=True, text=True, timeout=1800)
    assert report.is_file(), r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(report.read_text())["summary"]
    assert set(summary) == {"random", "durable-write"}, summary
    for kind, counts in summary.items():
        assert counts["lost"] == 0 and counts["stuck"] == 0, (kind, counts, r.stdout[-3000:])
    assert r.returncode == 0
