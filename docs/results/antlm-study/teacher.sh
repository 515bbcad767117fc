#!/bin/bash
set -e
cd /work/antlm-study
D=/work/shared/data
/usr/bin/time -v bbl prepare --train-dir $D/babylm_10M --dev-dir $D/babylm_dev --out prepared --vocab-size 4096 > prepare.log 2>&1
/usr/bin/time -v bbl train-teacher llama-study --data prepared --out teacher-llama --resume > teacher.log 2>&1
/usr/bin/time -v bbl dump-logits --teacher teacher-llama --data prepared --out cache/llama-t1.zarr --topk 64 --temperature 1.0 --batch-size 32 --max-windows 3072 --seed 0 > dump.log 2>&1
echo done > teacher.done
