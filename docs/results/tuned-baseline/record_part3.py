"""Part 3 of the both-swept BabyLlama-2 comparison: keep the study's own outputs.

Copies study.json and study.md (what `bbl study` wrote, every arm and seed) from the work dir of part3.sh into
this folder and writes part3.json: the study's wall time and peak RSS from /usr/bin/time, and its start and end.

    python docs/results/tuned-baseline/record_part3.py /work/studies/bl2
"""

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from record_part1 import time_v  # noqa: E402  (this folder's script: the same /usr/bin/time parsing)


def main(work: Path) -> dict:
    for name in ("study.json", "study.md"):
        shutil.copyfile(work / "study" / name, HERE / name)
    return {"part": 3, "what": "bbl study --seeds 5 --jobs 2 over the five arms of part3.sh",
            "started": (work / "study.start").read_text().split()[-1],
            "done": (work / "study.done").read_text().split()[-1], "study": time_v(work / "logs" / "study.log")}


if __name__ == "__main__":
    (HERE / "part3.json").write_text(json.dumps(main(Path(sys.argv[1])), indent=1) + "\n")
