"""``bench tune``: an Optuna study over the real runner; every trial is an MLflow run of the study."""

import optuna
import pytest
import sqlalchemy.exc
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.errors import BenchError
from bench.resolve import build_run_config, deep_merge, load_preset
from bench.tune import open_study, suggest
from methods import METHODS, get_method


def _fixed_trial(method: str) -> optuna.trial.FixedTrial:
    """A trial that picks the middle of every float range and the first of every choice."""
    params: dict[str, object] = {"lr": 0.02}
    for name, (kind, *args) in get_method(method).search_space.items():
        params[name] = (args[0] + args[1]) / 2 if kind == "float" else list(args[0])[0]
    return optuna.trial.FixedTrial(params)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_trials_learning_rate_wins_over_the_presets_per_method_one(method):
    tree = deep_merge(load_preset("smoke"), {"method_optim": {method: {"lr": 7.0}}})
    config = build_run_config(deep_merge(tree, suggest(method, _fixed_trial(method))), method, "synthetic", 32, 0)
    assert config.optim.lr == 0.02


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_searched_option_reaches_the_runs_config(method):
    trial = _fixed_trial(method)
    config = build_run_config(deep_merge(load_preset("smoke"), suggest(method, trial)), method, "synthetic", 32, 0)
    searched = {k: v for k, v in trial.params.items() if k != "lr"}
    assert {k: config.method_options[k] for k in searched} == searched


@pytest.mark.slow
def test_tune_four_trials_logs_them_and_prints_the_best(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["tune", "--method", "simclr", "--trials", "4", "--preset", "smoke", "--no-progress", "--tracking-uri", uri]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best knn.val.accuracy" in out and "lr:" in out and "temperature:" in out
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])  # the dataset's
    assert len(runs) == 4 and {r.data.tags["preset"] for r in runs} == {"smoke"}
    assert {r.data.tags["optuna.study"] for r in runs} == {"tune-simclr-synthetic"}
    assert sorted(int(r.data.tags["optuna.trial"]) for r in runs) == [0, 1, 2, 3]
    journal = tmp_path / "optuna-journal.log"
    study = optuna.load_study(
        study_name="tune-simclr-synthetic",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))),
    )
    assert len(study.trials) == 4
    finished = [r for r in runs if r.info.status == "FINISHED"]
    best = max(finished, key=lambda r: r.data.metrics["knn.val.accuracy"])
    assert study.best_value == pytest.approx(best.data.metrics["knn.val.accuracy"])


@pytest.mark.slow
def test_tune_rejects_unknown_method_and_bad_storage(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["tune", "--method", "moco", "--preset", "smoke", "--trials", "1", "--tracking-uri", uri]) == 2
    assert "tunable methods: simclr, byol, barlow, fgssl" in capsys.readouterr().err
    bad = ["tune", "--method", "simclr", "--preset", "smoke", "--storage", "nosuchdb://x", "--tracking-uri", uri]
    assert main(bad) == 2
    assert "cannot open Optuna storage" in capsys.readouterr().err


def _duplicate_table() -> sqlalchemy.exc.ProgrammingError:
    """What PostgreSQL tells the process that lost the race to create Optuna's tables (as seen in CI)."""
    return sqlalchemy.exc.ProgrammingError(
        "CREATE TABLE studies (...)", {}, Exception('relation "studies" already exists')
    )


def test_a_process_that_loses_the_schema_race_opens_the_study_the_winner_made(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    real_create = optuna.create_study
    calls = []

    def lose_once(**kwargs):
        calls.append(kwargs["study_name"])
        if len(calls) == 1:  # the winner makes the schema and the study; the loser's CREATE is refused
            real_create(**kwargs)
            raise _duplicate_table()
        return real_create(**kwargs)

    monkeypatch.setattr(optuna, "create_study", lose_once)
    study = open_study("shared", storage, tmp_path, sampler_seed=1)
    assert calls == ["shared", "shared"]
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["shared"] and study.trials == []


def test_a_schema_error_that_persists_or_is_not_a_race_is_one_clear_error(tmp_path, monkeypatch):
    def always(error):
        def create(**kwargs):
            raise error

        return create

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    monkeypatch.setattr("bench.tune.time.sleep", lambda seconds: None)
    monkeypatch.setattr(optuna, "create_study", always(_duplicate_table()))
    with pytest.raises(BenchError, match="other processes kept creating its schema"):
        open_study("shared", storage, tmp_path)
    refused = sqlalchemy.exc.ProgrammingError("CREATE TABLE studies", {}, Exception("permission denied for schema"))
    monkeypatch.setattr(optuna, "create_study", always(refused))
    with pytest.raises(BenchError, match="cannot open Optuna storage .*permission denied"):
        open_study("shared", storage, tmp_path)
