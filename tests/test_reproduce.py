"""``bench reproduce``: the scale's sweep through ``bench run``, then reproduce.md from the store's runs, with
the paper's figures, the measured intervals, the baselines and the protocol differences."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from bench.cli import main
from bench.reproduce import scale_overrides
from bench.resolve import resolve_tree
from bench.sweep import expand_methods
from methods import METHOD_SETS
from reports.build import analyse_runs
from reports.collect import experiment_ids, load_runs
from reports.reproduce import PaperFigure, Protocol, paper_figures, reproduce_markdown

REPO = Path(__file__).resolve().parents[1]
# Two seeds of the reference only, one fine-tune epoch on a few synthetic images: the whole command in seconds.
TINY = ["--methods", "random_init", "--seeds", "0", "1", "--set", "eval.finetune_epochs=1"]
TINY += ["--set", "data.synthetic_sizes=[64,32,32]", "--no-progress"]


def options(**given) -> argparse.Namespace:
    defaults = {"seeds": None, "methods": None, "data_root": None, "cache_dir": None, "set": []}
    return argparse.Namespace(**{**defaults, **given})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One real ``bench reproduce synthetic --scale smoke`` (reduced by flags) into a real MLflow store."""
    root = tmp_path_factory.mktemp("reproduce")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    argv = ["reproduce", "synthetic", "--scale", "smoke", "--tracking-uri", uri, "--out", str(root / "out"), *TINY]
    assert main(argv) == 0
    return argv, uri, root / "out"


def logged(uri: str, experiment: str = "reproduce-synthetic-smoke"):
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_the_page_shows_each_method_measured_from_the_store_beside_baselines_and_differences(tiny):
    _, uri, out = tiny
    page = (out / "reproduce.md").read_text()
    runs = logged(uri)
    assert len(runs) == 2 and all(r.data.params["eval.finetune_mode"] == "progressive" for r in runs)
    assert {r.data.params["eval.finetune_augmix"] for r in runs} == {"True"}  # the ISIC recipe on synthetic
    accuracy = [r.data.metrics["finetune.test.accuracy"] for r in runs]
    half = stats.t.ppf(0.975, 1) * np.std(accuracy, ddof=1) / math.sqrt(2)
    row = next(line for line in page.splitlines() if line.startswith("| random init"))
    assert f"| not published | {100 * np.mean(accuracy):.1f} ± {100 * half:.1f} (n=2) | – |" in row
    assert "| majority class (no learning) | – | 25.0 | – | 25.0 | – |" in page
    assert "| chance (no learning) | – | 25.0 | – | 25.0 | – |" in page
    assert "not comparable to the paper's figures" in page
    differences = page.split("## Protocol differences")[1]
    for said in ("selected on the validation split", "random initialisation", "Scale: smoke, shrunk", "synthetic"):
        assert said in differences
    assert "Runs: 2, 2 FINISHED." in page
    assert (out / "report_tables" / "comparison_finetune.md").is_file()  # the report's own tables beside it


def test_a_second_reproduce_reruns_nothing_and_writes_the_same_page(tiny, capsys):
    argv, uri, out = tiny
    before = (out / "reproduce.md").read_text()
    assert main(argv) == 0
    assert "2 run(s): 2 SKIPPED" in capsys.readouterr().out
    assert len(logged(uri)) == 2 and (out / "reproduce.md").read_text() == before


def test_a_published_figure_gets_its_difference_and_where_it_lies(tiny):
    _, uri, _ = tiny
    client = MlflowClient(uri)
    runs = load_runs(client, experiment_ids(client, ["reproduce-synthetic-smoke"]))
    data = analyse_runs(runs)
    facts = ("synthetic", "synthetic", "4class", "smoke", "ResNet-18", 32, 2, 32, 1, 256, True, 1.0, None, None, False)
    protocol = Protocol(*facts)
    mean = 100 * runs["finetune.test.accuracy"].mean()
    figure = PaperFigure("synthetic", "random_init", "finetune.test.accuracy", 99.0, "a test figure")
    page = reproduce_markdown(data, [figure], protocol)
    assert f"| 99.0 (a test figure) | {mean:.1f} ± " in page
    assert f"| {mean - 99.0:+.1f} (the paper's figure is above the interval) |" in page


def test_the_paper_figures_file_holds_the_published_accuracies():
    assert [(f.method, f.value) for f in paper_figures("isic2018")] == [("fgssl", 89.7)]
    assert [(f.method, f.value) for f in paper_figures("aptos2019")] == [("fgssl", 85.8)]
    assert paper_figures("isic2017") == []
    assert all(f.metric == "finetune.test.accuracy" and "2308.05770" in f.source for f in paper_figures("isic2018"))


def test_the_scales_run_one_protocol_at_three_sizes():
    paper = scale_overrides("isic2018", "paper", options())
    assert paper["model"]["weights"] == "imagenet" and paper["seeds"] == [0, 1, 2]
    assert set(expand_methods(paper["methods"])) == {*METHOD_SETS["all"], *METHOD_SETS["paper"], "random_init"}
    for dataset, scale in (("isic2018", "paper"), ("isic2017", "cpu"), ("synthetic", "smoke")):
        tree = scale_overrides(dataset, scale, options())
        assert tree["eval"]["protocols"] == ["finetune"] and tree["eval"]["finetune_mode"] == "progressive"
        assert tree["eval"]["finetune_cutmix_alpha"] == 1.0 and tree["eval"]["finetune_augmix"] is True
    assert scale_overrides("aptos2019", "paper", options())["eval"]["finetune_augmix"] is False
    full = resolve_tree("paper", None, paper)
    assert (full["model"]["backbone"], full["data"]["image_size"], full["train"]["epochs"]) == ("resnet50", 224, 1000)
    cpu = resolve_tree("cpu", None, scale_overrides("isic2017", "cpu", options()))
    assert cpu["model"]["backbone"] == "resnet18" and cpu["train"]["epochs"] == 8
    given = scale_overrides("isic2017", "smoke", options(seeds=[4], methods=["fgssl,barlow"], set=["data.task=sk"]))
    assert given["seeds"] == [4] and given["methods"] == ["fgssl", "barlow"] and given["data"]["task"] == "sk"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["isic2019", "--scale", "smoke"], "unknown dataset 'isic2019' "),
        (["synthetic", "--scale", "smoke", "--methods", "simclrr"], "unknown method 'simclrr'"),
        (["synthetic", "--scale", "smoke", "--set", "eval.finetune_cutmix_alpha=-2"], "finetune_cutmix_alpha"),
        (["synthetic", "--scale", "smoke", "--out", "FILE"], "is a file, not a folder"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, extra, message):
    (tmp_path / "FILE").write_text("")
    store = tmp_path / "store"
    argv = ["reproduce", *[str(tmp_path / "FILE") if e == "FILE" else e for e in extra]]
    assert main([*argv, "--tracking-uri", f"sqlite:///{store / 'm.db'}", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("bench: error:") and "\n" not in err
    assert not store.exists()


def test_reproduce_help_imports_nothing_heavy():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bench", "reproduce", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0 and "--scale" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "mlflow", "sklearn", "pandas", "matplotlib"}


@pytest.mark.slow
@pytest.mark.realdata
def test_smoke_reproduce_on_the_real_isic2017_in_a_real_process(tmp_path, shared_data):
    root = shared_data / "isic2017"
    if not root.is_dir():
        pytest.skip(f"ISIC 2017 not found at {root}")
    out = tmp_path / "out"
    argv = ["reproduce", "isic2017", "--scale", "smoke", "--data-root", str(root), "--cache-dir", str(tmp_path / "c")]
    argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(out), "--no-progress"]
    argv += ["--workers", "2"]  # one torch thread each, as a user with two cores would run it
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=1200,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    page = (out / "reproduce.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert names == [
        "FG-SSL",
        "Barlow Twins",
        "Barlow Twins + FG-SSL",
        "random init (reference)",
        "majority class (no learning)",
        "chance (no learning)",
    ]
    for row in rows[:4]:
        assert "| not published |" in row and "(n=2)" in row
    assert "| majority class (no learning) | – | 65.6 |" in page  # nevi in the smoke preset's 128-image test subset
    assert "ISIC 2017 task: 3class" in page and "Runs: 8, 8 FINISHED." in page
