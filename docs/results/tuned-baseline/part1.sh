#!/bin/bash
# Part 1 of the both-swept BabyLlama-2 study (issue 43): the study teacher and its top-64 T=1 cache,
# as docs/results/antlm-study/teacher.sh does. One thread, so the rest of the session keeps a core.
set -e
cd /work/studies/bl2
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
D=/work/shared/data
date -u +%FT%TZ > start.txt
/usr/bin/time -v bbl prepare --train-dir $D/babylm_10M --dev-dir $D/babylm_dev --out prepared --vocab-size 4096 > prepare.log 2>&1
date -u +%FT%TZ > prepare.done
/usr/bin/time -v bbl train-teacher llama-study --data prepared --out teacher-llama --resume > teacher.log 2>&1
date -u +%FT%TZ > teacher.done
/usr/bin/time -v bbl dump-logits --teacher teacher-llama --data prepared --out cache/llama-t1.zarr --topk 64 --temperature 1.0 --batch-size 32 --max-windows 3072 --seed 0 > dump.log 2>&1
date -u +%FT%TZ > dump.done
