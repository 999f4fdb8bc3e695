"""End-to-end export on a tiny digits study: artifacts, reloads, gradual pruning, the CLI's refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import onnxruntime
import pytest
import torch

import autoprune
from autoprune.config import config_from_dict
from autoprune.export import ArtifactContext, ExportError, Selection, export_model, write_artifacts
from autoprune.models import build_model
from autoprune.study import FinetuneBudget
from conftest import REPO, run_cli, tiny_config, write_config

FILES = {
    "model.pt", "weights.pt", "plan.json", "architecture.json", "example_inputs.pt", "model.ts", "model.onnx", "export.json",
    "config.resolved.yaml",
}


def _config_dict(tmp_path, base_weights, **export):
    # 8x8 inputs and no search fine-tune keep every trial and epoch cheap; the mechanics are the same.
    return tiny_config(
        tmp_path / "run",
        base_weights,
        model={"input_shape": [1, 8, 8]},
        data={"options": {"size": 8}},
        prune={"search_space": "uniform", "criteria": ["l1"]},
        finetune={"epochs": 0, "bn_recalibration_batches": 2},
        constraints={"max_macs": 0.3},
        study={"n_trials": 3},
        export={
            "epochs": 1,
            "bn_recalibration_batches": 2,
            "schedule": {"step_epochs": 1},
            "onnx_exporter": "torchscript",
            **export,
        },
        latency={"runs": 5, "warmup": 1},
    )


@pytest.fixture(scope="module")
def searched(tmp_path_factory, base_weights):
    """Trials 0-2 are the uniform 0.25, 0.5, 0.75 baselines; 0.25 (MACs 0.56) breaks max_macs 0.3."""
    tmp_path = tmp_path_factory.mktemp("export")
    raw = _config_dict(tmp_path, base_weights)
    study = autoprune.search(config_from_dict(raw))
    assert [t.user_attrs["feasible"] for t in study.trials] == [False, True, True]
    return tmp_path, raw, study


def _outputs_match(a, b, tolerance):
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max()) <= tolerance


def test_export_writes_every_artifact_and_each_reloads_to_the_same_outputs(searched, tmp_path):
    root, raw, study = searched
    config = config_from_dict({**raw, "export": {**raw["export"], "onnx_exporter": "dynamo"}})
    epochs, lines = [], []
    result = export_model(
        config, Selection("trial", 1), tmp_path / "t1", on_epoch=lambda *a: epochs.append(a[:3]), log=lines.append
    )
    out = result.out
    assert {p.name for p in out.iterdir()} == FILES
    assert epochs == [("recovery", 1, 1)]

    record = json.loads((out / "export.json").read_text())
    trial = study.trials[1]
    assert record["trial"] == 1 and record["plan"] == trial.user_attrs["plan"]
    assert record["macs"]["after"] == trial.user_attrs["macs"] and record["macs"]["before"] == study.user_attrs["base"]["macs"]
    assert record["params"]["relative"] == pytest.approx(trial.user_attrs["params_relative"])
    assert set(record["metric"]) >= {"base", "pruned", "search_finetuned", "recovered"} and record["metric"]["split"] == "test"
    # The re-created trial scores on validation exactly what the search recorded: nothing to warn about.
    assert record["metric"]["recreated_validation"] == record["metric"]["search_validation"] == trial.values[0]
    # (The 16x16-trained base model scores near chance on these 8x8 inputs, which warns about the base, not this.)
    assert not [line for line in lines if line.startswith("warning") and "chance level" not in line]
    assert record["latency"]["threads"] == 1 and record["latency"]["batch"] == 1 and record["latency"]["after_ms"] > 0
    assert set(record["versions"]) >= {"torch", "torch_pruning", "autoprune"} and len(record["config_hash"]) == 16
    for name, artifact in record["artifacts"].items():
        assert artifact["status"] == "ok", (name, artifact)
        assert artifact["max_abs_diff"] <= artifact["tolerance"]
        for file, size in artifact["bytes"].items():
            assert (out / file).stat().st_size == size
    assert record["artifacts"]["model.onnx"]["exporter"] == "dynamo"

    # Reload each artifact the way a user would, and compare on fresh inputs (batch 5, not the probe's 16).
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = torch.load(out / "model.pt", weights_only=False).eval()
    with torch.no_grad():
        expected = whole(x)
        rebuilt = autoprune.load(out)
        assert _outputs_match(rebuilt(x), expected, 1e-5)
        assert _outputs_match(torch.jit.load(str(out / "model.ts"))(x), expected, 1e-5)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert _outputs_match(session.run(None, {"input": x.numpy()})[0], expected.numpy(), 1e-4)
    kept = {n: after for n, (_, after) in record["channels"].items()}
    assert rebuilt.layer2[0].conv1.out_channels == kept["layer2.0.conv1"] < 64

    # weights.pt needs no pickled code; model.pt does.
    state = torch.load(out / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    with pytest.raises(Exception):
        torch.load(out / "model.pt", weights_only=True)


def test_an_artifact_that_does_not_reproduce_the_model_fails_the_export_by_name(tmp_path):
    model = build_model("resnet_small", in_channels=1, num_classes=10).eval()
    probe = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        wrong = model(probe) + 1e-3  # as if the reloaded artifact had drifted
    ctx = ArtifactContext(tmp_path, probe, wrong, autoprune.PruningPlan(), {}, "off")
    with pytest.raises(ExportError, match=r"^model\.pt: .* differ .* by 0\.001 \(tolerance 1e-05\)"):
        write_artifacts(model, ctx)


def test_cli_export_refuses_bad_trials_and_existing_folders_and_prunes_gradually_with_force(searched, tmp_path):
    root, raw, _ = searched
    path = write_config(tmp_path / "c.yaml", raw)
    out = tmp_path / "cli"

    infeasible = run_cli("export", str(path), "--trial", "0", "--out", str(out))
    assert infeasible.returncode == 2 and len(infeasible.stderr.strip().splitlines()) == 1
    assert "--trial: trial 0 cannot be exported: it is infeasible" in infeasible.stderr
    assert "nearest valid trials: #1 (" in infeasible.stderr and not out.exists()

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = run_cli("export", str(path), "--knee", "--out", str(out))
    assert refused.returncode == 2 and "already exists" in refused.stderr and "--force" in refused.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    forced = run_cli("export", str(path), "--knee", "--out", str(out), "--force", "--iterative-steps", "2")
    assert forced.returncode == 0, forced.stderr
    assert {p.name for p in out.iterdir()} == FILES  # the old folder is gone, replaced whole
    assert not list(out.parent.glob(".cli.*"))  # no temporary folder left behind
    summary = forced.stdout
    assert "exported trial" in summary and "--knee" in summary and "MACs" in summary and "latency" in summary

    # Gradual pruning: half of each ratio, a fine-tune, the rest, then recovery; it lands on the plan's channels.
    assert "step 1/2: epoch 1/1" in forced.stderr and "recovery: epoch 1/1" in forced.stderr  # plain lines off a TTY
    assert "step 2/2: epoch" not in forced.stderr
    record = json.loads((out / "export.json").read_text())
    schedule = record["recovery"]["schedule"]
    assert schedule["fractions"] == [0.5, 1.0] and schedule["steps"] == 2 and schedule["kind"] == "linear"
    assert [step["channels"] for step in schedule["steps_reached"]][-1] == {n: a for n, (_, a) in record["channels"].items()}
    model = autoprune.load(out)
    modules = dict(model.named_modules())
    for name, (before, after) in record["channels"].items():
        assert modules[name].out_channels == after < before

    no_flag = run_cli("export", str(path), "--out", str(tmp_path / "x"))
    required = "one of the arguments --trial --max-macs --max-latency --max-cost --budget --min-metric --knee is required"
    assert no_flag.returncode == 2 and required in no_flag.stderr


def test_export_warns_when_the_trial_no_longer_reproduces(searched, tmp_path):
    root, raw, study = searched
    # No BatchNorm recalibration: not the search's recipe (its fine-tune length is recorded on the trial).
    changed = config_from_dict({**raw, "finetune": {**raw["finetune"], "bn_recalibration_batches": 0}})
    lines: list[str] = []
    result = export_model(changed, Selection("trial", 1), tmp_path / "t1", log=lines.append)
    recreated = result.record["metric"]["recreated_validation"]
    assert recreated != study.trials[1].values[0]
    assert any(
        line.startswith("warning: trial 1 scored accuracy") and f"its re-creation scores {recreated:.4f}" in line
        for line in lines
    ), lines


def test_export_repeats_the_fine_tune_recorded_on_the_trial_and_the_configs_for_older_trials(searched, tmp_path):
    root, raw, study = searched
    changed = config_from_dict({**raw, "finetune": {**raw["finetune"], "epochs": 1}})  # the search's was 0
    trial = study.trials[1]
    assert FinetuneBudget.recorded(trial.user_attrs, changed) == FinetuneBudget(0, None)
    older = {k: v for k, v in trial.user_attrs.items() if k != "finetune"}  # a trial from before budgets were recorded
    assert FinetuneBudget.recorded(older, changed) == FinetuneBudget.of(changed) == FinetuneBudget(1, None)

    epochs, lines = [], []
    result = export_model(
        changed, Selection("trial", 1), tmp_path / "t1", on_epoch=lambda *a: epochs.append(a[:3]), log=lines.append
    )
    assert epochs == [("recovery", 1, 1)]  # no search fine-tune: the trial recorded none
    assert result.record["metric"]["recreated_validation"] == trial.values[0]
    assert not any(line.startswith("warning: trial 1") for line in lines), lines


def test_a_killed_exports_temporary_folder_is_removed_by_the_next_export_and_a_live_ones_is_kept(searched, tmp_path):
    root, raw, _ = searched
    path = write_config(tmp_path / "c.yaml", raw)
    out = tmp_path / "t1"
    export = subprocess.Popen(
        [sys.executable, "-m", "autoprune", "export", str(path), "--trial", "1", "--out", str(out)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while not (leftovers := [p for p in tmp_path.iterdir() if p.name.startswith(".t1.tmp-")]):
            assert export.poll() is None, "the export ended before its temporary folder was seen"
            time.sleep(0.002)
        export.send_signal(signal.SIGKILL)  # while it writes the artifacts
        export.wait()
    finally:
        if export.poll() is None:
            export.kill()
    (killed,) = leftovers
    assert killed.is_dir() and not out.exists()  # what a killed export leaves
    assert f".{export.pid}-" in killed.name  # the folder names its owner
    live = tmp_path / killed.name.replace(f".{export.pid}-", f".{os.getpid()}-")  # this process is alive
    live.mkdir()
    elsewhere = tmp_path / ".t1.tmp-otherhost.1-abc"  # another machine's, on a shared disk: judged by age
    elsewhere.mkdir()
    aged = tmp_path / ".t1.tmp-otherhost.2-abc"
    aged.mkdir()
    os.utime(aged, (time.time() - 2 * 86400,) * 2)

    lines: list[str] = []
    export_model(config_from_dict(raw), Selection("trial", 1), out, log=lines.append)
    assert {p.name for p in out.iterdir()} == FILES
    assert not killed.exists() and not aged.exists()
    assert live.is_dir() and elsewhere.is_dir()
    assert any(line.startswith(f"removed {killed.name}") for line in lines), lines


def test_an_out_folder_that_cannot_be_created_is_one_line_before_any_model_work(searched, tmp_path):
    root, raw, _ = searched
    path = write_config(tmp_path / "c.yaml", raw)
    (tmp_path / "a_file").write_text("x")
    for out, cause in ((tmp_path / "a_file" / "export", "is a file, not a folder"), (tmp_path / "a_file", "is not a folder")):
        result = run_cli("export", str(path), "--trial", "1", "--out", str(out), "--force")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--out" in lines[0] and str(out) in lines[0] and cause in lines[0], result.stderr
        assert "selected trial" not in result.stderr and "epoch" not in result.stderr  # found before the fine-tune
