"""A short search and an export on CUDA, in fp32 and bf16 (and on 2 GPUs with 2 workers when there are 2),
against the same on the CPU: trials per minute and where a trial's time goes.

    python experiments/gpu_check.py --trials 8 --out runs/gpu-check

Runs, each in its own folder under ``--out`` (the base model is trained once, by the first run, and reused):

- ``cpu-fp32``: the baseline, on the CPU;
- ``cuda-fp32`` and ``cuda-bf16``: one worker on ``cuda``;
- ``cuda-<p>-2gpu``: two local workers pinned to GPUs 0 and 1 (``workers.devices: [0, 1]``), when there are 2.

Each prints trials per minute (trials finished / seconds from the first trial to the last) and the mean seconds
per trial of each phase (prune, count, recalibrate, finetune, evaluate), then exports the knee of the CUDA runs'
fronts and prints the latency on the GPU and on the CPU. The table is also written to ``gpu_check.md``.
Needs CUDA: without it, it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
PHASES = ("prune", "count", "recalibrate", "finetune", "evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiments/digits/config.yaml", help="the study config")
    parser.add_argument("--trials", type=int, default=8, help="trials per run (the warm start counts)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune budget in optimizer steps (finetune.steps)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated CUDA precisions to run")
    parser.add_argument("--export-epochs", type=int, default=1, help="recovery epochs of the exports")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU baseline")
    parser.add_argument("--no-export", action="store_true", help="skip the exports")
    parser.add_argument("--out", type=Path, default=REPO / "runs/gpu-check", help="a fresh folder for the runs")
    return parser.parse_args(argv)


def check_cuda() -> int:
    """The number of CUDA devices; exits 2 with one line when there is none."""
    if not torch.cuda.is_available():
        built = f"torch {torch.__version__}, " + (f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build")
        print(f"gpu_check: CUDA is not available ({built}); run this on a machine with an NVIDIA GPU", file=sys.stderr)
        raise SystemExit(2)
    return torch.cuda.device_count()


def run_search(args: argparse.Namespace, label: str, overrides: dict[str, Any]) -> dict[str, Any]:
    import optuna

    from autoprune.config import load_config
    from autoprune.study import search

    output = args.out / label
    config = load_config(
        args.config,
        {
            "output": str(output),
            "study.n_trials": args.trials,
            "finetune.steps": args.steps,
            "export.epochs": args.export_epochs,
            **overrides,
        },
    )
    ready: list[float] = []
    started = time.perf_counter()
    study = search(config, log=lambda line: print(f"  [{label}] {line}", flush=True), on_ready=lambda *_: ready.append(time.perf_counter()))
    finished = time.perf_counter()
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    loop_s = finished - (ready[0] if ready else started)
    phases = {p: statistics.fmean(t.user_attrs.get("seconds", {}).get(p, 0.0) for t in trials) if trials else 0.0 for p in PHASES}
    devices = sorted({str(t.user_attrs.get("worker", {}).get("device")) for t in trials})
    return {
        "label": label,
        "config": config,
        "trials": len(trials),
        "per_minute": 60.0 * len(trials) / loop_s if loop_s > 0 else float("nan"),
        "prepare_s": (ready[0] if ready else finished) - started,
        "phases": phases,
        "devices": devices,
        "precision": sorted({str(t.user_attrs.get("precision")) for t in trials}),
    }


def run_export(label: str, config: Any, out: Path) -> dict[str, Any]:
    from autoprune.export import Selection, export_model

    result = export_model(config, Selection("knee"), out / f"export-{label}", force=True)
    return json.loads((result.out / "export.json").read_text())


def table(results: list[dict[str, Any]]) -> list[str]:
    base = next((r for r in results if r["label"].startswith("cpu")), None)
    lines = [
        "| run | devices | precision | trials | trials/min | vs CPU | " + " | ".join(f"{p} s" for p in PHASES) + " |",
        "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in PHASES) + " |",
    ]
    for r in results:
        speedup = f"{r['per_minute'] / base['per_minute']:.1f}x" if base and base["per_minute"] > 0 else "-"
        lines.append(
            f"| {r['label']} | {', '.join(r['devices'])} | {', '.join(r['precision'])} | {r['trials']} | "
            f"{r['per_minute']:.1f} | {speedup} | " + " | ".join(f"{r['phases'][p]:.4f}" for p in PHASES) + " |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpus = check_cuda()
    if args.out.exists() and any(args.out.iterdir()):
        print(f"gpu_check: {args.out} is not empty; choose a fresh --out", file=sys.stderr)
        return 2
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    print(f"gpu_check: {gpus} CUDA device(s): {', '.join(torch.cuda.get_device_name(i) for i in range(gpus))}")
    runs: list[tuple[str, dict[str, Any]]] = [] if args.no_cpu else [("cpu-fp32", {"runtime.device": "cpu"})]
    for precision in precisions:
        runs.append((f"cuda-{precision}", {"runtime.device": "cuda", "runtime.precision": precision}))
        if gpus >= 2:
            runs.append(
                (
                    f"cuda-{precision}-2gpu",
                    {"runtime.precision": precision, "runtime.device": "cuda", "workers.count": 2, "workers.devices": [0, 1]},
                )
            )
    results: list[dict[str, Any]] = []
    weights: str | None = None
    for label, overrides in runs:
        if weights is not None:
            overrides = {**overrides, "model.weights": weights}
        print(f"gpu_check: {label} ...", flush=True)
        results.append(run_search(args, label, overrides))
        cached = args.out / label / "base.pt"
        if weights is None and cached.is_file():
            weights = str(cached.resolve())  # trained once; every later run prunes the same base weights
    lines = [f"Searches of {args.trials} trials on {args.config} (fine-tune steps: {args.steps or 'epochs'})", "", *table(results)]
    if not args.no_export:
        lines += [
            "",
            "| export | device | precision | device latency ms (before -> after) | CPU latency ms (before -> after) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in results:
            if not r["label"].startswith("cuda") or r["label"].endswith("2gpu"):
                continue
            record = run_export(r["label"], r["config"], args.out)
            dev, cpu = record["latency_on_device"] or {}, record["latency"]
            lines.append(
                f"| {r['label']} (trial {record['trial']}) | {record['runtime']['device']} | {record['runtime']['precision']} | "
                f"{dev.get('before_ms', float('nan')):.3f} -> {dev.get('after_ms', float('nan')):.3f} | "
                f"{cpu['before_ms']:.3f} -> {cpu['after_ms']:.3f} |"
            )
    text = "\n".join(lines)
    print(text)
    (args.out / "gpu_check.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
