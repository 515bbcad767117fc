#!/bin/bash
# Part 3 of the both-swept BabyLlama-2 comparison (issue 43): `bbl study` over 5 seeds, two 1-thread jobs, on part 1's
# data and cache. Arms: the preset baseline (`baseline`) and preset distilled (`cached`, T = 1, alpha 0.5), the swept
# baseline (the AntLM study's sweep: antlm-study/sweep-best.yaml), the swept distilled (part 2's sweep:
# tuned-baseline/distilled-best.yaml) and the swept distilled with forward KL in place of the divergence it chose.
# The swept settings are read from the committed best.yaml files, for exactly the keys each sweep's space searched.
# Resumable: re-running it continues the study (finished runs are kept). Arguments are more study options (the
# cross-tokenizer study, docs/results/cross-tokenizer/study-part2.sh, adds its arms to this same study this way).
set -e
R=/work/main/docs/results
cd /work/studies/bl2
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
D=/work/shared/data
swept() {  # --set KEY=VALUE for every key of space $1, valued as in best.yaml $2
  python3 - "$1" "$2" <<'PY'
import sys, yaml
space, best = (yaml.safe_load(open(p)) for p in sys.argv[1:])
print(" ".join(f"--set {k}={best[k.split('.')[0]][k.split('.')[1]]}" for k in space))
PY
}
BASE=$(swept $R/baseline-sweep-space.yaml $R/antlm-study/sweep-best.yaml)
DIST="$(swept $R/distilled-sweep-space.yaml $R/tuned-baseline/distilled-best.yaml) --set distill.allow_retemper=true"
FKL="$(echo "$DIST" | sed -E 's/distill\.divergence=[a-z_]+/distill.divergence=forward_kl/')"
echo "swept baseline: $BASE"; echo "swept distilled: $DIST"; echo "swept distilled, forward KL: $FKL"
date -u +%FT%TZ >> study.start
/usr/bin/time -v bbl study student-study --data prepared --workdir study --cache cache/llama-t1.zarr --seeds 5 --jobs 2 \
  --arm "swept-baseline:--baseline $BASE" \
  --arm "swept-distilled:$DIST" \
  --arm "swept-distilled-fkl:$FKL" \
  "$@" --blimp-dir $D/blimp_fast --supplement-dir $D/supplement_fast >> logs/study.log 2>&1
date -u +%FT%TZ >> study.done
