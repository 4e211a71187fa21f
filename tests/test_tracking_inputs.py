"""What each run records in a real local MLflow store besides its metrics: the experiment it goes to
(one per dataset unless told), its data as MLflow dataset inputs, params resolved and only where they
affect the run, and the preset it came from."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from official_layouts import make_isic2017

from bench.cli import main
from reports import compare_text

SMOKE = ["--preset", "smoke", "--no-progress"]


def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def runs_by_experiment(uri: str) -> dict[str, list]:
    client = MlflowClient(uri)
    return {
        e.name: client.search_runs([e.experiment_id])
        for e in client.search_experiments()
        if client.search_runs([e.experiment_id])
    }


def inputs(run) -> dict[str, object]:
    """context -> the dataset entity of each of the run's dataset inputs."""
    return {{t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset for i in run.inputs.dataset_inputs}


@pytest.fixture
def fake_isic(tmp_path):
    return make_isic2017(tmp_path / "isic2017")


def test_a_sweep_over_two_datasets_logs_to_one_experiment_per_dataset(tmp_path, fake_isic):
    uri = store(tmp_path)
    sweep = ["run", "--methods", "random_init", "--datasets", "synthetic", "isic2017", "--data-root", str(fake_isic)]
    assert main([*sweep, *SMOKE, "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", uri]) == 0
    logged = runs_by_experiment(uri)
    assert sorted(logged) == ["isic2017", "synthetic"]
    assert [r.data.tags["dataset"] for r in logged["isic2017"]] == ["isic2017"]
    # Skip-finished looks in each configuration's own experiment: a rerun starts nothing.
    assert main([*sweep, *SMOKE, "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", uri]) == 0
    assert {name: len(runs) for name, runs in runs_by_experiment(uri).items()} == {"isic2017": 1, "synthetic": 1}
    # --experiment still puts every run of a sweep in one experiment.
    assert (
        main([*sweep, *SMOKE, "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", uri, "--experiment", "all"])
        == 0
    )
    assert sorted(r.data.tags["dataset"] for r in runs_by_experiment(uri)["all"]) == ["isic2017", "synthetic"]


def test_a_study_file_names_the_experiment_and_every_run_carries_its_preset(tmp_path, capsys):
    uri = store(tmp_path)
    study = tmp_path / "my-study.yaml"
    study.write_text("methods: [random_init]\nseeds: [0, 1]\n")
    assert main(["run", "--config", str(study), *SMOKE, "--dry-run"]) == 0
    assert capsys.readouterr().out.count("  experiment my-study\n") == 2  # --dry-run says where runs go
    assert main(["run", "--config", str(study), *SMOKE, "--tracking-uri", uri]) == 0
    ((name, runs),) = runs_by_experiment(uri).items()
    assert name == "my-study" and len(runs) == 2
    assert {(r.data.tags["preset"], r.data.tags["config_file"]) for r in runs} == {("smoke", "my-study.yaml")}
    assert compare_text(uri, None).startswith("Warning: runs used the smoke preset")  # the tag reports read


def test_a_run_logs_its_splits_as_dataset_inputs_and_resolved_params(tmp_path, capsys):
    uri = store(tmp_path)
    assert main(["run", "--methods", "barlow", *SMOKE, "--epochs", "1", "--tracking-uri", uri]) == 0
    (run,) = runs_by_experiment(uri)["synthetic"]
    data = inputs(run)
    assert sorted(data) == ["testing", "training", "validation"]
    train = data["training"]
    assert train.name == "synthetic/4class" and train.source_type == "code"
    assert json.loads(train.source) == {"tags": {"generator": "synthetic(seed=0, sizes=128/64/64)"}}
    assert json.loads(train.profile) == {"images": 128, "classes": 4, "image_size": 32}
    assert len({d.digest for d in data.values()}) == 3  # each split its own digest
    assert run.data.tags["preset"] == "smoke" and "config_file" not in run.data.tags
    params = run.data.params
    assert params["data.task"] == "4class" and params["device"] == "cpu"  # resolved, not None / auto
    # Only what affects the run: no paths left unset, no subset limit that cut nothing (the smoke
    # preset's 256 and 128 on a 128/64/64 set), no fine-tune settings without the fine-tune.
    for absent in ("data.root", "data.cache_dir", "model.weights", "data.train_limit", "data.eval_limit"):
        assert absent not in params
    assert not [key for key in params if key.startswith("eval.finetune_")]
    assert params["optim.name"] == "sgd" and "optim.momentum" in params
    # One optimizer step per batch: its loss is train.loss alone.
    assert "train.loss" in run.data.metrics and not [m for m in run.data.metrics if m.startswith("train.loss.")]
    # The same data at another resolution is other data; at the same, the same digest.
    assert main(["run", "--methods", "random_init", *SMOKE, "--tracking-uri", uri, "--image-size", "40"]) == 0
    assert main(["run", "--methods", "random_init", *SMOKE, "--tracking-uri", uri, "--set", "optim.name=adamw"]) == 0
    runs = {
        (r.data.params["data.image_size"], r.data.params["optim.name"]): r for r in runs_by_experiment(uri)["synthetic"]
    }
    assert inputs(runs[("40", "sgd")])["training"].digest != train.digest
    assert inputs(runs[("32", "adamw")])["training"].digest == train.digest
    assert "optim.momentum" not in runs[("32", "adamw")].data.params  # SGD's momentum does not apply to AdamW
    assert "epoch 1/1: loss" in capsys.readouterr().err


def test_files_under_a_data_root_are_a_local_source_and_a_subset_that_cuts_is_a_param(tmp_path, fake_isic):
    uri = store(tmp_path)
    args = ["run", "--methods", "random_init", "--dataset", "isic2017", "--data-root", str(fake_isic), *SMOKE]
    limit = ["--set", "data.train_limit=5", "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, *limit, "--tracking-uri", uri]) == 0
    (run,) = runs_by_experiment(uri)["isic2017"]
    train = inputs(run)["training"]
    assert train.name == "isic2017/3class" and train.source_type == "local"
    assert json.loads(train.source) == {"uri": str(fake_isic.resolve())}
    assert json.loads(train.profile)["images"] == 5
    params = run.data.params
    assert params["data.train_limit"] == "5" and "data.eval_limit" not in params  # 128 cut nothing here
    assert params["data.root"] == str(fake_isic) and params["data.task"] == "3class"
    assert "data.synthetic_sizes" not in params


def test_a_dataset_another_process_logged_first_is_found_on_the_retry(tmp_path, monkeypatch):
    """Two processes logging the same data at once race on MLflow's get-or-create of the dataset row; the
    loser's store answers with a unique-key violation. The loser is made here: its first call lets a
    "winner" run log the dataset, then fails as the PostgreSQL-backed server did in CI."""
    from mlflow.exceptions import MlflowException

    from bench.run_record import dataset_records
    from bench.schema import DataConfig
    from bench.tracking import Tracker

    tracker = Tracker(store(tmp_path), experiment="race")
    records = list(dataset_records(DataConfig(synthetic_sizes=(32, 16, 16), image_size=32)))
    winner = tracker.start_run("winner", {}, {})
    loser = tracker.start_run("loser", {}, {})
    real_log_inputs = MlflowClient.log_inputs
    calls = []

    def lose_the_race_once(self, run_id, datasets=None, models=None):
        calls.append(run_id)
        if len(calls) == 1:
            real_log_inputs(self, winner, datasets=datasets)
            violation = 'BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates "dataset_pk"'
            raise MlflowException(violation)
        return real_log_inputs(self, run_id, datasets=datasets, models=models)

    monkeypatch.setattr(MlflowClient, "log_inputs", lose_the_race_once)
    tracker.log_datasets(loser, records)
    client = MlflowClient(tracker.uri)
    assert calls == [loser, loser]
    logged = inputs(client.get_run(loser))
    assert sorted(logged) == sorted(r.context for r in records)
    assert {c: d.digest for c, d in logged.items()} == {c: d.digest for c, d in inputs(client.get_run(winner)).items()}


def test_a_unique_violation_on_other_rows_is_not_retried_forever(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    from bench.tracking import Tracker, TrackingUnavailable

    tracker = Tracker(store(tmp_path), experiment="race")
    run = tracker.start_run("run", {}, {})
    attempts = []

    def always_violates(self, run_id, datasets=None, models=None):
        attempts.append(run_id)
        raise MlflowException("UNIQUE constraint failed: datasets.experiment_id")

    monkeypatch.setattr(MlflowClient, "log_inputs", always_violates)
    with pytest.raises(TrackingUnavailable, match="UNIQUE constraint failed"):
        tracker.log_datasets(run, [])
    assert len(attempts) == 4
