"""The search benchmark's figures: per-arm hypervolumes (linear and log MACs), best metric under budgets,
compute, mean ± standard error over seeds, the issue's targets, the fronts figure, and merging runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoprune.report import hypervolume

BUDGETS = (0.5, 0.25, 0.1, 0.05)
LOG_FLOOR = 0.01  # the log-MACs axis runs from 1% to 100% of the base MACs
Point = tuple[float, float]  # (metric, relative MACs)
FIGURES = ("hv_log", "hv", *(f"best@{b:g}" for b in BUDGETS), "steps", "forward_batches", "seconds")
STYLE = {"baseline": "--", "part": ":", "random": "-.", "search": "-"}


def log_macs(cost: float) -> float:
    """Relative MACs on [0, 1]: 0 at 1% of the base (or below), 1 at the base."""
    return (math.log10(max(cost, LOG_FLOOR)) - math.log10(LOG_FLOOR)) / -math.log10(LOG_FLOOR)


@dataclasses.dataclass
class Run:
    method: str
    kind: str  # part | baseline | random | search
    seed: int
    points: list[Point]
    steps: int
    forward_batches: int
    seconds: float

    @property
    def hv(self) -> float:
        return hypervolume(self.points)

    @property
    def hv_log(self) -> float:
        return hypervolume([(m, log_macs(c)) for m, c in self.points])

    def best_at(self, budget: float) -> float:
        """The best metric among candidates at or under ``budget`` of the base MACs (nan when none)."""
        fits = [m for m, c in self.points if c <= budget + 1e-12]
        return max(fits) if fits else math.nan

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"method": self.method, "kind": self.kind, "seed": self.seed, "hv_log": self.hv_log,
                               "hv": self.hv}
        row.update({f"best@{b:g}": self.best_at(b) for b in BUDGETS})
        row.update({"steps": self.steps, "forward_batches": self.forward_batches, "seconds": self.seconds})
        return row

    def line(self) -> str:
        best = " ".join(f"<={b:g}:{self.best_at(b):.3f}" for b in BUDGETS)
        return (f"  seed {self.seed} {self.method:<20} hv-log {self.hv_log:.4f} hv {self.hv:.4f}  {best}  "
                f"steps {self.steps} fwd {self.forward_batches}  {self.seconds:.0f}s")


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Non-dominated (metric up, cost down) points, by increasing cost."""
    front: list[Point] = []
    for metric, cost in sorted(points, key=lambda p: (p[1], -p[0])):
        if not front or metric > front[-1][0]:
            front.append((metric, cost))
    return front


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per method: the mean and the standard error over seeds of each figure."""
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r.row() for r in runs if r.method == method]
        row: dict[str, Any] = {"method": method, "kind": mine[0]["kind"], "seeds": len(mine)}
        for key in FIGURES:
            values = [float(m[key]) for m in mine if not math.isnan(float(m[key]))]
            row[key] = statistics.fmean(values) if values else math.nan
            row[f"{key}_se"] = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
            row[f"{key}_n"] = len(values)  # seeds with a candidate under that budget
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ["arm", "kind", "HV log-MACs", "HV linear", *(f"best @ <= {b:.0%}" for b in BUDGETS), "steps",
            "fwd batches", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [str(row["method"]), str(row["kind"])]
        for key in FIGURES:
            value, se = float(row[key]), float(row[f"{key}_se"])
            digits = 0 if key in ("steps", "forward_batches", "seconds") else 4 if key.startswith("hv") else 3
            seeds = "" if row[f"{key}_n"] == row["seeds"] else f" ({row[f'{key}_n']}/{row['seeds']} seeds)"
            if key in ("steps", "forward_batches"):
                cells.append(f"{value:.0f}")
            else:
                cells.append("-" if math.isnan(value) else f"{value:.{digits}f} ± {se:.{digits}f}{seeds}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets for each search arm against the baselines (the union, and each part alone)."""
    base = [r for r in rows if r["kind"] in ("baseline", "part")]
    ours = [r for r in rows if r["kind"] in ("search", "random")]
    if not base or not ours:
        return ["targets: need the baselines and at least one search arm"]
    best_hv = max(base, key=lambda r: float(r["hv_log"]))
    out = []
    for row in ours:
        ratio = float(row["hv_log"]) / float(best_hv["hv_log"])
        out.append(f"{row['method']}: log-MACs HV {float(row['hv_log']):.4f} / best baseline arm "
                   f"({best_hv['method']}) {float(best_hv['hv_log']):.4f} = {ratio:.3f}x (target >= 1.05x): "
                   f"{'MET' if ratio >= 1.05 else 'MISSED'}; linear HV {float(row['hv']):.4f} vs "
                   f"{max(float(r['hv']) for r in base):.4f}")
        for budget in BUDGETS:
            key = f"best@{budget:g}"
            mine, se = float(row[key]), float(row[f"{key}_se"])
            found = [r for r in base if not math.isnan(float(r[key]))]
            if math.isnan(mine) or not found:
                out.append(f"  best at MACs <= {budget:.0%}: no candidate ({'search' if math.isnan(mine) else 'baselines'})")
                continue
            top = max(found, key=lambda r: float(r[key]))
            delta = (mine - float(top[key])) * 100
            # one standard error of the difference of the two means (seeds are independent replicates)
            both = math.hypot(se, float(top[f"{key}_se"])) * 100
            below = delta < -both
            verdict = ("MET" if delta >= 2 else "MISSED") if budget <= 0.1 else ("MISSED" if below else "MET")
            aim = "target >= +2 points" if budget <= 0.1 else "target: not more than one SE below"
            out.append(f"  best at MACs <= {budget:.0%}: {mine:.4f} ± {se:.4f} vs {top['method']} {float(top[key]):.4f} "
                       f"({delta:+.1f} ± {both:.1f} points; {aim}; more than one SE below: {'YES' if below else 'no'}): "
                       f"{verdict}")
    return out


def plot(runs: list[Run], base_metric: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = min(r.seed for r in runs)
    rows = summarise(runs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    colors: dict[str, Any] = {}
    for run in (r for r in runs if r.seed == seed):
        front = pareto_front(run.points)
        if not front:
            continue
        xs = [c for _, c in front] + [1.0]
        ys = [m for m, _ in front] + [front[-1][0]]
        width = 2.0 if run.kind in ("baseline", "search") else 1.0
        (line,) = left.step(xs, ys, where="post", linestyle=STYLE[run.kind], linewidth=width, marker="o", markersize=3,
                            label=f"{run.method} (hv-log {run.hv_log:.3f})")
        colors[run.method] = line.get_color()
    left.plot([1.0], [base_metric], marker="*", markersize=14, color="black", linestyle="none", label="base")
    left.set_xscale("log")
    left.set_xlim(LOG_FLOOR, 1.05)
    left.set_xlabel("MACs relative to the base (log)")
    left.set_ylabel("metric after fine-tuning")
    left.set_title(f"fronts, seed {seed}")
    left.legend(fontsize=7, loc="lower right")
    for row in rows:
        means = [float(row[f"best@{b:g}"]) for b in BUDGETS]
        errors = [float(row[f"best@{b:g}_se"]) for b in BUDGETS]
        right.errorbar(BUDGETS, means, yerr=errors, linestyle=STYLE[str(row["kind"])], marker="o", capsize=3,
                       color=colors.get(str(row["method"])), label=f"{row['method']} ({row['seeds']} seeds)")
    right.set_xscale("log")
    right.set_xlabel("MACs budget relative to the base (log)")
    right.set_ylabel("best metric under the budget (mean ± SE)")
    right.set_title("best metric under each budget, over seeds")
    right.legend(fontsize=7, loc="lower right")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(out: Path, header: str, meta: dict[str, Any], runs: list[Run]) -> None:
    (out / "results.json").write_text(json.dumps({**meta, "runs": [{**r.row(), "points": r.points} for r in runs]}, indent=1))
    rows = summarise(runs)
    table, verdict = markdown(rows), targets(rows)
    print("\n" + header + "\n" + table + "\n\n" + "\n".join(verdict))
    (out / "summary.md").write_text(header + "\n\n" + table + "\n\n" + "\n".join(f"- {v}" for v in verdict) + "\n")
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    seeds = sorted({r.seed for r in runs})
    plot(runs, float(meta["base_metric"]), out / "fronts.png", f"{meta['name']}: seeds {seeds}")
    print(f"wrote {out / 'summary.md'}, summary.csv, fronts.png")


def load_runs(folder: Path) -> tuple[dict[str, Any], list[Run]]:
    """The runs a previous invocation wrote to ``folder/results.json``."""
    data = json.loads((folder / "results.json").read_text())
    runs = [
        Run(r["method"], r["kind"], int(r["seed"]), [(float(p[0]), float(p[1])) for p in r["points"]], int(r["steps"]),
            int(r["forward_batches"]), float(r["seconds"]))
        for r in data.pop("runs")
    ]
    return data, runs


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
    recipe = first.get("recipe", {})
    header = (f"{first['name']}: seeds {seeds}, a candidate = {recipe.get('steps')} steps + "
              f"{recipe.get('forward_batches')} forward batches (combined from {', '.join(str(f) for f in args.folders)}); "
              f"wall times per seed, {first.get('threads', 1)} torch thread(s)")
    write_summary(args.out, header, {**first, "seeds": seeds}, runs)
    return 0
