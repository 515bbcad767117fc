#!/bin/bash
# Sweep the study's baseline (16 trials, hyperband), then add the swept baseline to the study.
set -e
cd /work/antlm-study
D=/work/shared/data
/usr/bin/time -v bbl sweep student-study --data prepared --space /work/main/docs/results/baseline-sweep-space.yaml \
  --trials 16 --workdir sweep --set training.eval_every_steps=48 --seed 0 > sweep.log 2>&1
ARM=$(python - <<'PY'
import yaml
best = yaml.safe_load(open("sweep/best.yaml"))["training"]
keys = ["lr", "weight_decay", "warmup_steps", "lr_scheduler"]
print("swept-baseline:--baseline " + " ".join(f"--set training.{k}={best[k]}" for k in keys))
PY
)
echo "$ARM" > swept-arm.txt
S="training.objective_schedule=clm:1,mlm:1,clm:1"
/usr/bin/time -v bbl study student-study --data prepared --workdir study --cache cache/llama-t1.zarr --seeds 3 \
  --arm "antlm:--baseline --set $S" \
  --arm "antlm-cached:--set $S" \
  --arm "antlm-cached-mlmkd:--set $S --set distill.mlm_kd=true" \
  --arm "antlm-own:--baseline --set $S --set training.mlm_target=own" \
  --arm "$ARM" \
  --blimp-dir $D/blimp_fast --supplement-dir $D/supplement_fast > study2.log 2>&1
echo done > sweep.done
