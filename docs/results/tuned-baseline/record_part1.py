"""Part 1 of the both-swept BabyLlama-2 comparison: record what the next parts start from.

Reads the work dir of part1.sh (prepared data, the study teacher, its top-64 T = 1 cache) and writes part1.json:
the teacher's best dev CE and the sha256 of its weights, the prepared streams' hashes, the cache's settings and
size, and each stage's wall time and peak RSS from /usr/bin/time. A later part checks a retrained or kept
teacher against these hashes before it sweeps.

    python docs/results/tuned-baseline/record_part1.py /work/studies/bl2 > docs/results/tuned-baseline/part1.json
"""

import hashlib
import json
import re
import sys
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def time_v(log: Path, block: int = 0) -> dict:
    """Wall seconds and peak RSS (MiB) from a `/usr/bin/time -v` block of a log: the first (`block` 0), or e.g. the
    last (-1) of a log that several runs appended to; None for what the log lacks."""
    text = log.read_text(errors="replace")
    walls = re.findall(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    rss = re.findall(r"Maximum resident set size \(kbytes\): (\d+)", text)
    seconds = None
    if walls:
        parts = [float(p) for p in walls[block].split(":")]
        seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"wall_s": seconds, "peak_rss_mib": round(int(rss[block]) / 1024) if rss else None}


def main(work: Path) -> dict:
    run = json.loads((work / "teacher-llama" / "bbl_run.json").read_text())
    manifest = json.loads((work / "prepared" / "manifest.json").read_text())
    cache = json.loads((work / "cache" / "llama-t1.zarr" / "zarr.json").read_text())["attributes"]
    return {
        "part": 1,
        "what": "the study teacher (llama-study, 7.2M) on the prepared study data, and its top-64 T = 1 cache",
        "teacher": {"preset": "llama-study", "best_dev_ce": run["best_eval_loss"], "eval_split": run.get("eval_split"),
                    "global_step": run["global_step"], "parameters": run["parameters"],
                    "weights_sha256": sha256(work / "teacher-llama" / "model.safetensors"),
                    "train_runtime_s": run.get("train_runtime_s")},
        "prepared": {"tokenizer_sha256": run["tokenizer_sha256"], "train_stream_sha256": run["train_stream_sha256"],
                     "vocab_size": manifest.get("vocab_size")},
        "cache": {k: cache.get(k) for k in ("top_k", "temperature", "seq_len", "teachers_fingerprint",
                                             "window_selection")} | {"summary": cache.get("summary")},
        "stages": {name: time_v(work / f"{name}.log") for name in ("prepare", "teacher", "dump")},
        "machine": "2-core AMD EPYC VM, 24 GiB; shared with other jobs during part 1 (wall times are not measurements)",
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
