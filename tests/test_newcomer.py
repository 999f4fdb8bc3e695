"""What a newcomer meets first: the version, a bare command, the progress lines and bar, the Pareto plot."""

from __future__ import annotations

import io
from importlib import metadata

import matplotlib.image
import optuna
import pandas as pd
import pytest
from rich.console import Console

import autoprune
from autoprune.cli import main
from autoprune.cli._progress import INFEASIBLE, SearchProgress
from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from autoprune.report import ReportData
from autoprune.report._plots import pareto_figure, pareto_x_scale, plot_pareto
from conftest import tiny_config


def test_version_flag_prints_the_one_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"autoprune {autoprune.__version__}\n"
    assert autoprune.__version__ == metadata.version("autoprune")  # the installed metadata says the same


def test_bare_autoprune_prints_the_usage_and_the_version_and_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2  # argparse's code for a missing argument
    err = capsys.readouterr().err
    assert err.startswith("usage: autoprune")
    assert f"autoprune {autoprune.__version__}\n" in err
    assert "error: a command is required" in err and "search, export, report, dashboard, validate" in err


def _config(tmp_path, **study):
    raw = tiny_config(tmp_path / "out", constraints={"max_macs": 0.5}, study={"n_trials": 4, **study})
    return config_from_dict(raw)


def _study(*trials):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for metric, cost, feasible in trials:
        attrs = {"feasible": feasible, "macs_relative": cost}
        study.add_trial(optuna.trial.create_trial(values=[metric, cost], user_attrs=attrs))
    return study


def test_plain_progress_line_marks_a_trial_over_max_macs_as_raw_not_fine_tuned(tmp_path, capsys):
    study = _study((0.91, 0.4, True), (0.35, 0.8, False))
    plain = Console(file=io.StringIO(), force_terminal=False)
    with SearchProgress(_config(tmp_path), console=plain) as progress:
        progress.on_ready(study, None)  # type: ignore[arg-type]
        for trial in study.trials:
            progress.on_trial(study, trial)
    feasible, infeasible = capsys.readouterr().err.splitlines()
    assert infeasible.startswith("trial 1 complete") and INFEASIBLE in infeasible
    assert INFEASIBLE == "infeasible (raw, not fine-tuned)"
    assert feasible.startswith("trial 0 complete") and "infeasible" not in feasible


@pytest.mark.parametrize("width", [80, 50])
def test_progress_bar_keeps_the_trial_count_on_a_narrow_terminal(tmp_path, width):
    study = _study((0.91, 0.4, True), (0.35, 0.8, False))
    stream = io.StringIO()
    console = Console(width=width, file=stream, force_terminal=True, color_system=None)
    with SearchProgress(_config(tmp_path, timeout=600), console=console) as progress:
        progress.on_ready(study, None)  # type: ignore[arg-type]
        progress.on_phase(2, "finetune")  # a long status line: front, best @ budget, timeout, phase
        progress.on_trial(study, study.trials[-1])
    last = stream.getvalue().rstrip().split("\r")[-1]
    assert "3/4" in last  # two trials were already finished at on_ready, one more since


def test_progress_bar_shows_its_decoration_when_the_terminal_is_wide(tmp_path):
    study = _study((0.91, 0.4, True))
    stream = io.StringIO()
    console = Console(width=220, file=stream, force_terminal=True, color_system=None)
    with SearchProgress(_config(tmp_path), console=console) as progress:
        progress.on_ready(study, None)  # type: ignore[arg-type]
        progress.on_phase(1, "finetune")
    last = stream.getvalue().rstrip().split("\r")[-1]
    assert "1/4" in last and "━" in last and "0:00:00" in last and "trial 1: finetune" in last


def _report(front_costs, *, crowded=0):
    """A report's data for a front at ``front_costs`` (metric falling with cost), plus ``crowded`` close points."""
    costs = [*front_costs, *(0.5 + 0.001 * i for i in range(crowded))]
    rows = [
        {"number": n, "state": "COMPLETE", "metric": 0.5 + 0.4 * c, "cost": c, "feasible": True, "warm_start": False}
        for n, c in enumerate(costs)
    ]
    trials = pd.DataFrame(rows)
    order = trials.sort_values("cost", ascending=False)["number"].tolist()
    front = pd.DataFrame({"trial": ["base", *order]})
    return ReportData(
        study_name="s", metric_name="accuracy", cost_name="MACs (relative)", base={"metric": 0.92}, trials=trials,
        front=front, groups=[], max_macs=None, wall_seconds=0.0,
    )  # fmt: skip


def test_pareto_cost_axis_is_log_when_the_front_spans_more_than_a_decade():
    assert pareto_figure(_report([0.04, 0.2, 0.6])).axes[0].get_xscale() == "log"  # 15x
    assert pareto_figure(_report([0.3, 0.5, 0.9])).axes[0].get_xscale() == "linear"  # 3x
    assert pareto_figure(_report([0.04, 0.6]), x_scale="linear").axes[0].get_xscale() == "linear"
    assert pareto_x_scale([0.1, 1.0]) == "linear" and pareto_x_scale([0.099, 1.0]) == "log"
    with pytest.raises(ConfigError, match="x_scale"):
        pareto_x_scale([0.1], "logarithmic")  # type: ignore[arg-type]


def test_pareto_labels_skip_points_too_close_to_a_labelled_one(tmp_path):
    data = _report([0.05, 0.2], crowded=30)
    axes = pareto_figure(data).axes[0]
    labels = [text for text in axes.texts if text.get_text().startswith("#")]
    assert 2 < len(labels) < len(data.front_trials)  # the far points are labelled, the crowded ones thinned out
    anchors = [axes.transData.transform(text.xy) for text in labels]
    for i, (x, y) in enumerate(anchors):
        assert all(abs(x - u) >= 34 or abs(y - v) >= 13 for u, v in anchors[:i])
    path = plot_pareto(data, tmp_path / "pareto.png")
    assert matplotlib.image.imread(path).ndim == 3
