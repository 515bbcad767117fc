#!/bin/bash
# The other zero-shot tasks (EWoK fast, WUG adjective nominalisation, reading) on every study run.
cd /work/antlm-study
D=/work/shared/data
for run in study/runs/{baseline,cached,antlm,antlm-cached,antlm-cached-mlmkd}/seed*; do
  name=$(echo $run | cut -d/ -f3)-$(basename $run)
  [ -f extra/$name/results.json ] && continue
  bbl eval $run --tasks ewok,wug_adj,reading --task-data ewok=$D/ewok_fast/ewok_fast.zip --out extra/$name > extra-$name.log 2>&1 || echo "failed $name"
done
echo done > extra.done
