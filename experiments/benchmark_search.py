"""Search quality against hand-picked ratios: uniform sweeps, random search and autoprune, same recipe.

    python experiments/benchmark_search.py experiments/digits/config.yaml --budget 20 --seeds 0 1 2 \
        --presets per_stage per_layer --samplers tpe nsga2 gp --out runs/bench-digits

On one task, with the same base weights and the same recalibrate + fine-tune recipe per candidate
(``autoprune.study.evaluate_plan``, what every trial runs), it compares:

1. uniform sweeps: ratios 0.1 ... 0.9, one sweep per criterion (what a Torch-Pruning user does by hand);
2. random search over the per-layer space (no warm start), ``--budget`` trials;
3. autoprune: each preset x sampler, ``--budget`` trials (the uniform warm-start baselines included).

Every seed is an independent replicate: its own validation split, base model and sampler seed. It prints and
writes ``summary.md`` / ``summary.csv`` (mean and spread over seeds), ``results.json`` (every point), and
``fronts.png`` (every method's front, first seed, overlaid); then checks the issue's targets. Seeds run in
separate processes are merged with ``benchmark_search.py combine DIR [DIR ...] --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import torch

from autoprune.config import Config, load_config
from autoprune.plan import PruningPlan
from autoprune.report import hypervolume
from autoprune.space import load_space_spec
from autoprune.study import Objective, Task, enqueue_warm_start, evaluate_plan, make_sampler, prepare_task, trial_seed

BUDGETS = (0.5, 0.25, 0.1, 0.05)
RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))
SWEEP_CRITERIA = ("l1", "l2", "fpgm")
Point = tuple[float, float]  # (metric, relative MACs)


@dataclasses.dataclass
class Run:
    method: str
    kind: str  # sweep | random | autoprune
    seed: int
    points: list[Point]
    finetunes: int
    seconds: float

    @property
    def hypervolume(self) -> float:
        return hypervolume(self.points)

    def best_at(self, budget: float) -> float:
        """The best metric among candidates at or under ``budget`` of the base MACs (nan when none)."""
        fits = [m for m, c in self.points if c <= budget + 1e-12]
        return max(fits) if fits else math.nan

    def row(self) -> dict[str, float | int | str]:
        row: dict[str, float | int | str] = {"method": self.method, "kind": self.kind, "seed": self.seed}
        row["hypervolume"] = self.hypervolume
        row.update({f"best@{b:g}": self.best_at(b) for b in BUDGETS})
        row.update({"finetunes": self.finetunes, "seconds": self.seconds})
        return row


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Non-dominated (metric up, cost down) points, by increasing cost."""
    front: list[Point] = []
    for metric, cost in sorted(points, key=lambda p: (p[1], -p[0])):
        if not front or metric > front[-1][0]:
            front.append((metric, cost))
    return front


def uniform_sweep(task: Task, criterion: str, ratios: Sequence[float], seed: int) -> Run:
    started, points = time.perf_counter(), []
    for index, ratio in enumerate(ratios):
        plan = PruningPlan.uniform(
            task.groups, ratio, criterion, round_to=task.config.prune.round_to, scope=task.config.prune.criteria_scope
        )
        result = evaluate_plan(task, plan, seed=trial_seed(seed, index))
        points.append((result.metric, result.cost))
    return Run(f"sweep-{criterion}", "sweep", seed, points, len(ratios), time.perf_counter() - started)


def study_run(task: Task, method: str, kind: str, preset: str, sampler: str, budget: int, seed: int) -> Run:
    """``budget`` trials of an in-memory study with ``preset`` and ``sampler``; the trial objective unchanged."""
    spec = load_space_spec(preset)
    if kind == "random":
        spec = spec.model_copy(update={"warm_start": False})
    space = dataclasses.replace(task.space, spec=spec)
    local = dataclasses.replace(task, space=space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(sampler, seed))
    enqueue_warm_start(study, local)
    started = time.perf_counter()
    study.optimize(Objective(local), n_trials=budget, gc_after_trial=False)
    trials = [t for t in study.trials if t.values is not None]
    points = [(t.values[0], t.values[1]) for t in trials]
    finetunes = sum(1 for t in trials if t.user_attrs.get("feasible"))
    return Run(method, kind, seed, points, finetunes, time.perf_counter() - started)


def seed_config(config: Config, seed: int, out: Path) -> Config:
    study = config.study.model_copy(update={"seed": seed})
    return config.model_copy(update={"study": study, "output": out / f"seed{seed}"})


def run_seed(config: Config, args: argparse.Namespace, seed: int, log: Callable[[str], None]) -> tuple[Task, list[Run]]:
    task = prepare_task(seed_config(config, seed, args.out), log)
    log(f"seed {seed}: base {config.metric} {task.base_metric:.4f}, {len(task.groups)} groups")
    runs: list[Run] = []
    for criterion in args.criteria:
        runs.append(uniform_sweep(task, criterion, args.ratios, seed))
        log(_line(runs[-1]))
    if args.random:
        runs.append(study_run(task, "random-per_layer", "random", "per_layer", "random", args.budget, seed))
        log(_line(runs[-1]))
    for preset in args.presets:
        for sampler in args.samplers:
            method = f"{Path(preset).stem}-{sampler}{args.tag}"  # a preset name or a preset file
            runs.append(study_run(task, method, "autoprune", preset, sampler, args.budget, seed))
            log(_line(runs[-1]))
    return task, runs


def _line(run: Run) -> str:
    best = " ".join(f"<={b:g}:{run.best_at(b):.3f}" for b in BUDGETS)
    return f"  seed {run.seed} {run.method:<22} hv {run.hypervolume:.4f}  {best}  ft {run.finetunes}  {run.seconds:.0f}s"


def summarise(runs: list[Run]) -> list[dict[str, float | int | str]]:
    """One row per method: the mean and the sample standard deviation over seeds of each figure."""
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r.row() for r in runs if r.method == method]
        row: dict[str, float | int | str] = {"method": method, "kind": mine[0]["kind"], "seeds": len(mine)}
        for key in ["hypervolume", *(f"best@{b:g}" for b in BUDGETS), "finetunes", "seconds"]:
            values = [float(m[key]) for m in mine if not math.isnan(float(m[key]))]
            row[key] = statistics.fmean(values) if values else math.nan
            row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"{key}_n"] = len(values)  # seeds with a candidate under that budget
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, float | int | str]]) -> str:
    head = ["method", "hypervolume", *(f"best @ MACs <= {b:.0%}" for b in BUDGETS), "fine-tunes", "wall s"]
    keys = ["hypervolume", *(f"best@{b:g}" for b in BUDGETS), "finetunes", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [str(row["method"])]
        for key in keys:
            value, sd = float(row[key]), float(row[f"{key}_sd"])
            digits = 0 if key in ("finetunes", "seconds") else 4 if key == "hypervolume" else 3
            seeds = "" if row[f"{key}_n"] == row["seeds"] else f" ({row[f'{key}_n']}/{row['seeds']} seeds)"
            cells.append("-" if math.isnan(value) else f"{value:.{digits}f} ± {sd:.{digits}f}{seeds}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: list[dict[str, float | int | str]]) -> list[str]:
    """The issue's targets: the best autoprune method (by mean hypervolume) against the best uniform sweep."""
    sweeps = [r for r in rows if r["kind"] == "sweep"]
    ours = [r for r in rows if r["kind"] == "autoprune"]
    if not sweeps or not ours:
        return ["targets: need at least one sweep and one autoprune method"]
    best = max(ours, key=lambda r: float(r["hypervolume"]))
    sweep_hv = max(float(r["hypervolume"]) for r in sweeps)
    out = [f"best autoprune method: {best['method']}"]
    ratio = float(best["hypervolume"]) / sweep_hv
    out.append(f"hypervolume {float(best['hypervolume']):.4f} / best sweep {sweep_hv:.4f} = {ratio:.3f}x "
               f"(target >= 1.05x): {'MET' if ratio >= 1.05 else 'MISSED'}")
    for budget in BUDGETS:
        key = f"best@{budget:g}"
        uniform = max((float(r[key]) for r in sweeps if not math.isnan(float(r[key]))), default=math.nan)
        mine = float(best[key])
        delta = (mine - uniform) * 100
        verdict = "no candidate" if math.isnan(mine) else ("MET" if delta >= 0 else "WORSE")
        if budget == 0.1 and not math.isnan(delta):
            verdict = "MET" if delta > 2 else "MISSED"
        out.append(f"best at MACs <= {budget:.0%}: {mine:.4f} vs uniform {uniform:.4f} ({delta:+.1f} points"
                   f"{', target > +2' if budget == 0.1 else ', target >= 0'}): {verdict}")
    return out


def ceilings(runs: list[Run], rows: list[dict[str, float | int | str]]) -> list[str]:
    """How much hypervolume there is to win at all, per seed then averaged: the union of every candidate any
    method evaluated (an oracle that keeps the best of all of them), and a perfect front (metric 1.0, the top of
    accuracy or mIoU) from the smallest MACs any candidate reached up to the base."""
    sweeps = [r for r in rows if r["kind"] == "sweep"]
    if not sweeps:
        return []
    seeds = sorted({r.seed for r in runs})
    union = statistics.fmean(hypervolume([p for r in runs if r.seed == s for p in r.points]) for s in seeds)
    perfect = statistics.fmean(1.0 - min(c for r in runs if r.seed == s for _, c in r.points) for s in seeds)
    sweep_hv = max(float(r["hypervolume"]) for r in sweeps)
    return [
        f"union of every candidate evaluated (oracle): hypervolume {union:.4f} = {union / sweep_hv:.3f}x best sweep",
        f"perfect front (metric 1.0 down to the smallest MACs reached): {perfect:.4f} = {perfect / sweep_hv:.3f}x "
        f"best sweep; 1.05x needs {1.05 * sweep_hv:.4f}, a mean metric of {1.05 * sweep_hv / perfect:.3f} over that range",
    ]


def plot(runs: list[Run], base_metric: float, seed: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for run in (r for r in runs if r.seed == seed):
        front = pareto_front(run.points)
        style = {"sweep": "--", "random": ":", "autoprune": "-"}[run.kind]
        xs = [c for _, c in front] + [1.0]
        ys = [m for m, _ in front] + [front[-1][0]]
        ax.step(xs, ys, where="post", linestyle=style, marker="o", markersize=3, label=f"{run.method} (hv {run.hypervolume:.3f})")
    ax.plot([1.0], [base_metric], marker="*", markersize=14, color="black", linestyle="none", label="base")
    ax.set_xscale("log")
    ax.set_xlabel("MACs relative to the base (log)")
    ax.set_ylabel("metric after fine-tuning")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("config", type=Path)
    parser.add_argument("--budget", type=int, required=True, help="trials per random / autoprune search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="default: runs/bench-<config name>")
    parser.add_argument("--presets", nargs="*", default=["uniform", "per_stage", "per_layer"])
    parser.add_argument("--samplers", nargs="*", default=["tpe", "nsga2", "gp"])
    parser.add_argument("--criteria", nargs="*", default=list(SWEEP_CRITERIA), help="one uniform sweep each")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="the uniform sweeps' ratios")
    parser.add_argument("--no-random", dest="random", action="store_false", help="skip the random search")
    parser.add_argument("--tag", default="", help="a suffix for the autoprune methods' names (a variant's run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded machine)")
    args = parser.parse_args(argv)
    if args.budget < 1:
        parser.error(f"--budget must be at least 1, found {args.budget}")
    return args


def load_runs(folder: Path) -> tuple[dict, list[Run]]:
    """The runs a previous invocation wrote to ``folder/results.json``."""
    data = json.loads((folder / "results.json").read_text())
    runs = [
        Run(r["method"], r["kind"], int(r["seed"]), [tuple(p) for p in r["points"]], int(r["finetunes"]), float(r["seconds"]))
        for r in data["runs"]
    ]
    return data, runs


def write_summary(out: Path, header: str, runs: list[Run], base_metric: float, title: str) -> None:
    rows = summarise(runs)
    table, verdict = markdown(rows), targets(rows) + ceilings(runs, rows)
    print("\n" + header + "\n" + table + "\n\n" + "\n".join(verdict))
    (out / "summary.md").write_text(header + "\n\n" + table + "\n\n" + "\n".join(f"- {v}" for v in verdict) + "\n")
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    plot(runs, base_metric, min(r.seed for r in runs), out / "fronts.png", title)
    print(f"wrote {out / 'summary.md'}, summary.csv, fronts.png")


def combine(argv: Sequence[str]) -> int:
    """``benchmark_search.py combine DIR [DIR ...] --out DIR``: one summary over runs made separately
    (for instance one process per seed)."""
    parser = argparse.ArgumentParser(prog="benchmark_search.py combine")
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    runs: list[Run] = []
    metas = []
    for folder in args.folders:
        meta, found = load_runs(folder)
        metas.append(meta)
        runs.extend(found)
    args.out.mkdir(parents=True, exist_ok=True)
    first = min(metas, key=lambda m: min(m["seeds"]))
    seeds = sorted({r.seed for r in runs})
    header = (f"{first['name']}: budget {first['budget']} trials, seeds {seeds} (combined from "
              f"{', '.join(str(f) for f in args.folders)}); wall times per seed, {first.get('threads', 1)} torch thread(s)")
    (args.out / "results.json").write_text(json.dumps(
        {**first, "seeds": seeds, "runs": [{**r.row(), "points": r.points} for r in runs]}, indent=1))
    write_summary(args.out, header, runs, first["base_metric"],
                  f"{first['name']}: fronts, seed {seeds[0]}, {first['budget']} trials per search")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["combine"]:
        return combine(argv[1:])
    args = parse(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    args.out = args.out or Path("runs") / f"bench-{config.name}"
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda line: print(line, flush=True)  # noqa: E731
    started = time.perf_counter()
    runs: list[Run] = []
    base_metric = math.nan
    for seed in args.seeds:
        task, seed_runs = run_seed(config, args, seed, log)
        base_metric = task.base_metric if seed == args.seeds[0] else base_metric
        runs.extend(seed_runs)
    header = (f"{config.name}: budget {args.budget} trials, seeds {args.seeds}, uniform ratios {args.ratios}; "
              f"total wall {time.perf_counter() - started:.0f}s with {args.threads} torch thread(s)")
    (args.out / "results.json").write_text(json.dumps(
        {"config": str(args.config), "name": config.name, "budget": args.budget, "seeds": args.seeds,
         "base_metric": base_metric, "threads": args.threads,
         "runs": [{**r.row(), "points": r.points} for r in runs]}, indent=1))
    write_summary(args.out, header, runs, base_metric,
                  f"{config.name}: fronts, seed {args.seeds[0]}, {args.budget} trials per search")
    return 0


if __name__ == "__main__":
    sys.exit(main())
