"""MACs against measured latency, and whether searching on latency pays (issue 19). Reports; asserts nothing.

    OMP_NUM_THREADS=1 python experiments/benchmark_latency.py --out runs/bench-latency

1. **MACs against latency.** For each built-in model (``--models``), ``--plans`` random per-group plans (ratios
   uniform in [0, 0.8], l1) on a digits-sized input: relative MACs and relative latency (the ``torch`` backend,
   batch 1, ``--threads`` CPU threads, the median of ``--runs`` calls), Spearman's rank correlation per model, and
   the plans whose MACs rank and latency rank disagree most.
2. **Does it pay?** For the model with the lowest correlation: two searches with the same trials, seed and recipe,
   one with ``objectives: [metric, macs]``, one with ``[metric, latency]``. Every completed trial of both is
   re-measured by one meter (so both sides share one base figure), and the best validation metric under 50% and
   25% of the base latency is printed for each.
3. **Overhead.** The share of a latency-search trial spent measuring latency (cache hits cost nothing).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch

import autoprune
from autoprune.config import config_from_dict
from autoprune.data import digits
from autoprune.engine import apply_plan, find_groups
from autoprune.evaluate import CPU, LatencyMeter, LatencyRun, MemoryCache, measure_latency, train
from autoprune.models import build_model
from autoprune.plan import PruningPlan
from autoprune.study import prepare_task

SHAPE = (1, 16, 16)  # digits, upsampled: what every built-in model here takes
BUDGETS = (0.5, 0.25)


def rank_table(models: list[str], plans: int, runs: int, threads: int, seed: int, batch: int) -> dict[str, float]:
    """Part 1: per model, random plans' relative MACs and latency; returns Spearman per model."""
    rng = random.Random(seed)
    example = torch.zeros(1, *SHAPE)  # groups and MACs per sample; latency at `batch`
    timed = torch.zeros(batch, *SHAPE)
    run = LatencyRun(CPU, runs=runs, warmup=max(2, runs // 5), threads=threads)
    rhos: dict[str, float] = {}
    rows = []
    for name in models:
        model = build_model(name, in_channels=SHAPE[0], num_classes=10).eval()
        groups = find_groups(model, example)
        base = measure_latency(model, timed, run)
        points = []
        for index in range(plans):
            plan = PruningPlan({g.name: (round(rng.uniform(0.0, 0.8), 2), "l1") for g in groups})
            pruned, report = apply_plan(model, example, plan)
            measured = measure_latency(pruned, timed, run)
            points.append((index, report.macs_ratio, measured.median_ms / base.median_ms, measured.spread, plan))
        frame = pd.DataFrame(points, columns=["plan", "macs", "latency", "spread", "obj"])
        rho = float(frame["macs"].corr(frame["latency"], method="spearman"))
        rhos[name] = rho
        frame["gap"] = (frame["macs"].rank() - frame["latency"].rank()).abs()
        worst = frame.sort_values("gap", ascending=False).head(3)
        macs_range = f"{frame['macs'].min():.2f}-{frame['macs'].max():.2f}"
        latency_range = f"{frame['latency'].min():.2f}-{frame['latency'].max():.2f}"
        spread = f"{frame['spread'].median():.1%}"
        rows.append((name, len(groups), f"{base.median_ms:.3f}", f"{rho:.3f}", spread, macs_range, latency_range))
        print(f"\n{name}: plans where the MACs rank and the latency rank disagree most (of {plans}):")
        for _, r in worst.iterrows():
            print(f"  plan {int(r['plan'])}: MACs {r['macs']:.3f}, latency {r['latency']:.3f} (rank gap {int(r['gap'])}): "
                  f"{r['obj'].summary()}")  # fmt: skip
    print("\n| model | groups | base ms | Spearman (MACs, latency) | median spread | MACs range | latency range |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    return rhos


def search_config(
    out: Path, model: str, weights: Path, cost: str, trials: int, runs: int, threads: int, batch: int
) -> dict[str, Any]:
    return {
        "name": f"bench-{cost}",
        "output": str(out / cost),
        "model": {"builtin": model, "input_shape": list(SHAPE), "weights": str(weights)},
        "data": {"builtin": "digits", "batch_size": 64, "options": {"size": SHAPE[1], "noise": 0.5}},
        "prune": {"search_space": "per_stage", "ratio": [0.0, 0.9], "criteria": ["l1"]},
        "finetune": {"epochs": 1, "lr": 0.01, "bn_recalibration_batches": 5},
        "objectives": ["metric", cost],
        "latency": {"runs": runs, "warmup": max(2, runs // 5), "threads": threads, "batch_size": batch},
        "study": {"sampler": "tpe", "n_trials": trials, "seed": 0},
        "runtime": {"device": "cpu"},
    }


def best_under(rows: list[tuple[float, float]], budget: float) -> str:
    within = [metric for metric, latency in rows if latency <= budget]
    return f"{max(within):.4f}" if within else "none"


def does_it_pay(model: str, out: Path, trials: int, runs: int, threads: int, base_epochs: int, batch: int) -> None:
    """Parts 2 and 3."""
    data = digits(batch_size=64, size=SHAPE[1], noise=0.5, seed=0)
    base = build_model(model, in_channels=SHAPE[0], num_classes=10)
    train(base, data.train, epochs=base_epochs, lr=0.05, seed=0)
    weights = out / "base.pt"
    torch.save(base.state_dict(), weights)
    studies, seconds = {}, {}
    for cost in ("macs", "latency"):
        shutil.rmtree(out / cost, ignore_errors=True)
        config = config_from_dict(search_config(out, model, weights, cost, trials, runs, threads, batch))
        started = time.perf_counter()
        studies[cost] = autoprune.search(config)
        seconds[cost] = time.perf_counter() - started
    # One meter re-measures every trial of both searches: one base figure, one machine state, one cache.
    task = prepare_task(config_from_dict(search_config(out, model, weights, "latency", trials, runs, threads, batch)))
    meter = LatencyMeter(task.config.latency, CPU, task.base_model, task.example_inputs,
                         {g.name: g.channels for g in task.groups}, cache=MemoryCache())  # fmt: skip
    print(f"\nbase {model}: validation accuracy {task.base_metric:.4f}, {meter.base().median_ms:.3f} ms")
    print("\n| search | trials | wall | best accuracy, latency <= 50% | best accuracy, latency <= 25% | fastest trial (rel latency) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for cost, study in studies.items():
        rows = []
        for t in study.trials:
            if t.state != optuna.trial.TrialState.COMPLETE or not t.user_attrs.get("feasible", True):
                continue
            pruned, report = task.prune(PruningPlan.from_dict(t.user_attrs["plan"]))
            latency = meter.measure(pruned, {n: after for n, (_, after) in report.channels.items()}).relative
            rows.append((t.values[0], latency))
        cells = [best_under(rows, b) for b in BUDGETS]
        print(f"| {cost} objective | {len(study.trials)} | {seconds[cost]:.0f} s | {cells[0]} | {cells[1]} | "
              f"{min(lat for _, lat in rows):.3f} |")  # fmt: skip
    shares, fresh = [], []
    for t in studies["latency"].trials:
        if t.duration is None or "latency" not in t.user_attrs.get("seconds", {}):
            continue
        share = t.user_attrs["seconds"]["latency"] / t.duration.total_seconds()
        shares.append(share)
        if not t.user_attrs.get("latency_cached"):
            fresh.append(share)
    print(f"\noverhead: measuring latency took {statistics.fmean(shares):.1%} of a latency-search trial on average "
          f"({statistics.fmean(fresh):.1%} of a trial that measured, {len(shares) - len(fresh)} of {len(shares)} trials "
          "hit the cache)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet_small", "mobilenet_small", "vit_tiny"])
    parser.add_argument("--plans", type=int, default=30)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--base-epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="latency batch size (latency.batch_size)")
    parser.add_argument("--search-model", help="the model of part 2 (default: the lowest correlation of part 1)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-latency"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s) (torch and the latency measurement), "
          f"input {list(SHAPE)}, batch {args.batch}; {args.plans} random plans per model, median of {args.runs} calls each")  # fmt: skip
    rhos = rank_table(args.models, args.plans, args.runs, args.threads, seed=0, batch=args.batch)
    model = args.search_model or min(rhos, key=lambda m: rhos[m])
    print(f"\npart 2 on {model} (Spearman {rhos.get(model, float('nan')):.3f}): {args.trials} trials per search, seed 0, "
          "digits 16x16 with pixel noise 0.5, 1 fine-tune epoch per trial")  # fmt: skip
    does_it_pay(model, args.out, args.trials, args.runs, args.threads, args.base_epochs, args.batch)


if __name__ == "__main__":
    main()
