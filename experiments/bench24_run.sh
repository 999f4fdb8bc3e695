#!/usr/bin/env bash
# The issue-24 latency benchmark as measured for docs/latency.md (about 80 minutes on a quiet 2-core CPU).
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
