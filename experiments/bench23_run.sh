#!/bin/bash
# The #23 benchmark as measured for docs/results.md: the budget-targeted search against hand-picking (B1, B2) at
# equal compute, judged on the recovered test metric; 5 seeds per task, 2 processes at a time, then the tables.
cd "$(dirname "$0")/.."   # the repository root
OUT=${OUT:-runs/bench23}
mkdir -p "$OUT"
B="env OMP_NUM_THREADS=1 .venv/bin/python -W ignore experiments/benchmark_search.py budgets"
{
for s in 0 1 2 3 4; do echo "$B experiments/digits_jitter/config.yaml --seeds $s --finetune-steps 54 --optimizers tpe cmaes evolution --out $OUT/jitter > $OUT/jitter-s$s.log 2>&1"; done
for s in 0 1 2 3 4; do echo "$B experiments/digits_noisy/mobilenet.yaml --seeds $s --finetune-steps 54 --out $OUT/mobilenet > $OUT/mobilenet-s$s.log 2>&1"; done
for s in 0 1 2 3 4; do echo "$B experiments/digits_noisy/config.yaml --seeds $s --finetune-steps 54 --out $OUT/resnet > $OUT/resnet-s$s.log 2>&1"; done
} | xargs -P 2 -I{} bash -c "{}"
C=".venv/bin/python experiments/benchmark_search.py budgets-combine"
$C "$OUT/jitter" --out "$OUT/jitter-all" --title "digits_jitter + vgg_uneven"
$C "$OUT/mobilenet" --out "$OUT/mobilenet-all" --title "digits_noisy + mobilenet_small"
$C "$OUT/resnet" --out "$OUT/resnet-all" --title "digits_noisy + resnet_small"
