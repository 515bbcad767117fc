"""Run one benchmark command and stamp its raw JSON with where and how it ran.

    python benchmarks/recorded.py OUT.json -- python benchmarks/bench_x.py ... --json OUT.json

After the command exits 0, OUT.json (which the command wrote) gains a "run" block: the date (UTC), the machine
(`lscpu`'s model name, cores, memory), the command line, the git commit (and any bbl/ file that differs from it), the load average before and after, and the
wall time of the whole command. On a shared VM the load says how far absolute times are from a quiet machine's;
ratios measured side by side in one run (medians over repetitions) are what the tables judge.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def _machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "unknown")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem, 1)}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out, cmd = Path(argv[0]), argv[2:]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = [line[3:] for line in subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "bbl"],
                                                   capture_output=True, text=True).stdout.splitlines()]
    started = datetime.datetime.now(datetime.UTC)
    before, t0 = _load(), time.perf_counter()
    code = subprocess.run(cmd).returncode
    wall, after = time.perf_counter() - t0, _load()
    if code != 0:
        return code
    report = json.loads(out.read_text())
    report["run"] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": _machine(), "git_commit": commit,
        "bbl_files_changed_from_commit": changed,
        "command": shlex.join(cmd), "load_average_1_5_15_before": before, "load_average_1_5_15_after": after,
        "wall_seconds": round(wall, 1),
        "note": "a shared 2-core VM (other jobs running: see the load): absolute times are not measurements of a "
                "quiet machine; ratios were measured side by side in one process (medians over repetitions)",
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
