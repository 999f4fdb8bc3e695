from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.request

import matplotlib.image
import optuna
import pandas as pd
import pytest
from rich.console import Console

from autoprune.cli._progress import SearchProgress
from autoprune.config import config_from_dict
from autoprune.report import ConstraintsView, collect, hypervolume, hypervolume_history, write_report
from conftest import REPO, run_cli, tiny_config, write_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_MACS = 0.5
N_TRIALS = 8


def _open(output):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{output / 'study.db'}")


@pytest.fixture(scope="module")
def searched(tmp_path_factory, base_weights):
    """One real tiny study, searched through the CLI (not a TTY): 6 uniform baselines, then TPE; some infeasible."""
    root = tmp_path_factory.mktemp("report")
    config = tiny_config(
        root / "run",
        base_weights,
        prune={"criteria": ["l1", "fpgm"]},
        constraints={"max_macs": MAX_MACS},
        study={"n_trials": N_TRIALS},
    )
    path = write_config(root / "c.yaml", config)
    result = run_cli("search", str(path))
    assert result.returncode == 0, result.stderr
    return root, path, config, result


def test_hypervolume_is_the_dominated_area_against_the_fixed_reference():
    # Two front points and a dominated one: area = 0.5*(0.5-0.2) + 0.9*(1.0-0.5) = 0.15 + 0.45.
    assert hypervolume([(0.5, 0.2), (0.9, 0.5), (0.4, 0.6)]) == pytest.approx(0.60)
    assert hypervolume([(0.9, 1.0), (-0.1, 0.1)]) == 0.0  # nothing beats the reference point (0, 1.0)
    assert hypervolume([]) == 0.0
    assert hypervolume([(1.0, 0.0)]) == pytest.approx(1.0)
    history = hypervolume_history([(3, 0.9, 0.5), (1, 0.5, 0.2), (2, 0.1, 0.9)])
    assert [n for n, _ in history] == [1, 2, 3]
    assert [round(v, 6) for _, v in history] == [0.4, 0.4, 0.6]
    with pytest.raises(ValueError, match="finite"):
        hypervolume([(float("nan"), 0.5)])


def test_search_without_a_tty_prints_plain_progress_lines(searched):
    _, _, _, result = searched
    assert "\x1b" not in result.stderr and "\r" not in result.stderr  # no control codes in CI logs
    lines = [line for line in result.stderr.splitlines() if line.startswith("trial ")]
    assert len(lines) == N_TRIALS
    assert all(f"@ MACs<={MAX_MACS:g} (max_macs)" in line and "front " in line for line in lines)


def test_progress_bar_shows_trials_phase_front_and_best_under_budget(searched, tmp_path):
    root, _, raw, _ = searched
    study = _open(root / "run")
    config = config_from_dict({**raw, "constraints": {"max_macs": None}, "study": {**raw["study"], "timeout": 600}})
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=220, color_system=None)
    with SearchProgress(config, console=console) as progress:
        progress.on_ready(study, None)  # type: ignore[arg-type]
        progress.on_phase(N_TRIALS, "finetune")
        status = progress._status()
        progress.on_trial(study, study.trials[-1])
    assert "trial 8: finetune" in status and "timeout 600s" in status
    front = [t for t in study.best_trials if t.values[1] < 1.0]
    best = max(t.values[0] for t in front if t.user_attrs["macs_relative"] <= 0.5)
    text = stream.getvalue()
    assert f"best accuracy {best:.4f} @ MACs<=0.5 (default)" in text
    assert f"front {len(front)}" in text and f"{N_TRIALS}/{N_TRIALS}" in text


def _is_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, path
    assert image[..., :3].std() > 0.01, f"{path} is a blank image"


def test_report_cli_writes_valid_plots_csvs_and_markdown(searched, tmp_path):
    root, path, _, _ = searched
    out = tmp_path / "report"
    result = run_cli("report", str(path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    names = {"pareto.png", "ratios.png", "hypervolume.png", "trials.csv", "pareto.csv", "report.md"}
    assert {p.split("/")[-1] for p in result.stdout.split()} == names
    for name in ("pareto.png", "ratios.png", "hypervolume.png"):
        _is_png(out / name)

    study = _open(root / "run")
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["number"]) == list(range(N_TRIALS))
    assert trials["warm_start"].sum() == 6 and (~trials["feasible"]).sum() >= 1
    front = pd.read_csv(out / "pareto.csv")
    assert front.iloc[0]["trial"] == "base"
    assert {int(n) for n in front["trial"].iloc[1:]} == {t.number for t in study.best_trials if t.values[1] < 1.0}

    report = (out / "report.md").read_text()
    for heading in ("## Pareto front", "## Best under a MACs budget", "## Hypervolume", "## Trials", "## Time"):
        assert heading in report
    feasible = [t for t in study.trials if t.user_attrs["macs_relative"] <= MAX_MACS]
    assert f"**{hypervolume((t.values[0], t.values[1]) for t in feasible):.4f}**" in report
    assert f"| complete | {N_TRIALS} |" in report
    budget_rows = {line.split("|")[1].strip(): line for line in report.splitlines() if re.match(r"\| \d+% \|", line)}
    assert set(budget_rows) == {"50%", "25%", "10%"}
    best = max(t.values[0] for t in feasible)
    cheapest = min(t.user_attrs["macs_relative"] for t in feasible if t.values[0] == best)
    cells = [c.strip() for c in budget_rows["50%"].split("|")]
    assert cells[3] == f"{best:.4f}" and cells[4] == f"{cheapest:.3f}"


def test_report_reads_a_study_that_is_still_running(searched, tmp_path):
    root, _, _, _ = searched
    shutil.copy(root / "run" / "study.db", tmp_path / "study.db")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.ask()  # a trial in progress, as while `search` runs
    study.enqueue_trial({})  # and one waiting
    files = write_report(study, tmp_path / "out", max_macs=MAX_MACS)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| running | 1 |" in report and "| waiting | 1 |" in report
    assert all(f.stat().st_size > 0 for f in files)
    data = collect(study, max_macs=MAX_MACS)
    assert len(data.trials) == N_TRIALS + 2 and len(data.scored) == N_TRIALS


def test_report_without_a_study_is_one_line_error_and_creates_nothing(tmp_path, base_weights):
    (tmp_path / "run").mkdir()
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run", base_weights))
    result = run_cli("report", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "run `autoprune search` first" in result.stderr
    assert list((tmp_path / "run").iterdir()) == []


def test_report_out_under_a_file_is_one_line_naming_the_flag(searched, tmp_path, capsys):
    from autoprune.cli import main

    _, path, _, _ = searched
    (tmp_path / "a-file").write_text("")
    assert main(["report", str(path), "--out", str(tmp_path / "a-file" / "report")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "is a file, not a folder" in err[0]


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_dashboard_shows_objective_names_user_attrs_and_infeasible_trials(searched):
    root, path, _, _ = searched
    process = subprocess.Popen(
        [sys.executable, "-m", "autoprune", "dashboard", str(path), "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(120, process.kill)  # never hang the suite on a server that does not answer
    watchdog.start()
    try:
        line = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/dashboard/", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        base = match.group(1)
        studies = _get(f"{base}/api/studies")["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == "tiny")
        detail = _get(f"{base}/api/studies/{study_id}")
    finally:
        watchdog.cancel()
        process.terminate()
        process.wait(timeout=30)

    assert detail["objective_names"] == ["accuracy", "MACs (relative)"]
    study = _open(root / "run")
    served = {t["number"]: t for t in detail["trials"]}
    assert set(served) == set(range(N_TRIALS))
    infeasible = 0
    for trial in study.trials:
        shown = served[trial.number]
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert json.loads(attrs["plan"]) == trial.user_attrs["plan"]
        assert json.loads(attrs["channels"]) == trial.user_attrs["channels"]
        assert set(json.loads(attrs["seconds"])) >= {"prune", "count", "evaluate"}
        assert shown["constraints"] == [pytest.approx(trial.constraints["max_macs"])]
        is_feasible = all(c <= 0 for c in shown["constraints"])  # the dashboard's own test
        assert is_feasible == (trial.user_attrs["macs_relative"] <= MAX_MACS)
        infeasible += not is_feasible
    assert infeasible >= 1
    # The view adds the legacy list on the way out only: the study itself still has one constraint per trial.
    assert all("constraints" not in t.system_attrs and list(t.constraints) == ["max_macs"] for t in study.trials)
    view = ConstraintsView(study._storage)
    assert [t.system_attrs["constraints"] for t in view.get_all_trials(study._study_id)] == [
        [t.constraints["max_macs"]] for t in study.trials
    ]
