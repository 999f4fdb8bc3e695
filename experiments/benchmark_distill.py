"""Fine-tuning pruned candidates with and without knowledge distillation from the unpruned model, same steps.

    OMP_NUM_THREADS=1 python experiments/benchmark_distill.py experiments/digits_noisy/config.yaml \
        --seeds 0 1 2 --steps 46 --out runs/bench-distill

One base model (trained once by the config, cached in ``--out``); the same candidates, uniform plans at
``--ratios`` with each of ``--criteria``, are pruned once and fine-tuned by both arms with the same recipe, the
same ``finetune.steps`` budget and the same seeds (each seed is an independent fine-tune of every candidate):

- ``plain``: the config's fine-tune (cross-entropy);
- ``distill w= T=`` (one arm per ``--distill weight:T``): ``(1 - weight) * cross-entropy + weight * T^2 *
  KL(teacher || student)``, the teacher being the unpruned base model.

It prints, per arm, the best validation metric among the candidates at or under 25%, 10% and 5% of the base
MACs (mean ± standard error over seeds), and each candidate's mean, and writes ``results.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from pathlib import Path

import torch

from autoprune.config import Config, DistillConfig, load_config
from autoprune.evaluate import build_evaluator
from autoprune.plan import PruningPlan
from autoprune.study import prepare_task, trial_seed

BUDGETS = (0.25, 0.10, 0.05)
RATIOS = (0.55, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)


def mean_se(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {se:.4f}"


def arm_config(config: Config, steps: int, distill: DistillConfig | None) -> Config:
    finetune = config.finetune.model_copy(update={"steps": steps, "distill": distill})
    return config.model_copy(update={"finetune": finetune})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path, nargs="?", default=Path("experiments/digits_noisy/config.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=46, help="optimizer steps per fine-tune (digits: 23 a pass)")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    parser.add_argument("--criteria", nargs="+", default=["l1", "fpgm"])
    parser.add_argument(
        "--distill", nargs="+", default=["0.5:4"], metavar="WEIGHT:T", help="one distillation arm per weight:temperature"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-distill"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(args.config)
    config = config.model_copy(update={"output": args.out, "runtime": config.runtime.model_copy(update={"device": "cpu"})})
    task = prepare_task(config, print)
    print(f"base {config.metric} {task.base.metric:.4f}; {len(task.base.groups)} groups; {args.steps} steps per fine-tune")
    arms = {"plain": arm_config(config, args.steps, None)}
    for spec in args.distill:
        weight, temperature = (float(v) for v in spec.split(":"))
        distill = DistillConfig(weight=weight, temperature=temperature)
        arms[f"distill w={weight:g} T={temperature:g}"] = arm_config(config, args.steps, distill)
    evaluators = {
        name: build_evaluator(
            cfg,
            train_loader=task.data.train,
            val_loader=task.data.val,
            metric=task.evaluator.metric,  # type: ignore[attr-defined]
            runtime=task.evaluator.runtime,  # type: ignore[attr-defined]
            teacher=task.base.model,
            section="finetune",
        )
        for name, cfg in arms.items()
    }
    candidates = []
    for criterion in args.criteria:
        for ratio in args.ratios:
            plan = PruningPlan.uniform(task.base.groups, ratio, criterion, round_to=config.prune.channel_multiple, scope=config.prune.criteria_scope)
            pruned, report = task.prune(plan)
            candidates.append((f"{criterion}@{ratio:g}", pruned, report.macs_ratio))

    # results[arm][seed] = [(metric, macs), ...] in candidate order
    results: dict[str, dict[int, list[tuple[float, float]]]] = {arm: {} for arm in arms}
    seconds = dict.fromkeys(arms, 0.0)
    for seed in args.seeds:
        for arm, evaluator in evaluators.items():
            started = time.perf_counter()
            points = []
            for index, (_, pruned, macs) in enumerate(candidates):
                model = copy.deepcopy(pruned)
                fseed = trial_seed(seed, index)
                evaluator.recalibrate(model, config.finetune.bn_recalibration_batches, fseed)
                evaluator.finetune(model, epochs=config.finetune.epochs, steps=args.steps, lr=config.finetune.lr, seed=fseed)
                points.append((evaluator.score(model), macs))
            results[arm][seed] = points
            seconds[arm] += time.perf_counter() - started
            print(f"seed {seed} {arm}: done in {time.perf_counter() - started:.1f} s")

    def best(points: list[tuple[float, float]], budget: float) -> float:
        fits = [m for m, c in points if c <= budget + 1e-12]
        return max(fits) if fits else math.nan

    print()
    print(f"best validation {config.metric} at <= x of the base MACs, mean ± s.e. over seeds {args.seeds}, {args.steps} steps:")
    print("| arm | " + " | ".join(f"<= {b:.0%} MACs" for b in BUDGETS) + " | fine-tune seconds |")
    print("| --- |" + " --- |" * (len(BUDGETS) + 1))
    for arm in arms:
        cells = [mean_se([best(results[arm][s], b) for s in args.seeds]) for b in BUDGETS]
        print(f"| {arm} | " + " | ".join(cells) + f" | {seconds[arm]:.0f} |")
    print()
    print("| candidate | MACs | " + " | ".join(arms) + " |")
    print("| --- | --- |" + " --- |" * len(arms))
    for index, (name, _, macs) in enumerate(candidates):
        cells = [mean_se([results[arm][s][index][0] for s in args.seeds]) for arm in arms]
        print(f"| {name} | {macs:.3f} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "steps": args.steps,
                "arms": list(arms),
                "candidates": [{"name": n, "macs": m} for n, _, m in candidates],
                "results": {arm: {str(s): pts for s, pts in by_seed.items()} for arm, by_seed in results.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
