#!/bin/bash
# Entity tracking (full: regular, ambiref, move_contents) on the study's baseline and cached students and its
# teacher, after the study. As run on 2026-11-28 (PYTHONPATH = a worktree of the commit that ran it).
cd /work/antlm-study
run_eval() {  # out name run tasks
  [ -f $1/$2/results.json ] && return
  /usr/bin/time -f "%e s wall" python -m bbl eval $3 --tasks $4 --suite full --pair-scoring pipeline --out $1/$2 > $1-$2.log 2>&1 || echo "failed $2"
}
for arm in cached baseline; do for s in 0 1 2; do
  run_eval full-et $arm-seed$s study/runs/$arm/seed$s entity_tracking
done; done
run_eval full-et teacher-llama teacher-llama entity_tracking
