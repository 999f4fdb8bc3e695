#!/usr/bin/env bash
# The issue-24 latency benchmark as measured for docs/latency.md (about 2 hours on a quiet 2-core CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
B="python experiments/benchmark_latency.py"
OUT=runs/bench24
# Prediction quality at batch 32 (the targets), then batch 1; a row per (model, backend, batch, threads).
$B predict --out $OUT/predict --batches 32 --thread-counts 1 --backends torch onnxruntime
$B predict --out $OUT/predict --batches 32 --thread-counts 2 --backends torch
$B predict --out $OUT/predict --batches 1 --thread-counts 1 --backends torch onnxruntime --staircase docs/latency_staircase.png
# Does it pay: the latency search (predicted, round_to auto) against the MACs search, re-timed, 5 seeds.
$B pay --out $OUT/pay   # timed at batch 256 (the default; see the script)
# The diagnostic arm (the latency search without the staircase), on the same bases and the same table.
for seed in 0 1 2 3 4; do mkdir -p $OUT/pay-round1/seed$seed; cp $OUT/pay/seed$seed/base-* $OUT/pay-round1/seed$seed/; done
cp -r $OUT/pay/shared_latency_tables $OUT/pay-round1/
$B pay --out $OUT/pay-round1 --latency-round-to 1
