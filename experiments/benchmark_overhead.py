"""Where a trial's time goes, how the engine scales with depth, and what a search process holds in memory.

    python experiments/benchmark_overhead.py --trials 10 --out runs/bench-overhead

1. ``breakdown``: ``--trials`` trials of the default example (``experiments/digits/config.yaml``), each timed
   by phase: sampler (ask + tell), graph build, pruning, MAC counting, BN recalibration, fine-tune, evaluation.
   Engine overhead = graph + prune + count, as a share of the trial's wall time (target <= 5%).
2. ``scaling``: graph build and pruning time (a uniform 0.5 L1 plan) for ResNet-18/34/50/101/152-like nets
   (``autoprune.models.resnet_depth``), against the number of conv + linear layers; ``scaling.png``.
3. ``memory``: peak RSS of ``autoprune search`` processes (3 trials each) for a few model and data sizes,
   against the bytes of the model's parameters and of the data set, and of a process that only imports.

Each part prints a table and writes it to ``overhead.md``; ``--parts`` picks some.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def breakdown(
    config_path: Path, output: Path | None, trials: int, seed: int, steps: int | None = None
) -> tuple[str, dict[str, float]]:
    import optuna

    from autoprune.config import load_config
    from autoprune.study import enqueue_warm_start, evaluate_plan, make_sampler, prepare_task, trial_seed

    config = load_config(config_path, {"finetune.steps": steps})
    if output is not None:
        config = config.model_copy(update={"output": output})
    started = time.perf_counter()
    task = prepare_task(config)
    prepare = time.perf_counter() - started
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(config.study.sampler, seed))
    enqueue_warm_start(study, task)
    phases = ["sampler", "graph", "prune", "count", "recalibrate", "finetune", "evaluate"]
    totals = {p: 0.0 for p in phases}
    wall = 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        trial = study.ask()
        plan = task.space.sample(trial)
        t1 = time.perf_counter()
        result = evaluate_plan(task, plan, seed=trial_seed(seed, trial.number))
        t2 = time.perf_counter()
        study.tell(trial, (result.metric, result.cost))
        t3 = time.perf_counter()
        totals["sampler"] += (t1 - t0) + (t3 - t2)
        for key in ("graph", "prune", "count"):
            totals[key] += result.report.seconds[key]
        for key in ("recalibrate", "finetune", "evaluate"):
            totals[key] += result.seconds.get(key, 0.0)
        wall += t3 - t0
    engine = totals["graph"] + totals["prune"] + totals["count"]
    lines = [
        f"Per-trial time on {config_path} ({trials} trials, sampler {config.study.sampler}, "
        f"{torch.get_num_threads()} torch thread(s), fine-tune budget "
        f"{f'{steps} steps' if steps else f'{config.finetune.epochs} epoch(s)'}); task preparation once per process: {prepare:.1f}s",
        "",
        "| phase | mean s / trial | share of trial wall |",
        "| --- | --- | --- |",
    ]
    for phase in phases:
        lines.append(f"| {phase} | {totals[phase] / trials:.4f} | {totals[phase] / wall:.1%} |")
    other = wall - sum(totals.values())
    lines.append(f"| other (copies, bookkeeping) | {other / trials:.4f} | {other / wall:.1%} |")
    lines.append(f"| **trial wall** | {wall / trials:.4f} | 100% |")
    share = engine / wall
    lines.append("")
    lines.append(
        f"Engine overhead (graph + prune + count): {engine / trials:.4f}s per trial = {share:.1%} of trial wall "
        f"(target <= 5%: {'MET' if share <= 0.05 else 'MISSED'}). The dependency graph is built once per trial, "
        "on the trial's own copy of the base model (pruning changes that copy in place)."
    )
    return "\n".join(lines), {"engine_share": share, "trial_wall": wall / trials}


def layer_count(model: torch.nn.Module) -> int:
    return sum(1 for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def scaling(depths: Sequence[int], width: int, repeats: int, out: Path) -> tuple[str, list[dict[str, float]]]:
    from autoprune import PruningPlan, apply_plan, find_groups
    from autoprune.models import resnet_depth

    rows = []
    x = torch.zeros(1, 3, 32, 32)
    for depth in depths:
        torch.manual_seed(0)
        model = resnet_depth(depth, width=width).eval()
        groups = find_groups(model, x, ignore=["fc"], check=False)
        plan = PruningPlan.uniform(groups, 0.5, "l1")
        timings = []
        for _ in range(repeats):
            _, report = apply_plan(model, x, plan)
            timings.append(report.seconds)
        best = {k: min(t[k] for t in timings) for k in ("graph", "prune", "count")}
        rows.append({"depth": depth, "layers": layer_count(model), "groups": len(groups), **best})
    lines = [
        f"Scaling with depth (width {width}, input 1x3x32x32, uniform 0.5 L1 plan, best of {repeats}):",
        "",
        "| net | conv+linear layers | groups | graph build s | prune s | MAC count s | graph ms / layer | prune ms / layer |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| ResNet-{r['depth']} | {r['layers']} | {r['groups']} | {r['graph']:.3f} | {r['prune']:.3f} | "
            f"{r['count']:.3f} | {1000 * r['graph'] / r['layers']:.2f} | {1000 * r['prune'] / r['layers']:.2f} |"
        )
    # Growth exponent: the slope of log(time) against log(layers) between the smallest and largest net.
    import math

    first, last = rows[0], rows[-1]
    for key in ("graph", "prune"):
        slope = math.log(last[key] / first[key]) / math.log(last["layers"] / first["layers"])
        verdict = "no worse than linear" if slope <= 1.15 else "WORSE than linear"
        lines.append(f"\n{key}: time ~ layers^{slope:.2f} from ResNet-{first['depth']} to ResNet-{last['depth']} ({verdict})")
    _plot_scaling(rows, out / "scaling.png")
    return "\n".join(lines), rows


def _plot_scaling(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [r["layers"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, label in (("graph", "graph build"), ("prune", "pruning"), ("count", "MAC count")):
        ax.plot(layers, [r[key] for r in rows], marker="o", label=label)
        # The straight line through the origin and the smallest net: linear growth from there.
        ax.plot(layers, [rows[0][key] * n / layers[0] for n in layers], linestyle=":", color=ax.lines[-1].get_color())
    for r in rows:
        ax.annotate(f"R{r['depth']}", (r["layers"], r["graph"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("conv + linear layers")
    ax.set_ylabel("seconds")
    ax.set_title("Engine time against depth (dotted: linear from ResNet-18)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Peak RSS from VmHWM: ru_maxrss would carry over the parent's peak through fork + exec.
_CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
spec = json.loads(sys.argv[1])
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import autoprune
from autoprune.config import config_from_dict
from autoprune.data import load_data
from autoprune.models import build_model
if spec.get("only_import"):
    print(json.dumps({"rss_mb": peak_mb()}))
    sys.exit(0)
config = config_from_dict(spec["config"])
autoprune.search(config)
d = config.data
bundle = load_data(builtin=d.builtin, factory=None, batch_size=d.batch_size, val_fraction=d.val_fraction, seed=0, options=dict(d.options))
data_bytes = sum(t.numel() * t.element_size() for loader in (bundle.train, bundle.val, bundle.test) for t in loader.dataset.tensors)
model = build_model(config.model.builtin, in_channels=1, num_classes=10)
model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"rss_mb": peak_mb(),
                  "model_mb": model_bytes / 2**20, "data_mb": data_bytes / 2**20}))
"""

MEMORY_CASES = (("resnet_small", 16), ("resnet_small", 32), ("vgg_bn", 16), ("mobilenet_small", 32))


def memory(out: Path, trials: int) -> str:
    def child(spec: dict) -> dict:
        done = subprocess.run([sys.executable, "-W", "ignore", "-c", _CHILD, json.dumps(spec)], cwd=REPO,
                              capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    lines = [f"Peak RSS of a search process ({trials} trials, 1 fine-tune epoch each, 1 base-training epoch):", "",
             "| model | input | model params MB | data MB | peak RSS MB |", "| --- | --- | --- | --- | --- |"]
    lines.append(f"| (import only: python, torch, optuna, autoprune) | | | | {child({'only_import': True})['rss_mb']:.0f} |")
    for model, size in MEMORY_CASES:
        config = {
            "name": f"mem-{model}-{size}", "output": str(out / f"mem-{model}-{size}"),
            "model": {"builtin": model, "input_shape": [1, size, size]},
            "data": {"builtin": "digits", "batch_size": 64, "options": {"size": size}},
            "base_training": {"epochs": 1}, "prune": {"ignore": ["fc", "classifier", "head"]},
            "finetune": {"epochs": 1, "bn_recalibration_batches": 5},
            "study": {"n_trials": trials, "sampler": "random", "storage": f"sqlite:///{out / f'mem-{model}-{size}.db'}"},
        }
        got = child({"config": config})
        lines.append(f"| {model} | {size}x{size} | {got['model_mb']:.2f} | {got['data_mb']:.1f} | {got['rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "digits" / "config.yaml")
    parser.add_argument("--output", type=Path, default=None, help="override the config's output (base-weight cache)")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depths", type=int, nargs="+", default=[18, 34, 50, 101, 152])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-trials", type=int, default=3)
    parser.add_argument("--parts", nargs="+", choices=["breakdown", "scaling", "memory"],
                        default=["breakdown", "scaling", "memory"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="a fine-tune budget in optimizer steps (finetune.steps)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "bench-overhead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sections, figures = [], {}
    if "breakdown" in args.parts:
        text, figures["breakdown"] = breakdown(args.config, args.output, args.trials, args.seed, args.steps)
        print(text + "\n", flush=True)
        sections.append(text)
    if "scaling" in args.parts:
        text, figures["scaling"] = scaling(args.depths, args.width, args.repeats, args.out)
        print(text + "\n", flush=True)
        sections.append(text)
    if "memory" in args.parts:
        text = memory(args.out, args.memory_trials)
        print(text + "\n", flush=True)
        sections.append(text)
    (args.out / "overhead.md").write_text("\n\n".join(sections) + "\n")
    (args.out / "overhead.json").write_text(json.dumps(figures, indent=1))
    print(f"wrote {args.out / 'overhead.md'}" + (f" and {args.out / 'scaling.png'}" if "scaling" in args.parts else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
