"""Many workers, one study: real PostgreSQL, real journal files, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from autoprune.cli import main
from autoprune.study import (
    JournalHeartbeatStorage,
    fail_stale,
    open_storage,
    pareto_frame,
    run_trials,
    threads_per_worker,
    worker_seed,
)
from autoprune.study._heartbeat import beating
from conftest import REPO, run_cli, tiny_config, write_config
from postgres import postgres_cluster

CRITERIA = ["l1", "fpgm"]  # with per_stage and 3 uniform ratios: 6 warm-start trials
WARM_START = 6


@pytest.fixture(scope="module")
def pg():
    with postgres_cluster() as cluster:
        yield cluster


def _config(tmp_path, weights, n_trials, **sections):
    sections.setdefault("prune", {"criteria": CRITERIA})
    return tiny_config(tmp_path / "run", weights, study={"n_trials": n_trials}, **sections)


def _study(url, name="tiny"):
    return optuna.load_study(study_name=name, storage=open_storage(url))


def _non_dominated(trials):
    """The Pareto front by brute force: maximise metric, minimise cost, over trials below the base cost."""
    points = [t for t in trials if t.values[1] < 1.0]
    return {
        t.number
        for t in points
        if not any(
            o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and tuple(o.values) != tuple(t.values)
            for o in points
        )
    }


def _assert_one_complete_study(study, n_trials):
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    warm = [t for t in trials if t.user_attrs.get("warm_start")]
    assert len(warm) == WARM_START  # queued once, not once per worker
    assert len({tuple(sorted(t.params.items())) for t in warm}) == WARM_START
    plans = [tuple(sorted(t.params.items())) for t in finished]
    assert len(plans) == len(set(plans))  # no two workers proposed the same plan
    return finished


def test_two_local_workers_run_one_postgres_study_to_its_exact_total(tmp_path, base_weights, pg):
    url = pg.create_database("local_workers")
    path = write_config(tmp_path / "c.yaml", _config(tmp_path, base_weights, 8))
    result = run_cli("search", str(path), "--storage", url, "--workers", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    study = _study(url)
    finished = _assert_one_complete_study(study, 8)

    workers = [t.user_attrs["worker"] for t in finished]
    assert {w["index"] for w in workers} == {0, 1}
    assert len({w["pid"] for w in workers}) == 2
    assert {w["threads"] for w in workers} == {threads_per_worker(2)}
    # the front is computed from every worker's trials
    front = pareto_frame(study)
    assert set(front["trial"][1:]) == _non_dominated([t for t in finished if t.state == TrialState.COMPLETE])
    frame = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert len(frame) == 8 and set(frame["worker.index"]) == {0, 1}
    assert "on 2 workers" in result.stderr


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _start(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "autoprune", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# Opens the storage and creates (or loads) the study once per round, at the moment the test names.
RACER = """
import json, sys, time
import optuna
from autoprune.study import create_or_load_study, open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
print("ready", flush=True)
for line in sys.stdin:
    url, at = line.split()
    while time.time() < float(at):
        pass
    try:
        created = create_or_load_study(open_storage(url), "race")[1]
        print(json.dumps({"created": created}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}), flush=True)
"""


def test_two_processes_opening_an_empty_postgres_database_at_once_both_succeed(pg):
    """Creating Optuna's schema on an empty database races (a UniqueViolation on pg_type for the loser)."""
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )
        for _ in range(2)
    ]
    try:
        assert [r.stdout.readline().strip() for r in racers] == ["ready", "ready"]
        for round_ in range(6):
            url = pg.create_database(f"schema_race_{round_}")
            at = time.time() + 0.5
            for racer in racers:
                racer.stdin.write(f"{url} {at}\n")
                racer.stdin.flush()
            results = [json.loads(r.stdout.readline()) for r in racers]
            assert all("error" not in r for r in results), (round_, results)
            assert sorted(r["created"] for r in results) == [False, True]
            assert [s.study_name for s in open_storage(url).get_all_studies()] == ["race"]
    finally:
        for racer in racers:
            racer.kill()
            racer.wait()


def test_a_killed_workers_trial_fails_after_the_grace_period_and_the_other_finishes(tmp_path, base_weights, pg):
    url = pg.create_database("killed_worker")
    config = _config(tmp_path, base_weights, 5, workers={"heartbeat_interval": 1, "grace_period": 2})
    path = write_config(tmp_path / "c.yaml", config)
    victim = _start("search", str(path), "--storage", url, "--worker-index", "1")
    survivor = _start("search", str(path), "--storage", url, "--worker-index", "0")
    try:
        storage = open_storage(url)

        def victims_running_trial():
            try:
                study = optuna.load_study(study_name="tiny", storage=storage)
            except KeyError:
                return None
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.user_attrs.get("worker", {}).get("pid") == victim.pid:
                    return trial.number
            return None

        number = _wait_for(victims_running_trial, 180, "the victim to run a trial")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        _, err = survivor.communicate(timeout=600)
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
    assert survivor.returncode == 0, err
    study = _study(url)
    killed = study.trials[number]
    assert killed.state == TrialState.FAIL  # failed by the survivor once the heartbeat lapsed
    assert not study.get_trials(states=(TrialState.RUNNING,))
    finished = _assert_one_complete_study(study, 5)
    assert 0 in {t.user_attrs["worker"]["index"] for t in finished}


def test_a_database_that_dies_mid_search_is_one_line_and_a_restart_resumes_without_loss(tmp_path, base_weights):
    config = _config(tmp_path, base_weights, 30, workers={"heartbeat_interval": 1, "grace_period": 2})
    path = write_config(tmp_path / "c.yaml", config)
    with postgres_cluster() as cluster:  # its own server: this test stops it
        cluster.create_database("dies")
        url = cluster.url("dies").replace("postgres@", "postgres:s3cret@")  # trust auth ignores the password
        search = _start("search", str(path), "--storage", url)
        try:
            seen = []
            while not seen or not seen[-1].startswith("trial 1 complete"):
                seen.append(search.stderr.readline())
                assert seen[-1] or search.poll() is None, "".join(seen)
            cluster.stop()
            _, rest = search.communicate(timeout=300)
        finally:
            if search.poll() is None:
                search.kill()
        err = "".join(seen) + rest
        assert search.returncode == 2, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("autoprune: error: storage 'postgresql") and "connection lost" in last, err
        assert f"postgres:***@127.0.0.1:{cluster.port}/dies" in last and "s3cret" not in err
        assert "Traceback" not in err

        cluster.start()
        study = _study(cluster.url("dies"))
        complete = [t.number for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(complete) >= 2
        time.sleep(3)  # past the grace period: the trial the server's death cut short is stale
        again = run_cli("search", str(path), "--storage", url, "--n-trials", str(len(complete) + 1), timeout=600)
        assert again.returncode == 0, again.stderr
        study = _study(cluster.url("dies"))
        assert [t.number for t in study.trials if t.state == TrialState.COMPLETE][: len(complete)] == complete
        assert sum(t.state == TrialState.COMPLETE for t in study.trials) == len(complete) + 1
        assert not study.get_trials(states=(TrialState.RUNNING,))


def test_two_processes_on_a_journal_file_train_the_base_once_and_share_the_study(tmp_path):
    journal = tmp_path / "shared" / "study.log"
    journal.parent.mkdir()
    url = f"journal://{journal}"
    path = write_config(tmp_path / "c.yaml", _config(tmp_path, None, 8))
    first, second = _start("search", str(path), "--storage", url), _start("search", str(path), "--storage", url)
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    for process, (_, err) in zip((first, second), outputs):
        assert process.returncode == 0, err
    errs = [err for _, err in outputs]
    assert sum("training the base model" in err for err in errs) == 1
    assert sum("loaded cached base weights" in err for err in errs) == 1
    study = _study(url)
    finished = _assert_one_complete_study(study, 8)
    # the creator is worker 0; the joiner drew its own index, so its sampler has another seed
    indices = {t.user_attrs["worker"]["index"] for t in finished}
    assert 0 in indices and len(indices) == 2
    assert sum("joined study 'tiny' as worker" in err for err in errs) == 1


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_journal_heartbeat_fails_a_silent_trial_and_spares_a_beating_one(tmp_path):
    storage = open_storage(f"journal://{tmp_path / 'study.log'}", heartbeat_interval=1, grace_period=1)
    assert isinstance(storage, JournalHeartbeatStorage)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    silent, alive = study.ask(), study.ask()
    study_id = storage.get_study_id_from_name(study.study_name)
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in (silent, alive)]
    storage.record_heartbeat(ids[0])
    with beating(storage, ids[1]):
        time.sleep(2.5)
        fail_stale(study)
        states = [storage.get_trial(i).state for i in ids]
    assert states == [TrialState.FAIL, TrialState.RUNNING]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_a_trial_whose_worker_died_before_its_first_beat_fails_after_the_grace_period(tmp_path, kind, request):
    """study.ask() makes the trial RUNNING before its first beat; a worker or database that dies in between must
    not leave it RUNNING for ever (a resumed search would wait on it). A beating trial is spared."""
    if kind == "journal":
        url = f"journal://{tmp_path / 'study.log'}"
    else:
        cluster = request.getfixturevalue("pg")
        url = cluster.create_database("first_beat")
    storage = open_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    orphan, alive = study.ask(), study.ask()  # the orphan's worker died while the sampler proposed it
    study_id = storage.get_study_id_from_name(study.study_name)
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in (orphan, alive)]
    with beating(storage, ids[1]):
        fail_stale(study)
        assert [storage.get_trial(i).state for i in ids] == [TrialState.RUNNING, TrialState.RUNNING]  # within grace
        time.sleep(2.5)
        fail_stale(study)
        states = [storage.get_trial(i).state for i in ids]
    assert states == [TrialState.FAIL, TrialState.RUNNING]


def test_racing_workers_never_overshoot_the_study_total(tmp_path):
    """Four workers (own storage handles, as separate processes have) with near-instant trials."""
    url = f"journal://{tmp_path / 'study.log'}"
    optuna.create_study(storage=open_storage(url), study_name="race", directions=["maximize", "minimize"])
    counts: list[int] = []

    def worker(index):
        study = optuna.load_study(study_name="race", storage=(storage := open_storage(url, heartbeat_interval=5)))
        objective = lambda trial: (trial.number * 0.1, 1.0 / (trial.number + 1))  # noqa: E731
        counts.append(run_trials(study, storage, objective, n_trials=25, worker={"index": index}, poll_s=0.01))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    study = _study(url, "race")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 25 == sum(counts)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.FAIL))


def test_the_loop_fails_caught_errors_and_goes_on_and_honours_stop(tmp_path):
    storage = open_storage(f"journal://{tmp_path / 's.log'}")
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])

    def objective(trial):
        if trial.number % 2:
            raise ValueError("odd trial")
        return 1.0, 0.5

    ran = run_trials(study, storage, objective, n_trials=3, catch=(ValueError,))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert ran == 5
    stop = lambda: len(study.trials) >= 7  # noqa: E731
    assert run_trials(study, storage, objective, n_trials=10, catch=(ValueError,), stop=stop) == 2
    with pytest.raises(ValueError, match="odd trial"):
        run_trials(study, storage, objective, n_trials=10)


def test_worker_seeds_differ_and_worker_0_keeps_the_study_seed():
    seeds = [worker_seed(7, i) for i in range(8)]
    assert seeds[0] == 7 and len(set(seeds)) == 8
    assert worker_seed(7, 3) == worker_seed(7, 3) != worker_seed(8, 3)
    assert threads_per_worker(2, cores=2) == 1 and threads_per_worker(2, cores=16) == 8 and threads_per_worker(4, cores=2) == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("notaurl", "is not a storage URL"),
        ("postgresql://nobody@127.0.0.1:{port}/db", "cannot connect"),
        ("mysql://user@127.0.0.1/db", "install mysqlclient"),
        ("postgresql+psycopg://user@127.0.0.1/db", "install psycopg[binary]"),
        ("journal:///no/such/folder/study.log", "does not exist"),
    ],
)
def test_a_bad_storage_url_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, url, expected):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    url = url.format(port=port)
    path = write_config(tmp_path / "c.yaml", _config(tmp_path, None, 2))
    code = main(["search", str(path), "--storage", url])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and url in err and expected in err and "study.storage" in err
    assert not (tmp_path / "run").exists()
