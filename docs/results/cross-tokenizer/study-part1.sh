#!/bin/bash
# The cross-tokenizer study of issue 41, part 1: the foreign teacher and its cache. It shares /work/studies/bl2 with
# the BabyLlama-2 comparison (docs/results/tuned-baseline.md): the same prepared study data, the same same-tokenizer
# teacher (teacher-llama, sha256 in tuned-baseline/part1.json) and its top-64 T = 1 cache (cache/llama-t1.zarr),
# so that study's `baseline` and `cached` runs (seeds 0-4) are this study's plain and same-tokenizer arms.
# The foreign teacher: the same preset (llama-study) on the same corpus under a 4,096-id byte-level BPE without the
# prefix space or NFKC (GPT-2 / Llama 3 / Qwen style: the line-start case of issue 41's bug 2), then its
# cross-tokenizer cache (top-64 + ALM arrays) of the student's 3,072 windows. Resumable (re-run it).
set -e
cd /work/studies/bl2
export HF_HUB_OFFLINE=1
D=/work/shared/data
B=/work/main/benchmarks
mkdir -p logs
[ -f tok-bpe-np/tokenizer.json ] || python3 $B/foreign_tokenizer.py --prepared prepared --kind bpe-no-prefix \
  --vocab-size 4096 --out tok-bpe-np > logs/xtok-tokenizer.log 2>&1
/usr/bin/time -v bbl prepare --train-dir $D/babylm_10M --dev-dir $D/babylm_dev --out prepared-bpe-np \
  --tokenizer tok-bpe-np > logs/xtok-prepare.log 2>&1
/usr/bin/time -v bbl train-teacher llama-study --data prepared-bpe-np --out teacher-bpe-np --resume \
  > logs/xtok-teacher.log 2>&1
date -u +%FT%TZ > xtok-teacher.done
/usr/bin/time -v bbl dump-logits --teacher teacher-bpe-np --data prepared --cache cache/xtok-bpe-np.zarr \
  --cross-tokenizer --topk 64 --temperature 1.0 --batch-size 32 --max-windows 3072 --data-seed 0 \
  > logs/xtok-dump.log 2>&1
date -u +%FT%TZ > xtok-dump.done
