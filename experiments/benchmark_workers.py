"""Trials per minute of the digits search with 1 and with 2 local workers, same trial count, same base model.

    python experiments/benchmark_workers.py [--n-trials 9] [--config experiments/digits/config.yaml] [--workers 1 2]

The base model is trained once first and given to every run as `model.weights`, so the figures time the search
alone: each run is a fresh study (default SQLite in its own folder) from `search()` called to `search()` returned,
worker start-up included. With N workers each uses cores // N torch threads; one worker uses torch's default.
The search space is set to the ``per_layer`` preset, whose warm start is 9 uniform plans (3 ratios x 3 criteria): the
default 9 trials are exactly those, so every run does the same work whatever the samplers would have proposed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from autoprune.config import load_config
from autoprune.study import FINISHED, prepare_task, search

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "digits" / "config.yaml"))
    parser.add_argument("--n-trials", type=int, default=9)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="autoprune-bench-") as tmp:
        root = Path(tmp)
        base = load_config(args.config, {"output": str(root / "base")})
        started = time.perf_counter()
        prepare_task(base)
        weights = root / "base" / "base.pt"
        print(f"base model trained in {time.perf_counter() - started:.1f}s ({weights})", flush=True)
        print(f"cores: {len(os.sched_getaffinity(0))}, torch threads by default: {torch.get_num_threads()}, "
              f"load average: {os.getloadavg()[0]:.1f}", flush=True)

        rates: dict[int, float] = {}
        for workers in args.workers:
            config = load_config(
                args.config,
                {
                    "output": str(root / f"workers-{workers}"),
                    "model.weights": str(weights),
                    "study.n_trials": args.n_trials,
                    "workers.count": workers,
                    "prune.search_space": "per_layer",  # its 9 warm-start plans: the same work in every run
                },
            )
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            study = search(config)
            seconds = time.perf_counter() - started
            done = len(study.get_trials(deepcopy=False, states=FINISHED))
            rates[workers] = done / seconds * 60
            print(
                f"workers={workers}: {done} trials in {seconds:.1f}s = {rates[workers]:.2f} trials/min "
                f"(load average before {load_before:.1f}, after {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        if 1 in rates:
            for workers, rate in rates.items():
                if workers != 1:
                    print(f"speed-up with {workers} workers: {rate / rates[1]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
