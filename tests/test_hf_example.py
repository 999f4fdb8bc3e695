"""The ``experiments/hf_text`` example validates with the search it promises (MLP width, layers tied), and
``base_training.optimizer`` trains transformers with AdamW without invalidating existing base-weight caches."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoprune.cli import main
from autoprune.config import config_from_dict
from autoprune.study._base import base_key

pytest.importorskip("transformers")
REPO = Path(__file__).resolve().parents[1]


def test_the_hf_text_example_validates_with_tied_mlp_width(capsys, tmp_path):
    config = REPO / "experiments" / "hf_text" / "config.yaml"
    code = main(["validate", str(config), "--output", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    assert "2 prunable groups: bert.encoder.layer.0.intermediate.dense, bert.encoder.layer.1.intermediate.dense" in out
    assert "layers tied: 1 ratio knobs for 2 groups" in out
    assert "example inputs: a dict: input_ids [1, 16], attention_mask [1, 16]" in out


def test_base_training_optimizer_keeps_the_base_cache_key_at_its_default():
    raw = {"name": "t", "output": "runs/t", "model": {"builtin": "resnet_small"}, "data": {"builtin": "digits"}}
    omitted = config_from_dict(raw)
    explicit = config_from_dict({**raw, "base_training": {"optimizer": "sgd"}})
    adamw = config_from_dict({**raw, "base_training": {"optimizer": "adamw"}})
    assert omitted.base_training.optimizer == "sgd"
    assert base_key(omitted) == base_key(explicit) != base_key(adamw)


def test_reload_py_names_a_missing_export_folder_instead_of_a_hub_traceback(tmp_path):
    import subprocess
    import sys

    script = REPO / "experiments" / "hf_text" / "reload.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "export")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert f"no save_pretrained folder at {tmp_path / 'export' / 'hf'}" in result.stderr
    assert "Traceback" not in result.stderr
