"""Part 2 of issue 41's cross-tokenizer study: keep the study's own outputs and the bits per byte.

Copies from the work dir of study-part2.sh: study.json and study.md (what `bbl study` wrote: every arm and seed,
the BabyLlama-2 comparison's five arms and this study's six) and bits-per-byte-5seeds.json (`bbl eval --tasks
perplexity` of every run of the arms that read a teacher of either tokenizer, and of both teachers). Writes
study-part2.json: the study's starts (the first was cut by the end of a session; the re-run kept its finished
runs), its end, the wall time and peak RSS of its last run (/usr/bin/time), and both teachers' weights checked
against the hashes parts 1 recorded.

    python docs/results/cross-tokenizer/record_study_part2.py /work/studies/bl2
"""

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tuned-baseline"))
from record_part1 import sha256, time_v  # noqa: E402  (the same hashing and /usr/bin/time parsing as that study)


def main(work: Path) -> dict:
    for src, dst in (("study/study.json", "study.json"), ("study/study.md", "study.md"),
                     ("bits-per-byte-5seeds.json", "bits-per-byte-5seeds.json")):
        shutil.copyfile(work / src, HERE / dst)
    expected = {"teacher-llama": json.loads((HERE.parent / "tuned-baseline" / "part1.json").read_text()),
                "teacher-bpe-np": json.loads((HERE / "study-part1.json").read_text())}
    teachers = {}
    for name, record in expected.items():
        got = sha256(work / name / "model.safetensors")
        want = record["teacher"]["weights_sha256"]
        teachers[name] = {"weights_sha256": got, "as_recorded": got == want}
    starts = (work / "study.start").read_text().split()
    return {"part": 2, "what": "the cross-tokenizer arms added to the BabyLlama-2 comparison's bbl study (5 seeds, "
                               "2 jobs), then dev bits per byte",
            "started": [s for s in starts if s >= "2026-12-07T08:30"], "done": (work / "study.done").read_text().split()[-1],
            "study_last_run": time_v(work / "logs" / "study.log", block=-1), "teachers": teachers}


if __name__ == "__main__":
    (HERE / "study-part2.json").write_text(json.dumps(main(Path(sys.argv[1])), indent=1) + "\n")
