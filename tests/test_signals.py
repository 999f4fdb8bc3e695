"""Ctrl-C and SIGTERM with ``--workers``: every worker's running trial fails as "interrupted", the parent
waits for them, writes trials.csv, prints the summary and the front, and exits 130."""

from __future__ import annotations

import datetime
import os
import signal

import pytest

from conftest import write_config
from gated_search import assert_interrupted, gated_config, start_gated_search, wait_for_running_trials


def _signal_process_group(proc) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the parent and every worker get it


def _signal_parent(proc) -> None:
    proc.send_signal(signal.SIGTERM)  # what a scheduler or `kill PID` does: only the parent gets it


@pytest.mark.parametrize("send", [_signal_process_group, _signal_parent], ids=["sigint-to-group", "sigterm-to-parent"])
def test_a_signal_with_two_workers_fails_both_running_trials_and_prints_the_summary(tmp_path, send):
    path = write_config(tmp_path / "c.yaml", gated_config(tmp_path))
    storage = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    gate = tmp_path / "gate"
    since = datetime.datetime.now()
    gate.touch()  # closed from the start: each worker's first trial waits in it
    proc = start_gated_search(path, gate, "--workers", "2", new_session=True)
    try:
        running = wait_for_running_trials(storage, 2, since)
        send(proc)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    study = assert_interrupted(storage, running, tmp_path / "run")
    workers = {study.trials[n].user_attrs["worker"]["index"] for n in running}
    assert workers == {0, 1}
    for n in running:  # the parent waited for its workers: none is left behind
        with pytest.raises(ProcessLookupError):
            os.kill(study.trials[n].user_attrs["worker"]["pid"], 0)
    assert "interrupted; 0 trials are complete and kept; run the same command to resume" in err
    assert "Pareto front" in out and "Traceback" not in err
