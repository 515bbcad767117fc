#!/bin/bash
# Part 2 of the both-swept BabyLlama-2 comparison: the distilled student swept with the baseline's budget (16
# trials, hyperband, sampler seed 0, dev CE every 48 steps) on part 1's cache, two workers on one storage (each one
# thread). Resumable: re-running it continues the study in sweep-distilled/sweep.db (a killed trial is retried).
set -e
cd /work/studies/bl2
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
SPACE=/work/main/docs/results/distilled-sweep-space.yaml
ARGS=(student-study --data prepared --space $SPACE --trials 16 --workdir sweep-distilled --cache cache/llama-t1.zarr
      --set training.eval_every_steps=48 --set distill.allow_retemper=true --sampler-seed 0)
mkdir -p logs
/usr/bin/time -v bbl sweep "${ARGS[@]}" > logs/sweep-worker1.log 2>&1 &
sleep 60  # the first worker creates the workdir and the storage
/usr/bin/time -v bbl sweep "${ARGS[@]}" > logs/sweep-worker2.log 2>&1 &
wait
date -u +%FT%TZ > sweep-distilled.done
