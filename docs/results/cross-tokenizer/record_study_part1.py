"""Part 1 of issue 41's cross-tokenizer study: record the foreign teacher (and its cache, once dumped).

Reads the work dir of study-part1.sh and writes study-part1.json: the bpe-no-prefix teacher's best dev CE (nats
per its own token), its weights' and tokenizer's sha256, and each stage's wall time and peak RSS (/usr/bin/time).
A later part checks a kept or retrained teacher against these hashes.

    python docs/results/cross-tokenizer/record_study_part1.py /work/studies/bl2
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tuned-baseline"))
from record_part1 import sha256, time_v  # noqa: E402  (the same hash and /usr/bin/time parsing as that study)


def main(work: Path) -> dict:
    run = json.loads((work / "teacher-bpe-np" / "bbl_run.json").read_text())
    out = {"part": 1, "what": "llama-study on the corpus under a 4,096-id byte-level BPE without prefix space or NFKC",
           "teacher": {"best_dev_ce": run["best_eval_loss"], "global_step": run["global_step"],
                       "weights_sha256": sha256(work / "teacher-bpe-np" / "model.safetensors"),
                       "tokenizer_sha256": run["tokenizer_sha256"], "train_runtime_s": run.get("train_runtime_s")},
           "stages": {name: time_v(work / "logs" / f"xtok-{name}.log") for name in ("prepare", "teacher", "dump")
                      if (work / "logs" / f"xtok-{name}.log").is_file()}}
    cache = work / "cache" / "xtok-bpe-np.zarr" / "zarr.json"
    if (work / "xtok-dump.done").is_file():
        attrs = json.loads(cache.read_text())["attributes"]
        out["cache"] = {"teachers_fingerprint": attrs.get("teachers_fingerprint"), "summary": attrs.get("summary")}
    return out


if __name__ == "__main__":
    (HERE / "study-part1.json").write_text(json.dumps(main(Path(sys.argv[1])), indent=1) + "\n")
