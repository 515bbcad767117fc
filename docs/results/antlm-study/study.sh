#!/bin/bash
# AntLM at CPU scale: the study student, 3 epochs, one LLaMA teacher's top-64 cache at T = 1.
set -e
cd /work/antlm-study
D=/work/shared/data
S="training.objective_schedule=clm:1,mlm:1,clm:1"
/usr/bin/time -v bbl study student-study --data prepared --workdir study --cache cache/llama-t1.zarr --seeds 3 \
  --arm "antlm:--baseline --set $S" \
  --arm "antlm-cached:--set $S" \
  --arm "antlm-cached-mlmkd:--set $S --set distill.mlm_kd=true" \
  --arm "antlm-own:--baseline --set $S --set training.mlm_target=own" \
  --blimp-dir $D/blimp_fast --supplement-dir $D/supplement_fast > study.log 2>&1
echo done > study.done
