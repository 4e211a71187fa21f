"""``bench`` end to end against a real MLflow store, and one clear line for every bad input."""

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main

SMOKE = ["--preset", "smoke", "--no-progress"]


def store(tmp_path):
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def runs(uri, experiment="synthetic"):
    """The runs of one experiment: without --experiment, bench logs each dataset's runs to its own."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment)
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.slow
def test_run_all_methods_end_to_end_in_a_real_process(tmp_path):
    uri = store(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--methods", "all", *SMOKE, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bench ui --tracking-uri" in done.stdout
    (compare,) = [line for line in done.stdout.splitlines() if line.startswith("Compare the 6 run(s)")]
    assert "experiment 'synthetic'" in compare and "http://127.0.0.1:5000/#/compare-runs?runs=%5B%22" in compare
    logged = runs(uri)
    assert all(r.info.run_id in compare for r in logged)
    assert sorted(r.data.tags["method"] for r in logged) == ["barlow", "byol", "fgssl", "rotation", "simclr", "simsiam"]
    for run in logged:
        assert run.info.status == "FINISHED"
        assert 0 <= run.data.metrics["knn.test.accuracy"] <= 1
        assert 0 <= run.data.metrics["linear.test.balanced_accuracy"] <= 1
        shares = {k.rsplit(".", 1)[1]: v for k, v in run.data.metrics.items() if k.startswith("variance_share.test.")}
        assert set(shares) == {"class", "lesion_brightness", "skin_brightness", "lesion_area"}
        assert all(0 <= share <= 1 for share in shares.values()), shares
        assert run.data.params["train.batch_size"] == "32" and run.data.params["data.name"] == "synthetic"
        for tag in (
            "config_hash",
            "git_commit",
            "version.torch",
            "device",
            "seed",
            "batch_size",
            "dataset",
            "host.torch_threads",
        ):
            assert run.data.tags[tag]
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "train.loss")
        assert [m.step for m in history] == [0, 1]
        artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
        assert {"config.json", "model.pt", "knn_test_report.json", "linear_test_report.json"} <= artifacts
    fgssl = next(r for r in logged if r.data.tags["method"] == "fgssl")
    assert fgssl.data.params["method.grids"] == "8,4,2"
    assert {"train.loss.level1", "train.loss.concat"} <= set(fgssl.data.metrics)  # four steps: each logged
    barlow = next(r for r in logged if r.data.tags["method"] == "barlow")
    assert not [m for m in barlow.data.metrics if m.startswith("train.loss.")]  # one step: train.loss alone


def test_reference_run_is_logged_without_training(tmp_path):
    uri = store(tmp_path)
    assert main(["run", "--methods", "random_init", *SMOKE, "--tracking-uri", uri, "--seeds", "0", "1"]) == 0
    logged = runs(uri)
    assert len(logged) == 2 and all(r.info.status == "FINISHED" for r in logged)
    assert all("train.loss" not in r.data.metrics and r.data.tags["reference"] == "true" for r in logged)


def test_data_check_reports_and_exit_codes(tmp_path, capsys):
    assert main(["data", "check", "synthetic", "--size", "32"]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert main(["data", "check", "isic2017", "--root", str(tmp_path)]) == 2  # nothing there: what to run
    assert "to download it: bench data download isic2017" in capsys.readouterr().err
    (tmp_path / "ISIC-2017_Training_Data").mkdir()  # a layout begun: the report names what is missing
    assert main(["data", "check", "isic2017", "--root", str(tmp_path)]) == 2
    assert "ISIC-2017_Training_Part3_GroundTruth.csv: file not found" in capsys.readouterr().out
    assert main(["data", "download", "aptos2019", "--root", str(tmp_path)]) == 2
    assert "kaggle competitions download" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.realdata
def test_run_all_methods_on_the_real_isic2017(tmp_path, shared_data):
    uri = store(tmp_path)
    root = shared_data / "isic2017"
    args = ["run", "--methods", "all", "--dataset", "isic2017", "--data-root", str(root), *SMOKE, "--epochs", "1"]
    assert main([*args, "--tracking-uri", uri, "--cache-dir", str(tmp_path / "cache")]) == 0
    logged = runs(uri, "isic2017")
    assert len(logged) == 6 and all(r.info.status == "FINISHED" for r in logged)
    assert {r.data.tags["task"] for r in logged} == {"3class"}
    assert {r.data.params["method.grids"] for r in logged if r.data.tags["method"] == "fgssl"} == {"16,8,4"}
    datasets = {i.dataset.name: i.dataset for r in logged for i in r.inputs.dataset_inputs}
    assert list(datasets) == ["isic2017/3class"] and str(root.resolve()) in datasets["isic2017/3class"].source


HEAVY = ("torch", "mlflow", "sklearn", "pandas", "matplotlib")


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["run", "--no-such-flag"], ["report", "--help"]])
def test_help_and_argument_errors_import_nothing_heavy(argv):
    """``bench --help`` and a mistyped flag answer before torch, MLflow or scikit-learn load."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bench", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode in (0, 2), done.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_the_end_of_run_table_shows_the_baselines_of_each_dataset():
    from bench.commands import baseline_rows
    from bench.run import RunOutcome

    base = {"baseline.majority.test.accuracy": 0.655, "baseline.chance.test.accuracy": 1 / 3}
    outcomes = [
        RunOutcome("a", "simclr-isic2017-b32-s0", "FINISHED", {"knn.test.accuracy": 0.6, **base}, 1.0),
        RunOutcome("b", "fgssl[levels-1]-isic2017-b32-s1", "FINISHED", {"knn.test.accuracy": 0.5, **base}, 1.0),
        RunOutcome("c", "byol-synthetic-b32-s0", "FAILED", {}, 1.0),
    ]
    rows = baseline_rows(outcomes, ["knn.test.accuracy"])
    assert rows == [["majority class (isic2017)", "", "", "0.655"], ["chance (isic2017)", "", "", "0.333"]]


def test_run_help_ends_with_the_measured_minutes_per_preset_and_dataset(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    table = out[out.index("minutes per run") :]
    assert "  preset  synthetic  isic2017\n  smoke   " in table and "\n  cpu     " in table
    assert "one experiment per dataset" in " ".join(out.split())
