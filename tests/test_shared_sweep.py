"""A sweep shared by several workers through one ``mlflow server`` (database backend) and one
Optuna RDB storage: each configuration runs once, and a worker killed midway loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from servers import mlflow_server, rest_runs

pytestmark = pytest.mark.slow
SMOKE = ["--preset", "smoke", "--no-progress"]


def test_two_workers_one_killed_every_configuration_finished_once(tmp_path):
    sweep = ["--methods", "simclr", "byol", "--seeds", "0", "1", "--epochs", "3"]
    with mlflow_server(tmp_path / "server") as (uri, _):
        command = [sys.executable, "-m", "bench", "run", *SMOKE, "--tracking-uri", uri, *sweep]

        def start() -> subprocess.Popen:  # same working directory: the workers share .bench-state
            return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        doomed = start()
        checkpoints = tmp_path / ".bench-state" / "checkpoints"
        deadline = time.time() + 300
        while not any(checkpoints.glob("*.pt")):
            assert doomed.poll() is None and time.time() < deadline, "the first worker never checkpointed"
            time.sleep(0.1)
        survivor = start()
        time.sleep(2.0)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        out, err = survivor.communicate(timeout=900)
        assert survivor.returncode == 0, err[-2000:]
        runs = rest_runs(uri)
        by_hash = Counter(
            next(t["value"] for t in r["data"]["tags"] if t["key"] == "config_hash")
            for r in runs
            if r["info"]["status"] == "FINISHED"
        )
        assert len(by_hash) == 4 and set(by_hash.values()) == {1}, by_hash
        assert len(runs) == 4, "the killed worker's run was restarted as a new run instead of resumed"
        assert "resumed after epoch" in out


def test_two_tuning_workers_share_one_optuna_rdb_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")  # no race on creation
    with mlflow_server(tmp_path / "server") as (uri, _):
        tune = [sys.executable, "-m", "bench", "tune", "--method", "simclr", "--trials", "2", "--epochs", "1"]
        args = [*tune, *SMOKE, "--storage", storage, "--study", "shared", "--tracking-uri", uri]
        workers = [
            subprocess.Popen([*args, "--sampler-seed", str(seed)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
            for seed in (1, 2)
        ]
        for worker in workers:
            _, err = worker.communicate(timeout=900)
            assert worker.returncode == 0, err[-2000:]
        trials = optuna.load_study(study_name="shared", storage=storage).trials
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        assert len(trials) == 4 and all(t.state in done for t in trials), [t.state for t in trials]
        assert len({t.number for t in trials}) == 4
        logged = [r for r in rest_runs(uri) if any(t["key"] == "optuna.study" for t in r["data"]["tags"])]
        assert len(logged) == 4, "every trial is an MLflow run linked to the study"
