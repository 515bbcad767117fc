#!/bin/bash
# The cross-tokenizer study of issue 41, part 2: its arms added to the BabyLlama-2 comparison's study
# (tuned-baseline/part3.sh, same workdir, 5 seeds), whose `baseline` (plain) and `cached` (same-tokenizer top-64)
# runs it shares; then the dev bits per byte of every run of its arms and of both teachers. The xtok-alm-gradmag arm
# (ALM with distill.alm_weighting=gradmag) was added after the first five arms had run: the study was re-run with it
# (finished runs are kept), and the bits per byte evaluated again for every run.
# Needs part 1 (study-part1.sh: the bpe-no-prefix teacher and its cross-tokenizer cache).
set -e
R=/work/main/docs/results
X=cache/xtok-bpe-np.zarr
bash $R/tuned-baseline/part3.sh \
  --arm "xtok-exact:--cache $X --set distill.kd_variant=exact_match" \
  --arm "xtok-gold:--cache $X --set distill.kd_variant=gold" \
  --arm "xtok-uld:--cache $X --set distill.kd_variant=uld" \
  --arm "xtok-alm:--cache $X --set distill.kd_variant=alm" \
  --arm "xtok-alm-gradmag:--cache $X --set distill.kd_variant=alm --set distill.alm_weighting=gradmag" \
  --arm "two-teacher:--cache cache/llama-t1.zarr --cache $X"
cd /work/studies/bl2
export OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1
mkdir -p bpb-links  # bbl eval refuses two model dirs of one name (seed0, ...): give each run a distinct one
for a in baseline cached xtok-exact xtok-gold xtok-uld xtok-alm xtok-alm-gradmag two-teacher; do
  for d in study/runs/$a/seed*; do ln -sfn "$(realpath $d)" "bpb-links/$a-$(basename $d)"; done
done
bbl eval bpb-links/* --data prepared --tasks perplexity --dev-windows 512 --out bpb-students --overwrite
bbl eval teacher-llama --data prepared --tasks perplexity --dev-windows 512 --out bpb-teacher-llama --overwrite
bbl eval teacher-bpe-np --data prepared-bpe-np --tasks perplexity --dev-windows 512 --out bpb-teacher-bpe-np --overwrite
python3 - <<'PY'
import json
from pathlib import Path
students = {}
for r in sorted(json.load(open("bpb-students/results.json")), key=lambda r: r["model"]):
    arm = r["model"].rsplit("-seed", 1)[0]
    students.setdefault(arm, []).append(r["tasks"]["perplexity"]["bits_per_byte"])
teachers = {}
for name, tok in (("teacher-llama", "the study's BPE, 4,096 ids"),
                  ("teacher-bpe-np", "byte-level BPE without prefix space or NFKC, 4,096 ids")):
    p = json.load(open(f"bpb-{name}/results.json"))[0]["tasks"]["perplexity"]
    teachers[name] = {"tokenizer": tok, **p}
Path("bits-per-byte-5seeds.json").write_text(json.dumps({"students": students, "teachers": teachers}, indent=2) + "\n")
PY
