"""PostgreSQL as the shared database: the MLflow server's backend store and Optuna's storage, on a real
server the tests start on 127.0.0.1; and a database that does not answer, refused in one line."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import optuna
import pytest
from servers import free_port, mlflow_server, postgres_server, rest_runs

from bench.cli import main

SMOKE = ["--preset", "smoke", "--no-progress"]


def _tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["data"]["tags"] if t["key"] == key), None)


@pytest.mark.slow
def test_a_sweep_logged_to_an_mlflow_server_on_postgresql(tmp_path):
    with (
        postgres_server(("mlflow",)) as urls,
        mlflow_server(tmp_path / "server", backend=urls["mlflow"]) as (uri, _),
    ):
        command = [sys.executable, "-m", "bench", "run", *SMOKE, "--methods", "simclr", "byol", "--epochs", "1"]
        done = subprocess.run([*command, "--tracking-uri", uri], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        runs = rest_runs(uri)
        assert Counter(r["info"]["status"] for r in runs) == {"FINISHED": 2}
        assert all("knn.test.accuracy" in {m["key"] for m in r["data"]["metrics"]} for r in runs)
        again = subprocess.run([*command, "--tracking-uri", uri], cwd=tmp_path, capture_output=True, text=True)
        assert again.returncode == 0 and len(rest_runs(uri)) == 2, "a rerun repeats nothing that finished"


@pytest.mark.slow
def test_two_tuning_processes_share_one_study_on_postgresql(tmp_path):
    with (
        postgres_server(("mlflow", "optuna")) as urls,
        mlflow_server(tmp_path / "server", backend=urls["mlflow"]) as (uri, _),
    ):
        tune = [sys.executable, "-m", "bench", "tune", "--method", "simclr", "--trials", "2", "--epochs", "2"]
        args = [*tune, *SMOKE, "--storage", urls["optuna"], "--study", "shared", "--tracking-uri", uri]
        workers = [  # started together: the study (and Optuna's tables) are created by whichever comes first
            subprocess.Popen([*args, "--sampler-seed", str(seed)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
            for seed in (1, 2)
        ]
        for worker in workers:
            _, err = worker.communicate(timeout=900)
            assert worker.returncode == 0, err[-2000:]
        trials = optuna.load_study(study_name="shared", storage=urls["optuna"]).trials
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        assert len(trials) == 4 and all(t.state in done for t in trials), [t.state for t in trials]
        logged = [r for r in rest_runs(uri) if _tag(r, "optuna.study") == "shared"]
        assert sorted(int(_tag(r, "optuna.trial")) for r in logged) == [0, 1, 2, 3]


def test_an_unreachable_postgresql_store_or_storage_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dead = f"postgresql://bench:secret@127.0.0.1:{free_port()}/bench"
    assert main(["run", *SMOKE, "--methods", "simclr", "--tracking-uri", dead]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tracking store" in err and "not reachable" in err, err
    assert "secret" not in err, "the password is not printed"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["tune", "--method", "simclr", "--trials", "1", *SMOKE, "--storage", dead, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Optuna storage" in err and "not reachable" in err, err
    assert not list(tmp_path.glob("mlflow.db")), "nothing was written"
