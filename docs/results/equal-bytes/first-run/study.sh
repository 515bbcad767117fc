#!/bin/bash
# The equal-bytes study as run on 2026-12-02 (docs/results/equal-bytes.md), in /work/study on a 2-core VM.
# /usr/bin/time and log redirections dropped; D is the shared data dir (../shared/data).
set -e
D=/work/shared/data
bbl prepare --train-dir $D/babylm_10M --dev-dir $D/babylm_dev --out prepared --vocab-size 4096
bbl train-teacher llama-study --data prepared --out teacher-llama --resume
# the top-64 cache (T = 1) and the hybrid: top-4 + 8 draws from the tail, log-probs on a 2^-4 grid, ids delta-coded
bbl dump-logits --teacher teacher-llama --data prepared --cache cache/llama-t1.zarr --topk 64 --temperature 1.0 \
  --batch-size 32 --max-windows 3072 --data-seed 0
bbl dump-logits --teacher teacher-llama --data prepared --temperature 1.0 --batch-size 32 --max-windows 3072 \
  --data-seed 0 --cache cache/b20.zarr --targets hybrid --topk 4 --samples 8 --logprob-step 0.0625 --delta-ids
bbl cache info --cache cache/llama-t1.zarr --json > info-top64.json
bbl cache info --cache cache/b20.zarr --json > info-b20.json
bbl study student-study --data prepared --workdir study --cache cache/llama-t1.zarr --seeds 3 --jobs 2 \
  --arm "hybrid-4s8:--cache cache/b20.zarr" --blimp-dir $D/blimp_fast --supplement-dir $D/supplement_fast
# caches.json = {"cached": info-top64.json, "hybrid-4s8": info-b20.json}; study.json = study/study.json
