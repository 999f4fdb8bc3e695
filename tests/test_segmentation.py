"""Segmentation: the mIoU metric, the digits_seg data set, and a search on deeplab_small."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
import torch
from torch import nn

from autoprune.config import load_yaml
from autoprune.data import digits_seg
from autoprune.metrics import METRICS, miou
from autoprune.study import pareto_frame
from conftest import REPO, run_cli, write_config


class Fixed(nn.Module):
    """Returns the logits it was built with, whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return self.logits


def _one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def test_miou_is_one_for_a_perfect_prediction_and_averages_per_class_iou():
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 2, 2]]])  # [1, 2, 4]
    assert miou(Fixed(_one_hot(target, 3)), [(None, target)]) == 1.0
    predicted = torch.tensor([[[0, 1, 1, 1], [0, 0, 2, 0]]])
    # class 0: 3 hit of union 5 (4 true, 4 predicted); class 1: 2 of 3; class 2: 1 of 2
    expected = (3 / 5 + 2 / 3 + 1 / 2) / 3
    assert miou(Fixed(_one_hot(predicted, 3)), [(None, target)]) == pytest.approx(expected)
    assert "miou" in METRICS


def test_miou_ignores_classes_absent_from_targets_and_predictions():
    target = torch.tensor([[[0, 1], [0, 1]]])
    assert miou(Fixed(_one_hot(target, 5)), [(None, target)]) == 1.0  # classes 2-4 never appear


def test_digits_seg_masks_mark_the_digit_pixels_with_its_class():
    data = digits_seg(batch_size=512, size=20, digit_size=12)
    images, masks = next(iter(data.train))
    assert images.shape[1:] == (1, 20, 20) and masks.shape[1:] == (20, 20)
    assert data.num_classes == 11 and int(masks.max()) <= 10
    for image, mask in zip(images[:50], masks[:50]):
        classes = mask.unique()
        assert classes[0] == 0 and len(classes) == 2  # background and one digit
        assert image[0][mask > 0].min() > image[0][mask == 0].mean()  # digit pixels are the bright ones


def test_segmentation_search_on_deeplab_shows_miou_against_macs(tmp_path):
    """The experiment's config, cut down to one base epoch and three trials."""
    config = load_yaml(REPO / "experiments" / "digits_seg" / "config.yaml")
    assert config["prune"]["ignore"] == ["*cls_conv*"] and config["model"]["builtin"] == "deeplab_small"
    config["output"] = str(tmp_path / "run")
    config["data"].update(batch_size=128, val_fraction=0.1, options={"size": 16, "digit_size": 10})
    config["model"]["input_shape"] = [1, 16, 16]
    config["base_training"]["epochs"] = 1
    config["finetune"].update(epochs=0, bn_recalibration_batches=2)
    config["prune"].update(search_space="uniform", criteria=["l1"])
    config["study"].update(n_trials=3, search="single")  # three fine-tuned trials; the budgets are tested elsewhere
    result = run_cli("search", str(write_config(tmp_path / "c.yaml", config)))
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "trial" in line and "MACs (rel)" in line)
    assert "miou" in header
    study = optuna.load_study(study_name=config["name"], storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert study.metric_names == ["miou", "MACs (relative)"]
    front = pareto_frame(study)
    assert front.iloc[0]["trial"] == "base" and len(front) >= 2
    assert ((front["metric"] >= 0) & (front["metric"] <= 1)).all()
    assert (front.iloc[1:]["macs_relative"] < 1.0).all()
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert len(trials) == 3 and not any(c.startswith("ratio.cls_conv") for c in trials.columns)
