#!/bin/bash
# The #18 benchmark as measured for docs/results.md (final code): 5 seeds per task, 2 processes at a time; then `combine` (see docs/results.md).
cd "$(dirname "$0")/.."   # the repository root
mkdir -p runs/bench18v5
B="env OMP_NUM_THREADS=1 .venv/bin/python -W ignore experiments/benchmark_search.py"
{
for s in 0 1 2 3 4; do echo "$B experiments/digits_jitter/config.yaml --seeds $s --ratios 0.5 0.7 0.8 0.9 --global-targets 0.25 0.1 0.05 0.02 --finetune-steps 108 --search staged:global_rank:tpe --out runs/bench18v5/jitter-s$s > runs/bench18v5/jitter-s$s.log 2>&1"; done
for s in 0 1 2 3 4; do echo "$B experiments/digits_noisy/config.yaml --seeds $s --ratios 0.5 0.7 0.8 0.9 --global-targets 0.25 0.1 0.05 0.02 --finetune-steps 54 --search staged:global_rank:tpe single:global_offset:tpe --out runs/bench18v5/noisy-s$s > runs/bench18v5/noisy-s$s.log 2>&1"; done
} | xargs -P 2 -I{} bash -c "{}"
