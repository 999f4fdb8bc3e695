"""User code (factories, metrics) and the environment (a full disk) fail as one line naming the config key, before
anything is written; factories are imported from beside the config and from the working directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from autoprune.cli import main
from autoprune.config import config_from_dict, load_config
from autoprune.study import prepare_task, resolve

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _user_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def _config(output: Path, **sections) -> dict:
    """SmallNet on 64 random samples: the base trains in a blink."""
    config = {
        "name": "user",
        "output": str(output),
        "model": {"factory": "user_models:small_net", "input_shape": [1, 16, 16]},
        "data": {"factory": "user_models:tiny_data"},
        "base_training": {"epochs": 1, "lr": 0.01},
        "prune": {"ignore": ["fc"], "search_space": "uniform", "ratio": [0.0, 0.5], "criteria": ["l1"]},
        "finetune": {"epochs": 0, "bn_recalibration_batches": 1},
        "study": {"n_trials": 1, "sampler": "random", "search": "single"},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    return config


def _write(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _cli(capsys, *argv: str) -> tuple[int, list[str]]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip().splitlines()


def _error_line(lines: list[str]) -> str:
    errors = [line for line in lines if line.startswith("autoprune: error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in lines), lines
    return errors[0]


FACTORY = '''
from torch import nn

def build(width=4):
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 8, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
'''


def test_a_factory_beside_the_config_is_found_from_another_working_directory(tmp_path, monkeypatch, capsys):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    (project / "tinynet_beside.py").write_text(FACTORY)
    config = _config(tmp_path / "run", model={"factory": "tinynet_beside:build", "options": {"width": 6}})
    path = _write(project / "config.yaml", config)
    monkeypatch.chdir(elsewhere)
    before = list(sys.path)
    try:
        code, lines = _cli(capsys, "validate", str(path))
        assert code == 0, lines
        resolved = resolve(load_config(path))
        assert resolved.model[0].out_channels == 6  # model.options reached the factory
        assert sys.path == before  # the folders were on the import path only while importing
    finally:
        sys.modules.pop("tinynet_beside", None)


def test_a_factory_in_the_working_directory_is_found_with_the_config_elsewhere(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "tinynet_cwd.py").write_text(FACTORY)
    config = _config(tmp_path / "run", model={"factory": "tinynet_cwd:build", "options": {"width": 5}})
    path = _write(tmp_path / "configs" / "config.yaml", config)
    monkeypatch.chdir(work)
    try:
        code, lines = _cli(capsys, "search", str(path))
        assert code == 0, lines
        study = load_config(path)
        assert (study.output / "trials.csv").is_file()
    finally:
        sys.modules.pop("tinynet_cwd", None)


def test_an_unknown_module_names_the_folders_it_looked_in(tmp_path, capsys):
    path = _write(tmp_path / "c.yaml", _config(tmp_path / "run", model={"factory": "no_such_tinynet:build"}))
    code, lines = _cli(capsys, "validate", str(path))
    assert code == 2 and len(lines) == 1
    assert "model.factory" in lines[0] and f"looked in {tmp_path}" in lines[0]


def test_model_options_a_builtin_does_not_take_name_model_options(tmp_path, capsys):
    model = {"factory": None, "builtin": "resnet_small", "num_classes": 10, "options": {"width": 8}}
    path = _write(tmp_path / "c.yaml", _config(tmp_path / "run", model=model))
    code, lines = _cli(capsys, "validate", str(path))
    assert code == 2 and len(lines) == 1
    assert "model.options" in lines[0] and "width" in lines[0] and "c.yaml" in lines[0]


BAD_USER_CODE = {
    "model factory raises": ({"model": {"factory": "user_models:raising_factory"}}, "model.factory", "the factory is broken"),
    "model factory returns a string": ({"model": {"factory": "user_models:not_a_module"}}, "model.factory", "returned str"),
    "model factory takes no such option": ({"model": {"options": {"depth": 3}}}, "model.options", "depth"),
    "data factory raises": ({"data": {"factory": "user_models:raising_data"}}, "data.factory", "not mounted"),
    "data factory returns a number": ({"data": {"factory": "user_models:not_loaders"}}, "data.factory", "returned int"),
    "empty validation loader": ({"data": {"options": {"n_val": 0}}}, "data.factory", "empty validation loader"),
    "empty training loader": ({"data": {"options": {"n_train": 0}}}, "data.factory", "empty training loader"),
    "metric raises": ({"metric": "user_models:raising_metric"}, "metric", "KeyError"),
    "metric returns text": ({"metric": "user_models:text_metric"}, "metric", "expected a number"),
    "input_shape disagrees with the data": ({"model": {"input_shape": [3, 16, 16]}}, "model.input_shape", "[1, 16, 16]"),
    "input_shape of the wrong rank": ({"model": {"input_shape": [16, 16]}}, "model.input_shape", "disagrees"),
    "model fails on the data's channels": (
        {"model": {"input_shape": [3, 16, 16]}, "data": {"options": {"channels": 3}}},
        "model.input_shape",
        "fails on an example input of shape [1, 3, 16, 16]",
    ),
}


@pytest.mark.parametrize("command", ["validate", "search"])
@pytest.mark.parametrize("case", list(BAD_USER_CODE), ids=list(BAD_USER_CODE))
def test_broken_user_code_is_one_line_naming_the_key_and_creates_nothing(tmp_path, capsys, case, command):
    sections, key, cause = BAD_USER_CODE[case]
    path = _write(tmp_path / "c.yaml", _config(tmp_path / "run", **sections))
    code, lines = _cli(capsys, command, str(path))
    assert code == 2
    assert len(lines) == 1, lines
    assert f"{path}: {key}:" in lines[0] and cause in lines[0], lines[0]
    assert not (tmp_path / "run").exists()  # no run folder, no study.db


def test_a_non_finite_base_metric_is_refused_before_the_study_starts(tmp_path, capsys):
    path = _write(tmp_path / "c.yaml", _config(tmp_path / "run", metric="user_models:nan_metric"))
    code, lines = _cli(capsys, "search", str(path))
    assert code == 2
    line = _error_line(lines)
    assert f"{path}: metric:" in line and "is nan" in line
    assert not (tmp_path / "run").exists()  # the refused base model was not cached, no study was created


def test_a_failing_base_training_is_one_line_and_leaves_no_run_folder(tmp_path, capsys):
    path = _write(tmp_path / "c.yaml", _config(tmp_path / "runs" / "a", model={"factory": "user_models:train_broken"}))
    code, lines = _cli(capsys, "search", str(path))
    assert code == 2
    line = _error_line(lines)
    assert f"{path}: base_training:" in line and "TrainBroken cannot train" in line
    assert not (tmp_path / "runs").exists()


def test_a_base_accuracy_at_chance_level_is_warned_about(tmp_path):
    config = _config(
        tmp_path / "run",
        model={"factory": "user_models:zero_net"},  # always predicts class 0: 4 of 32 balanced labels
        data={"options": {"num_classes": 10}},
        base_training={"epochs": 0},
    )
    logs: list[str] = []
    task = prepare_task(config_from_dict(config), logs.append)
    assert task.base.metric == pytest.approx(4 / 32)
    assert any(line.startswith("warning: metric:") and "chance level for 10 classes" in line for line in logs), logs


@pytest.fixture()
def small_disk(tmp_path):
    """A real 16 KiB tmpfs: writes past it fail with ENOSPC in the kernel, as on a full disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_while_caching_the_base_model_is_one_line_naming_output(tmp_path, small_disk, capsys):
    # SmallNet's state_dict is about 45 kB; the 16 kB disk holds the lock file, not the weights.
    output = small_disk / "run"
    path = _write(tmp_path / "c.yaml", _config(output))
    code, lines = _cli(capsys, "search", str(path))
    assert code == 2
    line = _error_line(lines)
    assert f"{path}: output:" in line and "No space left on device" in line and "base.pt" in line
    assert list(small_disk.iterdir()) == []  # no half-written weights, temp file, lock or run folder


def test_the_config_file_folder_is_found_for_data_and_metric_factories_too(tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "userdata_beside.py").write_text(
        textwrap.dedent(
            """
            from user_models import tiny_data

            def data(**options):
                return tiny_data(**options)

            def score(model, loader):
                return 0.5
            """
        )
    )
    config = _config(tmp_path / "run", data={"factory": "userdata_beside:data"}, metric="userdata_beside:score")
    path = _write(project / "c.yaml", config)
    monkeypatch.chdir(tmp_path)
    try:
        code, lines = _cli(capsys, "validate", str(path))
        assert code == 0, lines
    finally:
        sys.modules.pop("userdata_beside", None)
