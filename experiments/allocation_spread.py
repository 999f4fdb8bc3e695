"""Does per-layer allocation matter on a task? The spread of plans of equal MACs against the spread of seeds.

    OMP_NUM_THREADS=1 python experiments/allocation_spread.py experiments/digits_jitter/config.yaml \
        --bands 0.1 0.25 --plans 6 --seeds 3

For each MACs target, it draws ``--plans`` random allocations that all prune to that target (within
``--tolerance``): each group keeps a random share of its channels (a log-normal weight per group) and one multiplier,
found by bisection, sets the total. The uniform plan at the same MACs is one of them. Each plan is fine-tuned with
the config's recipe (``finetune``) under ``--seeds`` seeds. It prints, per band:

- the plan spread: the standard deviation (and range) over plans of each plan's mean metric over seeds;
- the seed spread: the pooled standard deviation over seeds of one plan's metric;
- their ratio. Allocation matters where the plan spread clearly exceeds the seed spread.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from autoprune.config import load_config
from autoprune.plan import PruningPlan, kept_channels
from autoprune.study import Task, evaluate_plan, prepare_task


def allocation(task: Task, weights: dict[str, float], target: float, criterion: str) -> tuple[PruningPlan, float]:
    """The plan keeping ``min(1, t * weight)`` of each group's channels, with ``t`` bisected so that the plan's
    relative MACs is ``target``; and that MACs."""
    groups = {g.name: g.channels for g in task.base.groups if g.name in task.space.groups}
    cfg = task.config.prune

    def plan_for(t: float) -> PruningPlan:
        ratios = {}
        for name, channels in groups.items():
            keep = min(1.0, t * weights[name])
            # never below one channel: a ratio of 1.0 is not a plan
            ratio = min(1.0 - 1.0 / channels, max(0.0, 1.0 - keep))
            ratios[name] = (round(ratio, 4), criterion)
        return PruningPlan(ratios, round_to=cfg.channel_multiple, scope=cfg.scopes[0])

    low, high = 0.0, 1.0 / min(weights.values())
    tried = []
    for _ in range(18):
        mid = (low + high) / 2
        plan = plan_for(mid)
        macs = task.prune(plan)[1].macs_ratio
        tried.append((abs(macs - target), macs, plan))
        low, high = (mid, high) if macs < target else (low, mid)
    _, macs, plan = min(tried, key=lambda t: t[0])
    return plan, macs


def kept(task: Task, plan: PruningPlan) -> str:
    return "-".join(str(kept_channels(g.channels, plan.groups[g.name].ratio)) for g in task.base.groups if g.name in plan.groups)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("config", type=Path)
    parser.add_argument("--bands", type=float, nargs="+", default=[0.1, 0.25], help="relative MACs targets")
    parser.add_argument("--plans", type=int, default=6, help="allocations per band, the uniform one included")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tune seeds per plan")
    parser.add_argument("--tolerance", type=float, default=0.1, help="relative MACs within target * (1 +- tol)")
    parser.add_argument("--sigma", type=float, default=0.6, help="log-normal spread of the per-group weights")
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/spread-<config name>")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(args.config)
    out = args.out or Path("runs") / f"spread-{config.name}"
    config = config.model_copy(update={"output": out})
    task = prepare_task(config, lambda line: print(line, flush=True))
    print(f"{config.name}: base {config.metric} {task.base.metric:.4f}; fine-tune {config.finetune.epochs} epoch(s) "
          f"/ {config.finetune.steps} steps; {args.plans} plans x {args.seeds} seeds per band", flush=True)
    rng = random.Random(0)
    names = [g.name for g in task.base.groups if g.name in task.space.groups]
    started = time.perf_counter()
    lines = []
    for band in args.bands:
        plan_means, seed_vars = [], []
        for index in range(args.plans):
            for _attempt in range(20):
                weights = {n: 1.0 if index == 0 else math.exp(rng.gauss(0.0, args.sigma)) for n in names}
                plan, macs = allocation(task, weights, band, args.criterion)
                if abs(macs - band) <= args.tolerance * band:
                    break
            else:
                print(f"  band {band:g}: no allocation within tolerance, skipped one plan", flush=True)
                continue
            metrics = [evaluate_plan(task, plan, seed=1000 * s + index).metric for s in range(args.seeds)]
            plan_means.append(statistics.fmean(metrics))
            seed_vars.append(statistics.variance(metrics) if len(metrics) > 1 else 0.0)
            label = "uniform" if index == 0 else f"plan {index}"
            print(f"  band {band:g} {label:<8} macs {macs:.3f} kept {kept(task, plan):<24} "
                  f"metric {statistics.fmean(metrics):.4f} (seeds {' '.join(f'{m:.3f}' for m in metrics)})", flush=True)
        plan_sd = statistics.stdev(plan_means) if len(plan_means) > 1 else 0.0
        seed_sd = math.sqrt(statistics.fmean(seed_vars)) if seed_vars else 0.0
        spread = max(plan_means) - min(plan_means) if plan_means else 0.0
        ratio = plan_sd / seed_sd if seed_sd > 0 else math.inf
        lines.append(f"band {band:g}: plan spread sd {plan_sd:.4f} (range {spread:.4f}, best {max(plan_means):.4f}, "
                     f"uniform {plan_means[0]:.4f}); seed spread sd {seed_sd:.4f}; ratio {ratio:.2f}")
    print(f"\n{config.name}: {time.perf_counter() - started:.0f}s")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
