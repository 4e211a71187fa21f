"""The report on a real MLflow store made by the real CLI: numbers in the PDF, failed runs listed, statistics
equal to scipy's, and a smaller report (not a failure) for a store with one method."""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from scipy import stats

from reports import build_report
from reports.collect import experiment_ids, load_runs, open_client

SMOKE = ["--preset", "smoke", "--no-progress", "--epochs", "1", "--set", "data.synthetic_sizes=[64,32,32]"]
pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")


def bench(uri: str, experiment: str, *args: str) -> None:
    command = [sys.executable, "-m", "bench", "run", *args, *SMOKE, "--tracking-uri", uri, "--experiment", experiment]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> str:
    """Two methods and the reference at two batch sizes and two seeds, one FG-SSL ablation run, one run
    that diverged (FAILED), and a one-method experiment."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    bench(uri, "sweep", "--methods", "simclr", "fgssl", "random_init", "--batch-sizes", "8", "16", "--seeds", "0", "1")
    bench(
        uri,
        "sweep",
        "--methods",
        "fgssl",
        "--batch-sizes",
        "16",
        "--seeds",
        "0",
        "--set",
        "method_options.fgssl.levels=[1,2]",
    )
    log_failed_run(uri, "sweep")
    bench(uri, "solo", "--methods", "simclr", "--batch-sizes", "16", "--seeds", "0")
    return uri


def log_failed_run(uri: str, experiment: str) -> None:
    """A run that diverged, as bench marks one, with the data and protocol params of the sweep's runs (bench
    now refuses a learning rate absurd enough to make a real run diverge in one smoke epoch)."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    params = client.search_runs([experiment_id], max_results=1)[0].data.params
    tags = {"method": "barlow", "dataset": "synthetic", "batch_size": "16", "seed": "0", "reference": "false"}
    tags["failure_reason"] = "non-finite loss in epoch 1"
    run_id = client.create_run(experiment_id, run_name="barlow-synthetic-b16-s0", tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items() if not k.startswith("method")])
    client.set_terminated(run_id, "FAILED")


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def runs_of(uri: str, experiment: str):
    client = open_client(uri)
    return load_runs(client, experiment_ids(client, [experiment]))


@pytest.mark.slow
@pdftotext
def test_full_report(store, tmp_path):
    out = tmp_path / "report.pdf"
    summary = build_report(store, ["sweep"], out)
    text = pdf_text(out)
    runs = runs_of(store, "sweep")
    done = runs[(runs["status"] == "FINISHED") & (runs["variant"] == "")]

    for method in ("fgssl", "simclr", "random_init"):
        values = done[(done["method"] == method) & (done["batch_size"] == 16)]["knn.test.accuracy"].to_numpy()
        assert f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" in text, method

    failed = runs[runs["status"] == "FAILED"]
    assert len(failed) == 1 and "non-finite" in failed.iloc[0]["failure_reason"]
    assert failed.iloc[0]["run_name"] in text and "FAILED" in text and "non-finite" in text

    def by_seed(method: str) -> dict[int, float]:
        rows = done[(done["method"] == method) & (done["batch_size"] == 16)]
        return dict(zip(rows["seed"], rows["knn.test.accuracy"], strict=True))

    fg, sim = by_seed("fgssl"), by_seed("simclr")
    seeds = sorted(fg)
    expected = stats.ttest_rel([sim[s] for s in seeds], [fg[s] for s in seeds]).pvalue
    folder = out.parent / "report_tables"
    tests = pd.read_csv(folder / "paired_tests.csv")
    row = tests[(tests["method"] == "simclr") & (tests["batch_size"] == 16) & (tests["metric"] == "knn.test.accuracy")]
    got = row.iloc[0]["p_t"]
    assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected)

    sens = pd.read_csv(folder / "batch_size_sensitivity.csv")
    fg_rows = done[done["method"] == "fgssl"]
    fit = stats.linregress(np.log2(fg_rows["batch_size"].astype(float)), fg_rows["knn.test.accuracy"])
    slope = sens[(sens["method"] == "fgssl") & (sens["metric"] == "knn.test.accuracy")].iloc[0]["slope"]
    assert slope == pytest.approx(fit.slope)

    assert "Ablation: FG-SSL options" in text and "levels=1,2" in text
    shares = done[(done["method"] == "simclr") & (done["batch_size"] == 16)]["variance_share.test.class"]
    assert "What the embeddings encode" in text and f"{shares.mean():.3f} ± {shares.std(ddof=1):.3f}" in text
    for name in (
        "comparison_knn",
        "comparison_linear",
        "paired_tests",
        "batch_size_sensitivity",
        "ablation_fgssl",
        "embedding_variance",
        "cost",
        "excluded_runs",
    ):
        for ext in ("md", "csv", "tex"):
            assert folder / f"{name}.{ext}" in summary.files
            assert (folder / f"{name}.{ext}").stat().st_size > 0
    assert summary.pdf == out and summary.runs == len(runs) and summary.finished_runs == len(runs) - 1
    written = (folder / "summary.md").read_text()
    assert folder / "summary.md" in summary.files
    assert "- knn balanced accuracy on test, batch 16" in written and "- knn accuracy on test, batch 16" in written
    assert written.index("knn balanced accuracy on test") < written.index("knn accuracy on test")


@pytest.mark.slow
@pdftotext
def test_one_method_store_gives_a_smaller_report(store, tmp_path):
    out = tmp_path / "solo.pdf"
    summary = build_report(store, ["solo"], out)
    text = " ".join(pdf_text(out).split())
    assert any("Only 1 trained method" in note for note in summary.notes)
    assert any("single batch size" in note for note in summary.notes)
    assert "Only 1 trained method" in text and "single batch size" in text
    assert "Batch-size sensitivity" not in [p.stem for p in summary.files]
    value = runs_of(store, "solo").iloc[0]["knn.test.accuracy"]
    assert f"{value:.3f}" in text

    only_csv = build_report(store, ["solo"], tmp_path / "csv" / "solo.pdf", formats=("csv",))
    assert only_csv.pdf is None and all(p.suffix == ".csv" for p in only_csv.files)


@pytest.fixture(scope="session")
def finetune_store(tmp_path_factory) -> tuple[str, str]:
    """Every method kind fine-tuned by the real CLI: fgssl (progressive, bench's auto mode), simclr
    (plain), both references, and random_init from a weights file; returns the URI and the file's sha256."""
    import hashlib

    import torch
    import torchvision

    root = tmp_path_factory.mktemp("finetune")
    weights = root / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    common = ["--batch-sizes", "16", "--seeds", "0", "1", "--eval", "knn,linear,finetune", "--finetune-epochs", "1"]
    bench(uri, "ft", "--methods", "fgssl", "simclr", "random_init", "supervised", *common)
    bench(uri, "ft", "--methods", "random_init", "--weights", str(weights), *common)
    return uri, hashlib.sha256(weights.read_bytes()).hexdigest()


@pytest.mark.slow
@pdftotext
def test_finetune_and_references_report(finetune_store, tmp_path):
    uri, sha = finetune_store
    out = tmp_path / "ft.pdf"
    build_report(uri, ["ft"], out)
    text = " ".join(pdf_text(out).split())
    runs = runs_of(uri, "ft")
    assert set(runs["setting"]) == {"synthetic"}  # fgssl's progressive fine-tune does not split it off
    assert set(runs["variant"]) == {""}

    folder = out.parent / "ft_tables"
    shown = pd.read_csv(folder / "comparison_finetune.csv")
    arms = set(zip(shown["method"], shown["weights"].fillna(""), strict=True)) - {
        ("majority class", ""),
        ("chance", ""),
    }
    assert arms == {("fgssl", ""), ("simclr", ""), ("random_init", ""), ("random_init", sha), ("supervised", "")}
    values = runs[(runs["method"] == "random_init") & (runs["weights"] == sha)]["finetune.test.accuracy"]
    assert f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" in text
    assert f"random init (reference, weights {sha[:8]})" in text and "supervised (reference)" in text
    assert "The untrained reference random init" in text
    assert "The supervised from scratch reference supervised" in text
    assert f"The pretrained weights {sha[:8]} reference random init" in text
    assert "FG-SSL progressive" in text and "SimCLR plain" in text
    tests = pd.read_csv(folder / "paired_tests.csv")
    assert "finetune.test.accuracy" in set(tests["metric"])
    assert "Fine-tune training loss per epoch" in text and "Fine-tune val balanced accuracy" in text


def test_unknown_experiment_and_empty_store_are_clear_errors(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(ValueError, match="no runs"):
        build_report(uri, None, tmp_path / "r.pdf")
    with pytest.raises(ValueError, match="unknown experiment.*nope"):
        build_report(uri, ["nope"], tmp_path / "r.pdf")
