"""Recovery without training, against BN recalibration and fine-tuning (issue #32; a first, reduced version).

For uniform-l2 plans at several ratios of resnet_small on digits, prints the validation accuracy after: nothing,
BN recalibration, reconstruction, reconstruction + BN, and 1 epoch of fine-tuning (after BN), with the wall time
of the reconstruction against that of the fine-tune epoch, measured side by side; mean ± standard error over seeds
(each seed trains its own base). Report, never assert.

    python experiments/benchmark_recovery.py --seeds 3
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import torch

import autoprune
from autoprune.data import digits
from autoprune.evaluate import recalibrate_bn, train
from autoprune.models import build_model

ARMS = ("pruned", "bn", "reconstruct", "reconstruct+bn", "finetune 1 epoch")


def _accuracy(model: torch.nn.Module, loader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def _one_seed(seed: int, ratios: list[float], base_epochs: int, calibration: int) -> dict[tuple[float, str], float]:
    data = digits(batch_size=64, val_fraction=0.2, seed=seed)
    torch.manual_seed(seed)
    base = build_model("resnet_small", in_channels=1, num_classes=10)
    train(base, data.train, epochs=base_epochs, lr=0.05, seed=seed)
    base.eval()
    example = next(iter(data.val))[0][:2]
    groups = autoprune.find_groups(base, example, ignore=["fc"])
    batches = [b for _, b in zip(range(calibration), data.train, strict=False)]
    found = {(1.0, "base"): _accuracy(base, data.val)}
    for ratio in ratios:
        pruned, report = autoprune.apply_plan(base, example, autoprune.PruningPlan({g.name: (ratio, "l2") for g in groups}))
        found[(ratio, "macs")] = report.macs_ratio
        found[(ratio, "pruned")] = _accuracy(pruned, data.val)
        bn = copy.deepcopy(pruned)
        recalibrate_bn(bn, data.train, 20, seed)
        found[(ratio, "bn")] = _accuracy(bn, data.val)
        started = time.perf_counter()
        train(bn, data.train, epochs=1, lr=0.01, seed=seed)
        found[(ratio, "finetune seconds")] = time.perf_counter() - started
        found[(ratio, "finetune 1 epoch")] = _accuracy(bn, data.val)
        started = time.perf_counter()
        autoprune.reconstruct(pruned, base, batches, kept=report.kept)
        found[(ratio, "reconstruct seconds")] = time.perf_counter() - started
        found[(ratio, "reconstruct")] = _accuracy(pruned, data.val)
        recalibrate_bn(pruned, data.train, 20, seed)
        found[(ratio, "reconstruct+bn")] = _accuracy(pruned, data.val)
    return found


def _mean_se(values: list[float]) -> str:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {se:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--base-epochs", type=int, default=10)
    parser.add_argument("--calibration", type=int, default=16)
    args = parser.parse_args()
    runs = [_one_seed(s, args.ratios, args.base_epochs, args.calibration) for s in range(args.seeds)]
    print(f"resnet_small on digits, {args.seeds} seeds, base accuracy {_mean_se([r[(1.0, 'base')] for r in runs])}")
    print("| ratio | MACs | " + " | ".join(ARMS) + " | reconstruct s | 1 epoch s |")
    print("|---" * (len(ARMS) + 4) + "|")
    for ratio in args.ratios:
        cells = [_mean_se([r[(ratio, arm)] for r in runs]) for arm in (*ARMS, "reconstruct seconds", "finetune seconds")]
        macs = statistics.mean(r[(ratio, "macs")] for r in runs)
        print(f"| {ratio:g} | {macs:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
