"""``compare_text`` (``bench compare``) renders the report's own comparison tables as aligned text, with the
majority-class and chance rows; a store without finished runs is a clear error; the smoke preset is
flagged; a report rebuilt from its runs.csv matches the one made from the store."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from reports import analyse, build_report, build_report_from_runs_csv, compare_text
from reports.offline import analyse_csv, runs_from_csv

TAGS = {
    "zeta": ("Zeta-SSL", "0", "true"),
    "alpha": ("Alpha", "10", "false"),
    "random_init": ("random init", "1000", "false"),
}
# knn accuracy per seed 0, 1, 2; zeta: mean 0.520, sd 0.020, 95% CI 0.520 ± 4.302653 * 0.020 / sqrt(3)
VALUES = {"zeta": (0.50, 0.52, 0.54), "alpha": (0.60, 0.61, 0.62), "random_init": (0.40, 0.41, 0.43)}
BASELINES = {
    "baseline.majority.test.accuracy": 0.655,
    "baseline.majority.test.balanced_accuracy": 1 / 3,
    "baseline.chance.test.accuracy": 1 / 3,
    "baseline.chance.test.balanced_accuracy": 1 / 3,
}


def log_runs(client: MlflowClient, experiment: str, preset: str | None, baselines: bool, status: str) -> None:
    experiment_id = client.create_experiment(experiment)
    for method, values in VALUES.items():
        for seed, value in enumerate(values):
            tags = {
                "method": method,
                "dataset": "isic2017",
                "task": "3class",
                "batch_size": "32",
                "seed": str(seed),
                "reference": str(method == "random_init").lower(),
                **dict(zip(("method_display", "method_order", "method_baseline"), TAGS[method], strict=True)),
                **({"preset": preset} if preset else {}),
            }
            run_id = client.create_run(experiment_id, run_name=f"{method}-s{seed}", tags=tags).info.run_id
            client.log_param(run_id, "model.weights", "None")
            scores = {"knn.test.accuracy": value, "knn.test.balanced_accuracy": value - 0.1}
            scores |= BASELINES if baselines else {}
            client.log_batch(run_id, metrics=[Metric(k, v, 0, 8) for k, v in scores.items()])
            client.set_terminated(run_id, status)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    log_runs(client, "study", "cpu", baselines=True, status="FINISHED")
    log_runs(client, "smoke", "smoke", baselines=True, status="FINISHED")
    log_runs(client, "old", None, baselines=False, status="FINISHED")
    log_runs(client, "broken", "cpu", baselines=True, status="FAILED")
    return uri


def test_compare_text_is_the_report_table_as_text(store):
    text = compare_text(store, ["study"])
    block = text.split("\n\n")[0].splitlines()
    assert block[0] == "isic2017: knn protocol, test split"
    header, rule = block[1], block[2]
    assert header.split() == ["batch", "method", "accuracy", "balanced", "acc."]
    assert set(rule.replace(" ", "")) == {"-"}
    zeta = next(i for i, line in enumerate(block) if "Zeta-SSL" in line)
    column = header.index("accuracy")
    assert block[zeta][column:].startswith("0.520 ± 0.020")  # hand: mean and sd of 0.50, 0.52, 0.54
    assert block[zeta + 1][column:].startswith("[0.470, 0.570] n=3")  # 0.520 ± 0.049683
    rows = {re.split(r"\s{2,}", line)[1]: line for line in text.splitlines() if line.startswith("–")}
    assert set(rows) == {"majority class", "chance"}
    assert rows["majority class"][column:].split() == ["0.655", "0.333"]
    assert rows["chance"][column:].split() == ["0.333", "0.333"]
    assert [re.split(r"\s{2,}", line)[1] for line in block[3:] if line[:1].isdigit() or line[:1] == "–"] == [
        "Zeta-SSL",
        "Alpha",
        "random init (reference)",
        "majority class",
        "chance",
    ]
    table = next(t for t in analyse(store, ["study"]).tables if t.name == "comparison_knn")
    for row in range(len(table.display)):  # every cell of the report's table, as the report shows it
        for part in table.cell(row, "balanced acc.").split("\n"):
            assert part in text
    assert "majority/chance not logged" not in text and "Warning" not in text


def test_compare_text_without_baselines_says_so_once(store):
    text = compare_text(store, ["old"])
    assert text.count("majority/chance not logged") == 1 and "majority class  " not in text


def test_compare_text_without_finished_runs_is_a_clear_error(store, tmp_path):
    with pytest.raises(ValueError, match=r"no finished runs in experiment\(s\) broken \(9 run\(s\), none FINISHED\)"):
        compare_text(store, ["broken"])
    with pytest.raises(ValueError, match="no runs"):
        compare_text(f"sqlite:///{tmp_path / 'empty.db'}", None)


def test_smoke_runs_are_flagged(store):
    data = analyse(store, ["smoke"])
    assert data.smoke and data.summary.startswith("Warning: runs used the smoke preset")
    assert compare_text(store, ["smoke"]).startswith("Warning: runs used the smoke preset")
    assert not analyse(store, ["study"]).smoke and not analyse(store, ["old"]).smoke


def test_a_report_rebuilt_from_runs_csv_matches_the_store(store, tmp_path):
    build_report(store, ["study"], tmp_path / "report.pdf", formats=("csv",))
    csv = tmp_path / "report_tables" / "runs.csv"
    runs = runs_from_csv(csv)
    assert runs["param.model.weights"].tolist() == ["None"] * 9  # bench's spelling survives the round trip
    assert runs["method_display"].tolist().count("Zeta-SSL") == 3 and runs["method_baseline"].dtype == bool
    original, rebuilt = analyse(store, ["study"]), analyse_csv(csv)
    pd.testing.assert_frame_equal(original.stats, rebuilt.stats)
    pd.testing.assert_frame_equal(original.tests, rebuilt.tests)
    pd.testing.assert_frame_equal(original.baselines, rebuilt.baselines)
    assert original.summary == rebuilt.summary
    assert any(note.startswith("Built from runs.csv without its MLflow store") for note in rebuilt.notes)


def test_runs_csv_from_before_the_tags_and_baselines(store, tmp_path):
    build_report(store, ["old"], tmp_path / "old.pdf", formats=("csv",))
    csv = tmp_path / "old_tables" / "runs.csv"
    frame = pd.read_csv(csv).drop(columns=["method_display", "method_order", "method_baseline"])
    frame.to_csv(csv, index=False)
    tags = {
        m: dict(zip(("method_display", "method_order", "method_baseline"), t, strict=True)) for m, t in TAGS.items()
    }
    data = analyse_csv(csv, tags, {"isic2017": [117, 90, 393]})
    assert data.methods.baseline == "zeta" and not data.tests.empty
    majority = data.baselines.set_index(["baseline", "metric"]).loc[("majority class", "accuracy")]
    assert majority["value"] == pytest.approx(393 / 600) and "117" in majority["source"]
    out = tmp_path / "rebuilt" / "report.pdf"
    summary = build_report_from_runs_csv(csv, out, tags, {"isic2017": [117, 90, 393]}, formats=("pdf", "md"))
    assert summary.pdf == out and out.stat().st_size > 0
    written = (out.parent / "report_tables" / "summary.md").read_text()
    assert "majority class: accuracy 0.655, balanced accuracy 0.333" in written
    assert "training-loss curves, fine-tune curves and confusion matrices" in written


def test_published_study_summary_claims_no_untested_sensitivity():
    """The ISIC 2017 study's regenerated summary (docs/results/isic2017-cpu) names its baselines and
    makes no batch-size comparison without a test."""
    summary = Path(__file__).resolve().parents[1] / "docs/results/isic2017-cpu/report_tables/summary.md"
    text = summary.read_text()
    assert "is less sensitive" not in text and "insensitive" not in text
    assert "majority class: accuracy 0.655, balanced accuracy 0.333; chance: accuracy 0.333" in text
    assert "No best knn balanced accuracy" in text
