"""Devices and precision: where models and batches sit, autocast, a missing device, one GPU per worker."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from user_models import SmallNet

import autoprune
from autoprune.cli import main
from autoprune.config import RuntimeConfig, config_from_dict
from autoprune.criteria._builtin import distance_dtype, fpgm_distances
from autoprune.engine import select_removed, to_device
from autoprune.errors import ConfigError
from autoprune.evaluate import resolve_runtime
from autoprune.export import Selection, export_model
from autoprune.study import check_worker_devices, worker_device

TESTS = Path(__file__).resolve().parent
CUDA = torch.cuda.is_available()

# What every forward of the recording model (the base model and its pruned copies) saw: the devices of its
# inputs, parameters and buffers, whether it ran in training mode, and the autocast dtype if autocast was on.
SEEN: list[dict[str, Any]] = []


def _record(module: nn.Module, args: tuple[Any, ...]) -> None:
    SEEN.append(
        {
            "inputs": {str(a.device) for a in args if isinstance(a, torch.Tensor)},
            "weights": {str(t.device) for t in (*module.parameters(), *module.buffers())},
            "training": module.training,
            "autocast": str(torch.get_autocast_dtype("cpu")) if torch.is_autocast_enabled("cpu") else None,
        }
    )


def recording_net() -> nn.Module:
    """SmallNet with a forward pre-hook that records where each forward's inputs and weights are."""
    model = SmallNet()
    model.register_forward_pre_hook(_record)
    return model


@pytest.fixture(autouse=True)
def _test_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    SEEN.clear()


def _config(output: Path, **sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "rt",
        "output": str(output),
        "model": {"factory": "test_runtime:recording_net", "input_shape": [1, 16, 16]},
        "data": {"factory": "user_models:tiny_data"},
        "base_training": {"epochs": 1, "lr": 0.01},
        "prune": {
            "ignore": ["fc"],
            "search_space": "uniform",
            "ratio": [0.2, 0.5],
            "criteria": ["taylor"],
            "gradient_batches": 1,
        },
        "finetune": {"epochs": 1, "lr": 0.01, "bn_recalibration_batches": 1},
        "study": {"n_trials": 2, "sampler": "random", "search": "single"},
        "export": {"epochs": 0},
        "latency": {"runs": 2, "warmup": 0},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    return config


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("autoprune: error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in lines), lines
    return errors[0]


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_every_weight_and_batch_of_a_trial_sits_on_the_configured_device(tmp_path, device):
    expected = resolve_runtime(RuntimeConfig(device=device)).device  # auto: cpu on a machine without a GPU
    config = config_from_dict(_config(tmp_path / "run", runtime={"device": device}))
    study = autoprune.search(config)

    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        assert trial.user_attrs["device"] == expected and trial.user_attrs["precision"] == "fp32"
        assert trial.user_attrs["worker"]["device"] == expected
    frame = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert set(frame["device"]) == set(frame["worker.device"]) == {expected} and set(frame["precision"]) == {"fp32"}
    # base training, the metric, graph tracing, MAC counting, gradient batches, recalibration, fine-tune, scoring
    assert any(seen["training"] for seen in SEEN) and any(not seen["training"] for seen in SEEN)
    assert {d for seen in SEEN for d in seen["inputs"] | seen["weights"]} == {expected}


def test_bf16_autocast_on_the_cpu_runs_trials_end_to_end(tmp_path):
    config = config_from_dict(_config(tmp_path / "run", runtime={"device": "cpu", "precision": "bf16"}))
    study = autoprune.search(config)

    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert {t.user_attrs["precision"] for t in trials} == {"bf16"}
    # fine-tune (training mode) and scoring (eval mode) both ran under bf16 autocast
    assert any(seen["training"] and seen["autocast"] == "torch.bfloat16" for seen in SEEN)
    assert any(not seen["training"] and seen["autocast"] == "torch.bfloat16" for seen in SEEN)


def test_export_records_its_runtime_and_measures_latency_on_the_cpu(tmp_path):
    config = config_from_dict(_config(tmp_path / "run", runtime={"device": "cpu"}, study={"n_trials": 1}))
    autoprune.search(config)
    result = export_model(config, Selection("trial", 0), tmp_path / "export")

    record = json.loads((tmp_path / "export" / "export.json").read_text())
    assert record["runtime"] == {"device": "cpu", "precision": "fp32", "channels_last": False}
    assert record["latency"]["device"] == "cpu" and record["latency"]["after_ms"] > 0
    assert record["latency_on_device"] is None  # the run's device is the CPU: measured once
    assert result.record == record


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("how", ["config", "flag"])
@pytest.mark.parametrize("command", ["search", "validate"])
def test_a_missing_cuda_device_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, how, command):
    raw = _config(tmp_path / "run", runtime={"device": "cuda"} if how == "config" else {"device": "cpu"})
    argv = [command, str(_write(tmp_path / "c.yaml", raw))] + (["--device", "cuda"] if how == "flag" else [])
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "runtime.device" in line and "device 'cuda' requested but CUDA is not available" in line
    assert not (tmp_path / "run").exists()


def test_device_flag_overrides_the_config(tmp_path, capsys):
    raw = _config(tmp_path / "run", runtime={"device": "cuda:3"})
    assert main(["validate", str(_write(tmp_path / "c.yaml", raw)), "--device", "cpu"]) == 0
    assert "runtime cpu fp32" in capsys.readouterr().out


def test_worker_i_is_pinned_to_devices_i_mod_n():
    assert [worker_device([0, 1], i) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert [worker_device([3, 1, 2], i) for i in range(4)] == ["cuda:3", "cuda:1", "cuda:2", "cuda:3"]
    with pytest.raises(ValueError):
        worker_device([], 0)


@pytest.mark.parametrize(
    ("devices", "where"), [([-1], "workers.devices[0]"), ([0, "x"], "workers.devices[1]"), ([], "workers.devices")]
)
def test_workers_devices_must_be_device_indices(tmp_path, devices, where):
    with pytest.raises(ConfigError) as info:
        config_from_dict(_config(tmp_path / "run", workers={"devices": devices}))
    assert info.value.key == where


def test_workers_devices_need_cuda_or_auto():
    with pytest.raises(ConfigError) as info:
        check_worker_devices([0], RuntimeConfig(device="cpu"))
    assert info.value.key == "workers.devices" and "runtime.device is 'cpu'" in str(info.value)


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize(
    ("command", "how", "count"), [("search", "config", 2), ("search", "flag", 2), ("search", "config", 1), ("validate", "config", 1)]
)
def test_workers_devices_without_cuda_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, command, how, count):
    raw = _config(tmp_path / "run", workers={"count": count, "devices": [0, 1]} if how == "config" else {"count": count})
    argv = [command, str(_write(tmp_path / "c.yaml", raw))] + (["--devices", "0,1"] if how == "flag" else [])
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "workers.devices" in line and "CUDA is not available" in line
    assert not (tmp_path / "run").exists()


def test_devices_flag_refuses_what_is_not_a_device_list(tmp_path, capsys):
    path = _write(tmp_path / "c.yaml", _config(tmp_path / "run"))
    with pytest.raises(SystemExit) as info:
        main(["search", str(path), "--devices", "0,gpu1"])
    assert info.value.code == 2 and "--devices" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_to_device_moves_every_tensor_inside_nested_batches():
    Pair = namedtuple("Pair", "x y")
    batch = {"pixels": torch.ones(2), "parts": [torch.zeros(1), (torch.ones(3), "label")], "pair": Pair(torch.ones(1), 4)}
    moved = to_device(batch, "meta")  # a device every machine has: the tensors change device, the rest stays
    assert moved["pixels"].device.type == "meta" and moved["parts"][0].device.type == "meta"
    assert moved["parts"][1][0].device.type == "meta" and moved["parts"][1][1] == "label"
    assert isinstance(moved["pair"], Pair) and moved["pair"].x.device.type == "meta" and moved["pair"].y == 4


def test_fpgm_in_float32_off_the_cpu_removes_the_filters_float64_removes():
    assert distance_dtype(torch.device("cpu")) == torch.float64
    assert distance_dtype(torch.device("cuda", 0)) == torch.float32
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        # filters of a trained-looking conv: small weights, two near-duplicates (the geometric median's pick)
        weights = torch.randn(48, 3 * 3 * 32, generator=generator) * 0.05
        weights[1] = weights[0] + 1e-4 * torch.randn(weights.shape[1], generator=generator)
        exact = fpgm_distances(weights, torch.float64).double()
        fast = fpgm_distances(weights, torch.float32).double()
        assert torch.allclose(fast, exact, rtol=1e-6, atol=0)
        ordered = exact.sort().values
        for keep in range(1, 48):
            removed = 48 - keep
            if ordered[removed] - ordered[removed - 1] > 1e-5 * ordered[removed]:  # not a near-tie at the cut
                assert set(select_removed(fast, keep)) == set(select_removed(exact, keep)), keep
