"""Latency: MACs against measured latency, the latency table's predictions, and whether searching on it pays.

    python experiments/benchmark_latency.py rank --out runs/bench-latency          # issue 19: MACs vs latency
    python experiments/benchmark_latency.py predict --out runs/bench24/predict      # issue 24: the table
    python experiments/benchmark_latency.py pay --out runs/bench24/pay             # issue 24: does it pay?

``rank``: for each built-in 16x16 model, random per-group plans (ratios uniform in [0, 0.8], l1): relative MACs
against relative latency (torch, the median of ``--runs`` calls) and Spearman's rank correlation.

``predict``: for each model (default: the 3x224x224 stand-ins ``resnet18_like``, ``mobilenet_v2_like`` and
``vit_ti16``, random weights) and each setting (backend x batch x threads): the latency table is built
(``autoprune.evaluate.profile_latency``: each group at ``--points`` widths, the others at base width; its build time
and noise printed), then ``--plans`` random plans are timed and predicted. Spearman's rank correlation and the
median absolute % error of three predictors against the timed figure: the table's prediction (what
``latency.mode: predicted`` uses: log latency fitted on the table's calibration plans, see docs/latency.md), the
uniform curve alone, and MACs alone (base latency x relative MACs). With ``--staircase PNG`` one table's curves are
drawn, with the steps ``round_to: auto`` keeps.

``pay``: on ``--config`` (default: mobilenet_small on noisy digits), per seed: a base trained to convergence, then
two budgeted searches at equal compute (the same ``study.n_trials``; the training steps and forward batches each
spent are printed, as dropping an unreachable budget moves them a little):
``objectives: [metric, latency]`` with ``latency.mode: predicted`` and ``prune.round_to: auto`` (budgets 75 / 50 /
25% of the predicted latency), and ``[metric, macs]`` (budgets 75 / 50 / 25% of the MACs). Every fine-tuned trial
of both is timed again, each bracketed by base timings; under 75 / 50 / 25% of the base's latency, the best validation
metric of each arm, and that plan recovered (pruned from the base again, fine-tuned ``--recover-epochs`` epochs)
and scored on the test split. Also: the front's plans slower than the base, the table's build time and the share
of search time spent timing. Mean ± standard error over seeds. Reports; asserts nothing.

Timing is at ``--batch`` 256: at 16x16 this model runs in about 3 ms at batch 32, where per-call overhead sets the
latency (no plan gets under about 85% of it) and repeated timings spread 40%. A budget the arm's table cannot
reach within ``prune.ratio`` is dropped from that arm, and the budgets each arm searched are printed, with the
ratio of timed to predicted latency over the latency arm's plans. ``--latency-round-to 1`` runs the latency arm
without the staircase (a diagnostic: is it the prediction or the snapping?).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch

import autoprune
from autoprune.config import Config, load_config
from autoprune.engine import apply_plan, find_groups
from autoprune.errors import ConfigError
from autoprune.evaluate import CPU, LatencyRun, measure_latency, profile_latency
from autoprune.models import build_model
from autoprune.plan import PruningPlan
from autoprune.study import is_final, prepare_task, staged_spend

sys.path.insert(0, str(Path(__file__).parent))
from _bench_budgets import converged_base  # noqa: E402  (a sibling script)

SMALL = (1, 16, 16)
LARGE = (3, 224, 224)
THRESHOLDS = (0.75, 0.5, 0.25)


def _random_plan(groups: list[Any], rng: random.Random) -> PruningPlan:
    return PruningPlan({g.name: (round(rng.uniform(0.0, 0.8), 2), "l1") for g in groups})


def rank(args: argparse.Namespace) -> None:
    """Issue 19: MACs against measured latency on the 16x16 models."""
    rng = random.Random(0)
    example = torch.zeros(1, *SMALL)
    run = LatencyRun(CPU, runs=args.runs, warmup=max(2, args.runs // 5), threads=args.threads)
    print("| model | groups | base ms | Spearman (MACs, latency) | median spread | latency range |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models or ["resnet_small", "mobilenet_small", "vit_tiny"]:
        model = build_model(name, in_channels=SMALL[0], num_classes=10).eval()
        groups = find_groups(model, example)
        base = measure_latency(model, example, run, batch_size=args.batch)
        points = []
        for _ in range(args.plans):
            pruned, report = apply_plan(model, example, _random_plan(groups, rng))
            timed = measure_latency(pruned, example, run, batch_size=args.batch)
            points.append((report.macs_ratio, timed.median_ms / base.median_ms, timed.spread))
        frame = pd.DataFrame(points, columns=["macs", "latency", "spread"])
        rho = frame["macs"].corr(frame["latency"], method="spearman")
        print(f"| {name} | {len(groups)} | {base.median_ms:.3f} | {rho:.3f} | {frame['spread'].median():.1%} | "
              f"{frame['latency'].min():.2f}-{frame['latency'].max():.2f} |", flush=True)  # fmt: skip


def _quality(timed: pd.Series, predicted: pd.Series) -> tuple[float, float]:
    return float(timed.corr(predicted, method="spearman")), float(((predicted - timed).abs() / timed).median())


def predict_one(name: str, backend: str, batch: int, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    shape = LARGE if name in ("resnet18_like", "mobilenet_v2_like", "vit_ti16") else SMALL
    torch.manual_seed(0)
    model = build_model(name, in_channels=shape[0], num_classes=1000 if shape == LARGE else 10).eval()
    example = torch.zeros(1, *shape)
    groups = find_groups(model, example)
    run = LatencyRun(CPU, runs=args.runs, warmup=args.warmup, threads=threads)
    table = profile_latency(model, example, groups, run, {"model": name}, backend=backend, batch_size=batch, points=args.points)
    rng = random.Random(1)
    rows, plans = [], []
    started = time.perf_counter()
    for _ in range(args.plans):
        pruned, report = apply_plan(model, example, _random_plan(groups, rng))
        timed = measure_latency(pruned, example, run, backend=backend, batch_size=batch).median_ms
        channels = {n: after for n, (_, after) in report.channels.items()}
        macs = report.macs_ratio
        rows.append((timed, table.predict(channels, macs), table.base_ms * table.uniform_curve(macs), table.base_ms * macs))
        plans.append({"channels": channels, "macs": report.macs_ratio, "timed": timed})
    frame = pd.DataFrame(rows, columns=["timed", "predicted", "curve", "macs"])
    result = {
        "model": name, "backend": backend, "batch": batch, "threads": threads, "groups": len(groups),
        "entries": sum(len(v) for v in table.entries.values()), "base_ms": table.base_ms,
        "build_s": table.seconds, "noise": table.noise, "plans_s": time.perf_counter() - started,
        "table": table.to_dict(), "plans": plans,
    }  # fmt: skip
    for column in ("predicted", "curve", "macs"):
        result[f"{column}_rho"], result[f"{column}_err"] = _quality(frame["timed"], frame[column])
    return result


def predict(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "predict.jsonl"
    done = {(r["model"], r["backend"], r["batch"], r["threads"]) for r in _read_jsonl(results_path)}
    for batch in args.batches:
        for threads in args.thread_counts:
            for backend in args.backends:
                for name in args.models or ["resnet18_like", "mobilenet_v2_like", "vit_ti16"]:
                    if (name, backend, batch, threads) in done:
                        continue
                    torch.set_num_threads(threads)
                    result = predict_one(name, backend, batch, threads, args)
                    with results_path.open("a") as handle:
                        handle.write(json.dumps(result) + "\n")
                    print(_predict_row(result), flush=True)
    print_predictions(results_path)
    if args.staircase:
        _plot_staircase(_read_jsonl(results_path), args.staircase)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _predict_row(r: dict[str, Any]) -> str:
    return (f"| {r['model']} | {r['backend']} | {r['batch']} | {r['threads']} | {r['groups']} / {r['entries']} | "
            f"{r['base_ms']:.2f} | {r['build_s']:.0f} s | {r['noise']:.1%} | "
            f"{r['predicted_rho']:.3f} / {r['predicted_err']:.1%} | {r['curve_rho']:.3f} / {r['curve_err']:.1%} | "
            f"{r['macs_rho']:.3f} / {r['macs_err']:.1%} |")  # fmt: skip


def print_predictions(path: Path) -> None:
    print("\n| model | backend | batch | threads | groups / entries | base ms | table build | table noise | "
          "predicted (Spearman / median error) | uniform curve only | MACs only |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in _read_jsonl(path):
        print(_predict_row(r))


def _plot_staircase(results: list[dict[str, Any]], path: Path) -> None:
    """One table's per-group curves (the model with the most groups at batch 32, 1 thread, torch), the staircase
    steps marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from autoprune.evaluate import LatencyTable

    chosen = [r for r in results if r["batch"] == 32 and r["threads"] == 1 and r["backend"] == "torch"] or results
    figure = Figure(figsize=(12, 4.2))
    FigureCanvasAgg(figure)
    for index, r in enumerate(chosen[:3]):
        table = LatencyTable.from_dict(r["table"])
        axes = figure.add_subplot(1, min(3, len(chosen)), index + 1)
        steps = table.steps()
        for group in list(table.entries)[:6]:
            curve = table.curve(group)
            width = curve[-1][0]
            line = axes.plot([k / width for k, _ in curve], [ms / table.base_ms for _, ms in curve], "-", lw=1, label=group)[0]
            kept = [(k / width, ms / table.base_ms) for k, ms in curve if k in steps[group]]
            axes.plot(*zip(*kept, strict=True), "o", color=line.get_color(), ms=4)
        axes.set_title(f"{r['model']}, {r['backend']}, batch {r['batch']}: dots = round_to auto steps", fontsize=8)
        axes.set_xlabel("kept channels (fraction of the group)")
        axes.set_ylabel("latency (relative to the base)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nwrote {path}")


# --- does it pay -------------------------------------------------------------------------------------------------


def _arm_config(config: Config, arm: str, seed: int, out: Path, weights: Path, args: argparse.Namespace) -> Config:
    latency = config.latency.model_copy(
        update={"mode": "predicted" if arm == "latency" else "measured", "batch_size": args.batch, "threads": 1,
                "runs": args.runs, "warmup": args.warmup, "table_points": args.points}
    )  # fmt: skip
    prune = config.prune.model_copy(update={"round_to": args.latency_round_to if arm == "latency" else 1})
    study = config.study.model_copy(update={"seed": seed, "search": "budgeted", "budgets": list(THRESHOLDS), "n_trials": args.trials})
    model = config.model.model_copy(update={"weights": str(weights)})
    objectives = ("metric", "latency" if arm == "latency" else "macs")
    return config.model_copy(update={
        "latency": latency, "prune": prune, "study": study, "model": model, "objectives": objectives, "output": out / arm,
    })  # fmt: skip


class _BracketedMeter:
    """Relative latency of a model: its median over the mean of the base's timings just before and just after it,
    so a machine whose speed drifts (this VM's by 15-50%) moves both alike, as the latency table's sweeps do."""

    def __init__(self, task: Any, run: LatencyRun, batch: int) -> None:
        self.task, self.run, self.batch = task, run, batch
        self.base_ms = [self._ms(task.base.model)]

    def _ms(self, model: torch.nn.Module) -> float:
        backend = self.task.config.latency.backend
        return measure_latency(model, self.task.base.example_inputs, self.run, backend=backend, batch_size=self.batch).median_ms

    def relative(self, model: torch.nn.Module) -> float:
        ms = self._ms(model)
        self.base_ms.append(self._ms(self.task.base.model))
        return ms / ((self.base_ms[-2] + self.base_ms[-1]) / 2)

    def summary(self) -> dict[str, float]:
        median = statistics.median(self.base_ms)
        return {"base_ms": median, "base_spread": (max(self.base_ms) - min(self.base_ms)) / median}


def _search_reachable(config: Config) -> tuple[optuna.Study, Config]:
    """Search; where the table says the model cannot get under a budget (prune.ratio's limit), drop that budget and
    search the rest (the table is cached, so the retry costs no timing). The budgets searched are recorded."""
    while True:
        try:
            return autoprune.search(config), config
        except ConfigError as error:
            budgets = sorted(config.study.budgets, reverse=True)
            if "cannot be reached" not in str(error) or len(budgets) == 1:
                raise
            print(f"  {error}; searching {budgets[:-1]}", flush=True)
            config = config.model_copy(update={"study": config.study.model_copy(update={"budgets": budgets[:-1]})})


def _recovered(task: Any, plan: dict[str, Any], epochs: int, seed: int) -> float:
    model, _ = task.prune(PruningPlan.from_dict(plan))
    task.evaluator.recalibrate(model, task.config.finetune.bn_recalibration_batches, seed)
    task.evaluator.finetune(model, epochs=epochs, steps=None, lr=task.config.finetune.lr, seed=seed)
    return float(task.evaluator.score(model, task.data.test))


def pay_seed(config: Config, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    out = args.out / f"seed{seed}"
    seeded = config.model_copy(update={"output": out, "study": config.study.model_copy(update={"seed": seed})})
    weights = converged_base(seeded, out, args.patience, args.max_epochs, print)
    arms: dict[str, Any] = {}
    for arm in ("latency", "macs"):
        arm_config = _arm_config(config, arm, seed, out, weights, args)
        shutil.rmtree(arm_config.output, ignore_errors=True)
        if arm == "latency" and args.shared_tables.exists():
            shutil.copytree(args.shared_tables, arm_config.output / "latency_tables")
        started = time.perf_counter()
        study, arm_config = _search_reachable(arm_config)
        wall = time.perf_counter() - started
        if arm == "latency" and not args.shared_tables.exists():
            shutil.copytree(arm_config.output / "latency_tables", args.shared_tables)
        timing = sum(t.user_attrs.get("seconds", {}).get("latency", 0.0) for t in study.trials)
        spent = staged_spend(study)
        arms[arm] = {"study": study, "config": arm_config, "wall": wall, "timing": timing,
                     "compute": spent.train_steps + spent.forward_batches, "budgets": list(arm_config.study.budgets)}  # fmt: skip
    # One meter times every fine-tuned trial of both arms, each bracketed by timings of the base (as the table is).
    task = prepare_task(arms["macs"]["config"])
    meter = _BracketedMeter(task, LatencyRun(CPU, runs=args.runs, warmup=args.warmup, threads=1), args.batch)
    result: dict[str, Any] = {"seed": seed, "base_metric": task.base.metric}
    table_seconds = json.loads(next(args.shared_tables.glob("*.json")).read_text()).get("seconds", 0.0)
    for arm, data in arms.items():
        rows = []
        for t in data["study"].get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if not is_final(t) or not t.user_attrs.get("feasible", True):
                continue
            pruned, report = task.prune(PruningPlan.from_dict(t.user_attrs["plan"]))
            timed = meter.relative(pruned)
            rows.append((t.values[0], timed, t.user_attrs["plan"], t.number, t.values[1]))
        best: dict[str, Any] = {}
        for threshold in THRESHOLDS:
            within = [r for r in rows if r[1] <= threshold]
            if not within:
                best[str(threshold)] = None
                continue
            top = max(within, key=lambda r: r[0])
            best[str(threshold)] = {"val": top[0], "latency": top[1], "trial": top[3],
                                    "test": _recovered(task, top[2], args.recover_epochs, seed)}  # fmt: skip
        front = _front([(m, lat) for m, lat, *_ in rows])
        result[arm] = {
            "best": best, "wall": data["wall"], "timing": data["timing"], "compute": data["compute"],
            "front_slower_than_base": sum(1 for _, lat in front if lat > 1.0), "front": len(front),
            "points": [(m, lat, cost) for m, lat, _, _, cost in rows], "table_seconds": table_seconds if arm == "latency" else 0.0,
            "budgets": data["budgets"],
        }  # fmt: skip
        picks = ", ".join(
            f"<= {float(t):.0%}: " + ("none" if b is None else f"val {b['val']:.4f} test {b['test']:.4f} at {b['latency']:.2f}")
            for t, b in best.items()
        )
        print(f"seed {seed} {arm}: {picks}; compute {data['compute']}, {data['wall']:.0f} s", flush=True)
    result.update(meter.summary())
    return result


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [p for p in points if not any(o[0] >= p[0] and o[1] <= p[1] and o != p for o in points)]


def _mean_se(values: list[float]) -> str:
    if not values:
        return "none"
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{mean:.4f} ± {se:.4f} (n={len(values)})"


def print_pay(results: list[dict[str, Any]]) -> None:
    print("\n| arm | threshold (measured latency) | best validation | recovered test | seeds with a plan |")
    print("| --- | --- | --- | --- | --- |")
    for arm in ("latency", "macs"):
        for threshold in THRESHOLDS:
            picks = [r[arm]["best"][str(threshold)] for r in results if r[arm]["best"][str(threshold)]]
            print(f"| {arm} | <= {threshold:.0%} | {_mean_se([p['val'] for p in picks])} | "
                  f"{_mean_se([p['test'] for p in picks])} | {len(picks)} / {len(results)} |")  # fmt: skip
    print("\n| threshold | latency minus MACs arm, recovered test (paired seeds) |")
    print("| --- | --- |")
    for threshold in THRESHOLDS:
        diffs = [r["latency"]["best"][str(threshold)]["test"] - r["macs"]["best"][str(threshold)]["test"]
                 for r in results if r["latency"]["best"][str(threshold)] and r["macs"]["best"][str(threshold)]]  # fmt: skip
        print(f"| <= {threshold:.0%} | {_mean_se(diffs)} |")
    for arm in ("latency", "macs"):
        slow = sum(r[arm]["front_slower_than_base"] for r in results)
        front = sum(r[arm]["front"] for r in results)
        compute = statistics.fmean(r[arm]["compute"] for r in results)
        share = statistics.fmean(r[arm]["timing"] / r[arm]["wall"] for r in results)
        print(f"{arm}: front plans slower than the base {slow} of {front}; compute {compute:.0f} batches per search; "
              f"timing during the search {share:.2%} of its wall time")  # fmt: skip
        print(f"{arm}: budgets searched " + ", ".join(str(r[arm].get("budgets")) for r in results))
    # What the latency arm searched on (the table's prediction) against what its plans measured afterwards.
    ratios = [p[1] / p[2] for r in results for p in r["latency"]["points"] if len(p) == 3 and p[2] > 0]
    if ratios:
        low, _, high = statistics.quantiles(ratios, n=4)
        print(f"latency arm: timed / predicted latency of its fine-tuned plans: median {statistics.median(ratios):.2f} "
              f"(quartiles {low:.2f}-{high:.2f}, n={len(ratios)})")  # fmt: skip
    spreads = [r["base_spread"] for r in results if "base_spread" in r]
    if spreads:
        print(f"re-timing: the base's timings spread {min(spreads):.0%}-{max(spreads):.0%} (max-min over median) within a seed")
    table = results[0]["latency"]["table_seconds"]
    walls = [r["latency"]["wall"] for r in results]
    print(f"latency table: built once in {table:.1f} s, shared by every seed: {table / statistics.fmean(walls):.1%} of one "
          f"search, {table / sum(walls):.1%} of the {len(walls)} searches")  # fmt: skip


def pay(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    args.shared_tables = args.out / "shared_latency_tables"
    results_path = args.out / "pay.jsonl"
    done = {r["seed"] for r in _read_jsonl(results_path)}
    for seed in args.seeds:
        if seed in done:
            continue
        result = pay_seed(config, seed, args)
        with results_path.open("a") as handle:
            handle.write(json.dumps(result, default=str) + "\n")
    print_pay(_read_jsonl(results_path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("rank")
    p.add_argument("--models", nargs="+")
    p.add_argument("--plans", type=int, default=30)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.set_defaults(handler=rank)
    p = commands.add_parser("predict")
    p.add_argument("--models", nargs="+")
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    p.add_argument("--batches", type=int, nargs="+", default=[32, 1])
    p.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2])
    p.add_argument("--plans", type=int, default=30)
    p.add_argument("--points", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--staircase", type=Path, help="also draw one table's curves and steps into this PNG")
    p.add_argument("--out", type=Path, default=Path("runs/bench24/predict"))
    p.set_defaults(handler=predict)
    p = commands.add_parser("pay")
    p.add_argument("--config", type=Path, default=Path(__file__).parent / "digits_noisy" / "mobilenet.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--trials", type=int, default=40, help="study.n_trials of both arms: their equal compute")
    p.add_argument("--batch", type=int, default=256, help="latency.batch_size of the table and of the re-timing")
    p.add_argument("--points", type=int, default=8)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--recover-epochs", type=int, default=10)
    p.add_argument("--latency-round-to", default="auto", type=lambda v: v if v == "auto" else int(v),
                   help="the latency arm's prune.round_to (auto: the staircase)")  # fmt: skip
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--max-epochs", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("runs/bench24/pay"))
    p.set_defaults(handler=pay)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
