"""``benchmark_search.py budgets``: the budget-targeted search against hand-picking, judged on the recovered model.

    OMP_NUM_THREADS=1 python experiments/benchmark_search.py budgets experiments/digits_jitter/config.yaml \
        --seeds 0 --finetune-steps 54 --recover-epochs 10 --out runs/bench23/jitter-s0

Per seed (its own validation split, base model and sampler seed):

1. the base is trained to convergence: one epoch at a time until the validation accuracy has not improved for
   ``--patience`` epochs (the best epoch's weights kept; the curve printed), so that a pruned model cannot beat
   its base merely by training longer;
2. the arms spend equal compute, counted in optimizer steps plus forward batches:
   - ``B1``: at every budget, the five hand-picked plans (uniform l1 / l2 / fpgm, global l1 / l2), each projected
     onto the budget and fine-tuned with the standard recipe; 5 candidates per budget;
   - ``B2``: at every budget, uniform-l2 and global-l2 only, each fine-tuned with half of that budget's compute
     (the baseline that spends its compute on long fine-tunes);
   - ``search-OPT``: the budgeted search (``study.search: budgeted``, allocation optimizer OPT) with the same total;
3. verdicts per budget: the best validation metric each arm found, and the **recovered test** metric: the plan
   each arm selects there, pruned from the base again and fine-tuned ``--recover-epochs`` epochs (the same recipe
   for every arm), scored on the test split.

Each seed writes ``results.json``; ``benchmark_search.py budgets-combine DIR ... --out DIR`` prints and writes the
tables (mean ± standard error over seeds), the fidelity correlations and one PNG (fronts, per-budget bars).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch

from autoprune.config import Config, load_config
from autoprune.evaluate import train
from autoprune.plan import PruningPlan
from autoprune.report import hypervolume
from autoprune.space import baseline_params
from autoprune.study import (
    FinetuneBudget,
    Task,
    budget_summaries,
    budget_winner,
    budgeted_plan,
    evaluate_plan,
    is_final,
    prepare_task,
    resolve,
    run_budgeted,
    staged_spend,
    trial_seed,
    unit_costs,
)

LOG_FLOOR = 0.01


def log_cost(cost: float) -> float:
    return (math.log10(max(cost, LOG_FLOOR)) - math.log10(LOG_FLOOR)) / -math.log10(LOG_FLOOR)


def converged_base(config: Config, out: Path, patience: int, max_epochs: int, log: Any, plateau: int = 0) -> Path:
    """Train the base one epoch at a time until validation accuracy stalls for ``patience`` epochs; with
    ``plateau`` > 0, then go on from the best weights at a tenth of the learning rate, ``plateau`` times (a
    reduce-on-plateau schedule, so that the base is trained to convergence at a small learning rate too)."""
    path = out / "base-converged.pt"
    if path.exists():
        log(f"  base: reusing {path}")
        return path
    resolved = resolve(config)
    model, data, metric = resolved.model, resolved.data, resolved.metric
    lr = config.base_training.lr
    best, best_state, since, curve, drops = -math.inf, None, 0, [], 0
    for epoch in range(max_epochs):
        if plateau:
            step_lr = lr * 0.1**drops
        else:
            step_lr = lr * 0.5 * (1 + math.cos(math.pi * min(epoch / max_epochs, 1.0)))
        train(model, data.train, epochs=1, lr=step_lr, seed=epoch)
        accuracy = float(metric(model.eval(), data.val))
        curve.append(round(accuracy, 4))
        if accuracy > best:
            best, best_state, since = accuracy, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
        if since >= patience:
            if drops >= plateau:
                break
            drops, since = drops + 1, 0
            model.load_state_dict(best_state)
    log(f"  base: {len(curve)} epochs, best validation {best:.4f}; curve {curve}")
    assert best_state is not None
    out.mkdir(parents=True, exist_ok=True)
    torch.save(best_state, path)
    (out / "base-curve.json").write_text(json.dumps(curve))
    return path


def seeded(config: Config, seed: int, out: Path, args: argparse.Namespace, weights: Path | None = None) -> Config:
    finetune = config.finetune
    if args.finetune_steps is not None:
        finetune = finetune.model_copy(update={"steps": args.finetune_steps})
    study = config.study.model_copy(update={"seed": seed, "search": "budgeted", "budgets": list(args.budgets)})
    model = config.model if weights is None else config.model.model_copy(update={"weights": str(weights)})
    return config.model_copy(update={"study": study, "finetune": finetune, "output": out, "model": model})


def scored(task: Task, plan: PruningPlan, seed: int, finetune: FinetuneBudget | None = None) -> tuple[float, float]:
    result = evaluate_plan(task, plan, seed=seed, finetune=finetune)
    return result.metric, result.cost


def baselines_arm(task: Task, seed: int, budgets: Sequence[float], *, long: bool) -> dict[str, Any]:
    """B1 (every hand-picked plan, standard fine-tune) or B2 (uniform-l2 and global-l2, half a budget's compute each)."""
    costs = unit_costs(task)
    standard = costs.standard()
    points, picks, index = [], {}, 0
    steps = forward = 0
    per_budget = len(baseline_params(task.space, budgets[0])) * standard.total
    for budget in budgets:
        params = baseline_params(task.space, budget)
        if long:  # uniform-l2 and global-l2
            params = [p for p in params if all(v == "l2" for k, v in p.items() if k.startswith("criterion"))]
            length = per_budget // len(params) - costs.recalibration - 2 * costs.validation
            finetune: FinetuneBudget | None = FinetuneBudget(0, length)
        else:
            finetune, length = None, costs.finetune_steps
        best = None
        for p in params:
            plan = task.space.plan_from_params(p)
            metric, cost = scored(task, plan, trial_seed(task.config.study.seed, index), finetune)
            index += 1
            steps += length
            forward += costs.recalibration + 2 * costs.validation
            points.append((metric, cost, budget))
            if best is None or metric > best[0]:
                best = (metric, cost, plan.to_dict())
        picks[str(budget)] = best
    return {"points": points, "picks": picks, "steps": steps, "forward_batches": forward}


def search_arm(task: Task, optimizer: str, total: int) -> dict[str, Any]:
    study_cfg = task.config.study
    stages = study_cfg.stages.model_copy(update={"budget": total})
    allocation = study_cfg.allocation.model_copy(update={"optimizer": optimizer})
    config = task.config.model_copy(
        update={"study": study_cfg.model_copy(update={"stages": stages, "allocation": allocation})}
    )
    local = copy.copy(task)
    local.config = config
    schedule, planner = budgeted_plan(local)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    run_budgeted(study, storage, local, schedule, planner, catch=(Exception,))
    spent = staged_spend(study)
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    points = [(t.values[0], t.values[1], t.params["budget"]) for t in trials if is_final(t)]
    picks = {}
    for budget in config.study.budgets:
        winner = budget_winner(trials, budget)
        picks[str(budget)] = None if winner is None else (winner.values[0], winner.values[1], winner.user_attrs["plan"])
    fidelity = {
        str(s.budget): {"spearman": s.spearman, "kendall": s.kendall, "pairs": s.pairs} for s in budget_summaries(study)
    }
    return {"points": points, "picks": picks, "steps": spent.train_steps, "forward_batches": spent.forward_batches,
            "fidelity": fidelity, "schedule": schedule.describe()}


def recovered(task: Task, plan: dict[str, Any], epochs: int, seed: int) -> float:
    """``plan`` pruned from the base again, recalibrated and fine-tuned ``epochs`` epochs, scored on the test split."""
    model, _ = task.prune(PruningPlan.from_dict(plan))
    task.evaluator.recalibrate(model, task.config.finetune.bn_recalibration_batches, seed)
    task.evaluator.finetune(model, epochs=epochs, steps=None, lr=task.config.finetune.lr, seed=seed)
    return float(task.evaluator.score(model, task.data.test))


def run(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmark_search.py budgets")
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.25, 0.1, 0.05])
    parser.add_argument("--finetune-steps", type=int, default=None)
    parser.add_argument("--recover-epochs", type=int, default=10)
    parser.add_argument("--optimizers", nargs="+", default=["tpe"])
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--max-epochs", type=int, default=80)
    parser.add_argument("--plateau", type=int, default=0,
                        help="after the first stall, go on from the best weights at lr/10 this many times")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(args.config)
    log = lambda line: print(line, flush=True)  # noqa: E731
    for seed in args.seeds:
        started = time.perf_counter()
        out = args.out / f"seed{seed}"
        weights = converged_base(seeded(config, seed, out, args), out, args.patience, args.max_epochs, log, args.plateau)
        task = prepare_task(seeded(config, seed, out, args, weights), log)
        costs = unit_costs(task)
        arms: dict[str, Any] = {}
        for name, long in (("B1", False), ("B2", True)):
            t0 = time.perf_counter()
            arms[name] = baselines_arm(task, seed, args.budgets, long=long)
            arms[name]["seconds"] = time.perf_counter() - t0
        total = arms["B1"]["steps"] + arms["B1"]["forward_batches"]
        for optimizer in args.optimizers:
            t0 = time.perf_counter()
            arms[f"search-{optimizer}"] = search_arm(task, optimizer, total)
            arms[f"search-{optimizer}"]["seconds"] = time.perf_counter() - t0
            log(arms[f"search-{optimizer}"]["schedule"])
        for name, arm in arms.items():
            arm["recovered"] = {}
            for budget, pick in arm["picks"].items():
                arm["recovered"][budget] = None if pick is None else recovered(task, pick[2], args.recover_epochs, seed)
            best = " ".join(f"{b}:{(p or [math.nan])[0]:.3f}/{arm['recovered'][b] or math.nan:.3f}" for b, p in arm["picks"].items())
            log(f"  seed {seed} {name:<14} val/recovered-test {best}  compute {arm['steps'] + arm['forward_batches']}")
        result = {"seed": seed, "base_metric": task.base.metric, "costs": vars(costs), "arms": arms,
                  "seconds": time.perf_counter() - started, "recover_epochs": args.recover_epochs}
        (out / "results.json").write_text(json.dumps(result, default=str))
        log(f"seed {seed}: {result['seconds']:.0f}s")
    return 0


def _se(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan)


def _fmt(pair: tuple[float, float], scale: float = 1.0) -> str:
    mean, se = pair
    return "-" if math.isnan(mean) else f"{mean * scale:.3f} ± {se * scale:.3f}" if not math.isnan(se) else f"{mean * scale:.3f}"


def combine(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmark_search.py budgets-combine")
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    results = [json.loads(p.read_text()) for f in args.folders for p in sorted(f.glob("seed*/results.json"))]
    arms = list(results[0]["arms"])
    budgets = list(results[0]["arms"]["B1"]["picks"])
    lines = [f"# {args.title}", "", f"seeds {[r['seed'] for r in results]}; base validation "
             f"{_fmt(_se([r['base_metric'] for r in results]))}; recovery {results[0]['recover_epochs']} epochs", ""]
    for verdict, key in (("best validation metric within the compute", "val"), ("recovered test metric", "test")):
        lines += [f"**{verdict}** (mean ± SE over seeds)", "", "| arm | " + " | ".join(f"<= {b}" for b in budgets) + " | mean |",
                  "| --- |" + " --- |" * (len(budgets) + 1)]
        for arm in arms:
            cells, means = [], []
            for b in budgets:
                values = [(r["arms"][arm]["picks"][b] or [math.nan])[0] if key == "val" else (r["arms"][arm]["recovered"][b] or math.nan) for r in results]
                cells.append(_fmt(_se(values)))
                means.append(values)
            overall = [statistics.fmean(v) for v in zip(*means, strict=True)]
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {_fmt(_se(overall))} |")
        lines.append("")
    # Margins of each search arm over the best of B1 and B2, per seed then averaged (recovered test metric).
    lines += ["**search minus best of B1 and B2, recovered test metric, points** (per-seed differences, mean ± SE)", "",
              "| arm | " + " | ".join(f"<= {b}" for b in budgets) + " | mean over budgets |", "| --- |" + " --- |" * (len(budgets) + 1)]
    for arm in [a for a in arms if a.startswith("search")]:
        cells, per_seed = [], []
        for b in budgets:
            diffs = [100 * (r["arms"][arm]["recovered"][b] - max(r["arms"]["B1"]["recovered"][b], r["arms"]["B2"]["recovered"][b])) for r in results]
            cells.append(_fmt(_se(diffs)))
            per_seed.append(diffs)
        overall = [statistics.fmean(v) for v in zip(*per_seed, strict=True)]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {_fmt(_se(overall))} |")
    lines += ["", "**hypervolume of the validation fronts, compute, wall** (mean ± SE)", "",
              "| arm | HV log-cost | HV linear | optimizer steps | forward batches | wall s |", "| --- | --- | --- | --- | --- | --- |"]
    for arm in arms:
        hv_log = [hypervolume([(m, log_cost(c)) for m, c, _ in r["arms"][arm]["points"]]) for r in results]
        hv = [hypervolume([(m, c) for m, c, _ in r["arms"][arm]["points"]]) for r in results]
        a = [r["arms"][arm] for r in results]
        lines.append(f"| {arm} | {_fmt(_se(hv_log))} | {_fmt(_se(hv))} | {_fmt(_se([x['steps'] for x in a]), 1)} | "
                     f"{_fmt(_se([x['forward_batches'] for x in a]))} | {_fmt(_se([x['seconds'] for x in a]))} |")
    for arm in [a for a in arms if a.startswith("search")]:
        lines += ["", f"**screen fidelity, {arm}** (Spearman / Kendall of screen score vs first fine-tuned score, mean over seeds)", ""]
        for b in budgets:
            rho = _se([r["arms"][arm]["fidelity"].get(b, {}).get("spearman", math.nan) for r in results])
            tau = _se([r["arms"][arm]["fidelity"].get(b, {}).get("kendall", math.nan) for r in results])
            lines.append(f"- budget {b}: Spearman {_fmt(rho)}, Kendall {_fmt(tau)}")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(text)
    print(text)
    _plot(results, arms, budgets, args.out / "budgets.png", args.title)
    return 0


def _plot(results: list[dict[str, Any]], arms: list[str], budgets: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    first = results[0]
    for arm in arms:
        points = sorted((c, m) for m, c, _ in first["arms"][arm]["points"])
        left.scatter([p[0] for p in points], [p[1] for p in points], s=12, label=arm)
    left.set_xscale("log")
    left.set_xlabel("relative cost")
    left.set_ylabel("validation metric (fine-tuned)")
    left.set_title(f"candidates, seed {first['seed']}")
    left.legend()
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        stats = [_se([r["arms"][arm]["recovered"][b] for r in results]) for b in budgets]
        right.bar([x + i * width for x in range(len(budgets))], [s[0] for s in stats], width,
                  yerr=[0 if math.isnan(s[1]) else s[1] for s in stats], label=arm, capsize=3)
    right.set_xticks([x + width * (len(arms) - 1) / 2 for x in range(len(budgets))], [f"<= {b}" for b in budgets])
    right.set_ylabel("recovered test metric")
    right.set_title("per budget, mean ± SE over seeds")
    lows = [r["arms"][a]["recovered"][b] for r in results for a in arms for b in budgets if r["arms"][a]["recovered"][b]]
    right.set_ylim(max(0.0, min(lows) - 0.05), min(1.0, max(lows) + 0.03))
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
