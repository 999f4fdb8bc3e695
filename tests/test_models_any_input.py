"""Any model a practitioner brings: example inputs as a tensor, a tuple or a dict (``model.example_inputs``),
outputs as a Hugging Face ``ModelOutput``, dict batches read by the user's loss and metric, and pretrained
factories (``model.pretrained``) that are never trained again."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from any_input_models import hf_accuracy, pretrained_net

import autoprune
from autoprune.cli import main
from autoprune.config import config_from_dict
from autoprune.engine import call_model, output_tensors
from autoprune.export import Selection, export_model, load_example_inputs
from autoprune.study import prepare_task, resolve
from autoprune.study._base import weights_sha256

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(autouse=True)
def _factories_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def _config(output: Path, **sections) -> dict:
    """TwoInputNet on 96 digits with dict inputs: the base trains in a blink."""
    config = {
        "name": "any-input",
        "output": str(output),
        "model": {"factory": "any_input_models:two_input_net", "example_inputs": "any_input_models:dict_inputs"},
        "data": {"factory": "any_input_models:dict_input_data"},
        "base_training": {"epochs": 1, "lr": 0.01},
        "prune": {"ignore": ["fc"], "search_space": "uniform", "ratio": [0.0, 0.5], "criteria": ["l1"]},
        "finetune": {"epochs": 0, "bn_recalibration_batches": 1},
        "study": {"n_trials": 2, "sampler": "random", "search": "single"},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    return config


def _write(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _cli(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def _error_line(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("autoprune: error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in lines), lines
    return errors[0]


def test_dict_example_inputs_are_keyword_arguments_through_validate_and_search(tmp_path, capsys):
    # model.options reach the example-input factory too: extra_features 6 sizes both the model and its inputs.
    raw = _config(tmp_path / "run", model={"options": {"extra_features": 6}}, data={"options": {"extra_features": 6}})
    path = _write(tmp_path / "c.yaml", raw)
    code, out, err = _cli(capsys, "validate", str(path))
    assert code == 0, err
    assert "example inputs: a dict: image [1, 1, 8, 8], extra [1, 6]" in out
    assert "conv1" in out and "base weights: trained here (1 epochs of base_training)" in out
    code, _, err = _cli(capsys, "search", str(path))
    assert code == 0, err
    trials = (tmp_path / "run" / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 2 and all("COMPLETE" in t for t in trials[1:])


def test_tuple_example_inputs_are_positional_arguments(tmp_path):
    raw = _config(
        tmp_path / "run",
        model={"example_inputs": "any_input_models:tuple_inputs"},
        data={"factory": "any_input_models:tuple_input_data"},
    )
    config = config_from_dict(raw)
    task = prepare_task(config)
    assert isinstance(task.base.example_inputs, tuple) and [list(t.shape) for t in task.base.example_inputs] == [[1, 1, 8, 8], [1, 4]]
    groups = {g.name: g for g in task.base.groups}
    assert "conv1" in groups and task.base.macs > 0
    pruned, report = task.prune(autoprune.PruningPlan({"conv1": (0.5, "l1")}))
    assert pruned.conv1.out_channels == 8 and report.macs_after < report.macs_before
    assert call_model(pruned, task.base.example_inputs).shape == (1, 10)


def test_a_hugging_face_model_returning_a_model_output_is_searched_exported_and_reloaded(tmp_path):
    raw = _config(
        tmp_path / "run",
        model={"factory": "any_input_models:tiny_vit", "example_inputs": "any_input_models:pixel_values"},
        data={"factory": "any_input_models:hf_batches"},
        metric="any_input_models:hf_accuracy",
        # The MLP alone: attention heads are the adapters' tests' concern.
        prune={"ignore": ["*classifier*", "*attention*", "*embeddings*"], "search_space": "uniform", "criteria": ["l1"]},
        finetune={"epochs": 1, "lr": 0.01, "loss": "any_input_models:hf_loss", "bn_recalibration_batches": 0},
        export={"epochs": 1, "lr": 0.01, "onnx_exporter": "off"},
    )
    config = config_from_dict(raw)
    study = autoprune.search(config)  # the base trains with the user's loss on dict batches
    assert (tmp_path / "run" / "base.pt").is_file()
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 2 and all(math.isfinite(t.values[0]) for t in finished)

    out = tmp_path / "export"
    record = export_model(config, Selection("trial", finished[-1].number), out).record
    assert record["artifacts"]["weights.pt"]["status"] == "ok" and record["artifacts"]["model.pt"]["status"] == "ok"
    architecture = json.loads((out / "architecture.json").read_text())
    assert architecture["input_shape"] is None
    assert architecture["example_inputs"]["shapes"] == {"pixel_values": [1, 1, 8, 8]}

    reloaded = autoprune.load(out)
    inputs = load_example_inputs(out)
    assert set(inputs) == {"pixel_values"}
    whole = torch.load(out / "model.pt", weights_only=False).eval()
    probe = {"pixel_values": torch.randn(5, 1, 8, 8)}
    with torch.no_grad():
        got, expected = call_model(reloaded, probe), call_model(whole, probe)
    assert type(got).__name__ == "ImageClassifierOutput"
    got_tensors, expected_tensors = output_tensors(got), output_tensors(expected)
    assert len(got_tensors) == len(expected_tensors) >= 1
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got_tensors, expected_tensors, strict=True))
    assert sum(p.numel() for p in reloaded.parameters()) == record["params"]["after"]


def test_pretrained_factory_weights_are_the_base_model_without_training_or_cache(tmp_path, capsys):
    raw = _config(tmp_path / "run", model={"factory": "any_input_models:pretrained_net", "pretrained": True}, base_training={"epochs": 5})
    code, out, _ = _cli(capsys, "validate", str(_write(tmp_path / "c.yaml", raw)))
    assert code == 0 and "base weights: pretrained (the factory's own weights" in out
    logged: list[str] = []
    task = prepare_task(config_from_dict(raw), logged.append)
    assert weights_sha256(task.base.model) == weights_sha256(pretrained_net())  # not trained: the factory's weights
    assert not (tmp_path / "run" / "base.pt").exists() and not (tmp_path / "run" / "base.json").exists()
    assert not any("training the base model" in line for line in logged)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"pretrained": True, "weights": "w.pt"}, "model.pretrained: true with model.weights"),
        (
            {"factory": None, "builtin": "resnet_small", "example_inputs": None, "pretrained": True},
            "model.pretrained: true with model.builtin",
        ),
        ({"input_shape": [1, 8, 8]}, "set one of model.input_shape (zeros of that shape) or model.example_inputs"),
        ({"example_inputs": "no_colon_here"}, "model.example_inputs: expected 'pkg.module:fn', found 'no_colon_here'"),
    ],
)
def test_contradictory_model_settings_are_one_line(tmp_path, capsys, model, message):
    code, _, err = _cli(capsys, "validate", str(_write(tmp_path / "c.yaml", _config(tmp_path / "run", model=model))))
    assert code == 2 and message in _error_line(err)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("any_input_models:missing", "model.example_inputs: module 'any_input_models' has no attribute 'missing'"),
        ("any_input_models:not_inputs", "model.example_inputs: 'any_input_models:not_inputs' returned str; expected"),
        ("any_input_models:no_tensor", "returned a dict: image int, which holds no tensor"),
        ("any_input_models:broken_inputs", "raised RuntimeError: no camera attached"),
        ("any_input_models:wrong_keyword_inputs", "model.example_inputs: the model fails on the example inputs (a dict: picture"),
    ],
)
def test_bad_example_inputs_are_one_line_naming_the_key(tmp_path, capsys, spec, message):
    raw = _config(tmp_path / "run", model={"example_inputs": spec})
    code, _, err = _cli(capsys, "validate", str(_write(tmp_path / "c.yaml", raw)))
    line = _error_line(err)
    assert code == 2 and "model.example_inputs" in line and message in line, line
    assert not (tmp_path / "run").exists()


def test_a_built_in_metric_reads_hugging_face_dict_batches_with_labels(tmp_path):
    # (#25) A dict batch carrying `labels` is Hugging Face's convention: the built-in metric runs the model on the
    # other entries and scores the logits against the labels, as the user's hf_accuracy does.
    raw = _config(
        tmp_path / "run",
        model={"factory": "any_input_models:tiny_vit", "example_inputs": "any_input_models:pixel_values"},
        data={"factory": "any_input_models:hf_batches"},
        prune={"ignore": ["*classifier*"]},
    )
    resolved = resolve(config_from_dict(raw))
    assert resolved.metric(resolved.model, resolved.data.val) == pytest.approx(
        hf_accuracy(resolved.model, resolved.data.val)
    )


def test_the_hf_vit_digits_example_validates(capsys, tmp_path):
    config = REPO / "experiments" / "hf_vit_digits" / "config.yaml"
    code, out, err = _cli(capsys, "validate", str(config), "--output", str(tmp_path / "run"))
    assert code == 0, err
    # Heads, head dims and MLP width of both layers: the search space the example promises.
    for layer in (0, 1):
        for group in ("attention.q_proj#heads", "attention.q_proj,", "mlp.fc1"):
            assert f"vit.layers.{layer}.{group}" in out, out
    assert "output layers (never pruned): classifier" in out
    assert "base weights: trained here" in out and "example inputs: a tensor [1, 1, 8, 8]" in out
