"""Part 2 of the both-swept BabyLlama-2 comparison: keep what part 3 starts from.

Copies the distilled sweep's own outputs from the work dir of part2.sh into this folder (distilled-trials.json and
distilled-trials.md: every trial as `bbl sweep` wrote them; distilled-best.yaml: the best trial's config, which
part3.sh reads) and writes part2.json: the teacher weights' sha256 checked against part 1's, the trials' states,
the best trial, and each worker's wall time and peak RSS from /usr/bin/time.

    python docs/results/tuned-baseline/record_part2.py /work/studies/bl2
"""

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from record_part1 import sha256, time_v  # noqa: E402  (this folder's script: the same hash and time parsing)


def main(work: Path) -> dict:
    sweep = work / "sweep-distilled"
    part1 = json.loads((HERE / "part1.json").read_text())
    weights = sha256(work / "teacher-llama" / "model.safetensors")
    if weights != part1["teacher"]["weights_sha256"]:
        sys.exit(f"teacher-llama's weights ({weights}) are not part 1's ({part1['teacher']['weights_sha256']})")
    for name, dest in (("trials.json", "distilled-trials.json"), ("trials.md", "distilled-trials.md"),
                       ("best.yaml", "distilled-best.yaml")):
        shutil.copyfile(sweep / name, HERE / dest)
    report = json.loads((sweep / "trials.json").read_text())
    rows, best = report["trials"], report["best"]
    return {
        "part": 2,
        "what": "the distilled student swept over distilled-sweep-space.yaml: 16 trials, hyperband, sampler seed 0, "
                "two workers on one storage, on part 1's cache",
        "teacher_weights_sha256": weights,
        "states": dict(Counter(t["state"] for t in rows)),
        "best": {"trial": best["number"], "dev_ce": best["value"], "params": best["params"]},
        "trial_wall_s_total": round(sum(r["wall_s"] or 0 for r in rows), 1),
        "workers": {log.stem: time_v(log) for log in sorted((work / "logs").glob("sweep-worker*.log"))},
    }


if __name__ == "__main__":
    work = Path(sys.argv[1])
    (HERE / "part2.json").write_text(json.dumps(main(work), indent=1) + "\n")
