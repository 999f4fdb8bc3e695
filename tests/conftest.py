from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from autoprune.data import digits
from autoprune.evaluate import train
from autoprune.models import build_model

REPO = Path(__file__).resolve().parents[1]

# `make test` runs one pytest process per core (pytest-xdist): one torch thread each, and in the processes the
# tests start, so that they share the cores instead of oversubscribing them (tiny models gain nothing from more).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


# resnet_small's prunable groups, each named by its root module, in model order (`fc` ignored).
RESNET_SMALL_GROUPS = (
    "conv1",
    "layer1.0.conv1",
    "layer1.1.conv1",
    "layer2.0.conv1",
    "layer2.0.conv2",
    "layer2.1.conv1",
    "layer3.0.conv1",
    "layer3.0.conv2",
    "layer3.1.conv1",
)


@pytest.fixture(scope="session")
def digits_data():
    return digits(batch_size=64, val_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def base_weights(tmp_path_factory: pytest.TempPathFactory, digits_data) -> Path:
    """resnet_small trained briefly on digits, once per test session."""
    model = build_model("resnet_small", in_channels=1, num_classes=10)
    train(model, digits_data.train, epochs=3, lr=0.05, seed=0)
    path = tmp_path_factory.mktemp("base") / "resnet_small.pt"
    torch.save(model.state_dict(), path)
    return path


def tiny_config(output: Path, weights: Path | None = None, **sections: Any) -> dict[str, Any]:
    """A search config small enough for a test: trained weights given, one short fine-tune epoch."""
    config: dict[str, Any] = {
        "name": "tiny",
        "output": str(output),
        "model": {"builtin": "resnet_small", "input_shape": [1, 16, 16], "weights": str(weights) if weights else None},
        "data": {"builtin": "digits", "batch_size": 128, "val_fraction": 0.2},
        "base_training": {"epochs": 1, "lr": 0.05},
        "prune": {"ignore": ["fc"], "search_space": "per_stage", "ratio": [0.0, 0.8], "criteria": ["l1", "l2", "fpgm"]},
        "finetune": {"epochs": 1, "lr": 0.01, "bn_recalibration_batches": 2},
        # A single search (every trial fine-tuned): the budgeted default is tested in tests/test_budgeted_search.py.
        "study": {"sampler": "tpe", "n_trials": 4, "seed": 0, "search": "single"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The real console entry point, in a subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "autoprune", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
