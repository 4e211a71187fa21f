"""Reports name no method: display names, report order and the baseline come from the runs' method tags,
and runs from before the tags still make a report (raw names, sorted last, no baseline, no paired tests)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from reports import analyse, build_report
from reports.arms import Methods, method_tags, resolve_method_tags
from reports.comparison import cell_stats, comparisons
from reports.plots import PALETTE, REFERENCE_COLORS, method_colors
from reports.result_tables import comparison_table, sensitivity_table
from reports.result_tables import tests_table as paired_table  # not collected as a test
from reports.run_tables import cost_table
from reports.summary import summary_paragraph

ROOT = Path(__file__).resolve().parents[1]
METRIC = "knn.test.accuracy"
# Made-up plugin methods (reports must work for any), with the tags bench would log for them.
TAGS = {
    "zeta": ("Zeta-SSL", "0", "true"),
    "alpha": ("Alpha", "10", "false"),
    "mix": ("Alpha + Zeta-SSL", "15", "false"),
    "beta": ("Beta", "20", "false"),
    "random_init": ("random init", "1000", "false"),
}
# Names of SSL methods no reports/ module may spell (the references are the harness's own arms).
METHOD_NAMES = {"fgssl", "simclr", "byol", "barlow", "simsiam", "rotation", "barlow+fgssl"}


def runs(rows: list[tuple[str, int, float]], tagged: bool | set[str] = True) -> pd.DataFrame:
    """Finished main runs at one setting and batch size; ``tagged`` says which methods logged the tags."""
    frame = pd.DataFrame(rows, columns=["method", "seed", METRIC])
    has = frame["method"].map(lambda m: tagged is True or (tagged is not False and m in tagged))
    tags = frame["method"].map(lambda m: TAGS[m])
    frame = frame.assign(
        setting="synthetic",
        batch_size=32,
        status="FINISHED",
        variant="",
        weights="",
        reference=frame["method"] == "random_init",
        method_display=tags.str[0].where(has, ""),
        method_order=tags.str[1].where(has, ""),
        method_baseline=tags.str[2].where(has, ""),
    )
    return resolve_method_tags(frame)


def three_seeds(*methods: str) -> list[tuple[str, int, float]]:
    level = {m: 0.4 + 0.05 * i for i, m in enumerate(methods)}
    return [(m, s, level[m] + 0.01 * s + 0.003 * (s * i % 3)) for i, m in enumerate(methods) for s in (0, 1, 2)]


def test_display_names_and_order_come_from_the_tags():
    frame = runs(three_seeds("random_init", "beta", "mix", "alpha", "zeta"))
    methods = Methods.of(frame)
    assert methods.baseline == "zeta" and methods.baseline_name == "Zeta-SSL"
    assert methods.in_order(frame["method"]) == ["zeta", "alpha", "mix", "beta", "random_init"]
    stats = cell_stats(frame, [METRIC])
    assert list(stats["method"]) == ["zeta", "alpha", "mix", "beta", "random_init"]
    tests = comparisons(frame, [METRIC])
    assert list(tests["method"]) == ["alpha", "mix", "beta", "random_init"]
    assert set(tests["baseline"]) == {"Zeta-SSL"}

    table = comparison_table(stats, tests, "knn", [METRIC], methods)
    assert list(table.display["method"]) == ["Zeta-SSL", "Alpha", "Alpha + Zeta-SSL", "Beta", "random init (reference)"]
    assert any("against Zeta-SSL" in note for note in table.notes)
    paired = paired_table(tests, methods)
    assert paired.title == "Paired tests against Zeta-SSL" and "diff vs Zeta-SSL" in paired.display.columns
    assert list(paired.display["method"]) == ["Alpha", "Alpha + Zeta-SSL", "Beta", "random init"]
    assert list(cost_table(frame).display["method"])[:2] == ["Zeta-SSL", "Alpha"]

    text = summary_paragraph(stats, tests, sensitivity_table(frame, [METRIC]).data, [METRIC], methods)
    assert "differences to Zeta-SSL" in text and "The untrained reference random init (" in text
    assert "No paired test" not in text


def test_a_run_from_before_the_tags_takes_its_methods_tags():
    frame = pd.DataFrame(
        {
            "method": ["alpha", "alpha", "beta"],
            "start_time": pd.to_datetime([1, 2, 3], unit="s", utc=True),
            "method_display": ["Alpha", "", ""],
            "method_order": ["10", "", ""],
            "method_baseline": ["false", "", ""],
        }
    )
    resolved = resolve_method_tags(frame)
    assert list(resolved["method_display"]) == ["Alpha", "Alpha", "beta"]  # beta never logged them: its name
    assert resolved["method_order"].tolist()[:2] == [10.0, 10.0] and math.isnan(resolved["method_order"].iloc[2])
    assert not resolved["method_baseline"].any()
    assert method_tags(resolved).equals(method_tags(frame))  # resolving twice changes nothing


def test_untagged_methods_sort_after_the_tagged_ones_alphabetically():
    frame = runs(three_seeds("beta", "zeta", "alpha", "mix"), tagged={"beta", "mix"})
    methods = Methods.of(frame)
    assert methods.in_order(frame["method"]) == ["mix", "beta", "alpha", "zeta"]
    assert [methods.tagged(m) for m in ("mix", "beta", "alpha", "zeta")] == [True, True, False, False]
    assert methods.name("zeta") == "zeta" and methods.name("mix") == "Alpha + Zeta-SSL"
    assert methods.baseline is None  # zeta is the baseline only by its tag, which its runs did not log


def test_untagged_runs_give_no_paired_tests_and_no_crash():
    frame = runs(three_seeds("zeta", "alpha", "random_init"), tagged=False)
    methods = Methods.of(frame)
    assert methods.baseline is None
    tests = comparisons(frame, [METRIC])
    assert tests.empty and "p_t_holm" in tests.columns
    stats = cell_stats(frame, [METRIC])
    assert list(stats["method"]) == ["alpha", "zeta", "random_init"]  # by name; the reference still last
    table = comparison_table(stats, tests, "knn", [METRIC], methods)
    assert list(table.display["method"]) == ["alpha", "zeta", "random_init (reference)"]
    assert any("No significance marks" in note for note in table.notes)
    text = summary_paragraph(stats, tests, sensitivity_table(frame, [METRIC]).data, [METRIC], methods)
    assert "differences to" not in text and "difference to" not in text  # no test, so no claim of one
    assert paired_table(tests, methods).display.empty


def test_colours_follow_report_order_and_are_deterministic():
    frame = runs(three_seeds("beta", "random_init", "alpha", "zeta", "mix"))
    methods = Methods.of(frame)
    colors = method_colors(methods, frame["method"])
    assert colors == {"zeta": PALETTE[0], "alpha": PALETTE[1], "mix": PALETTE[2], "beta": PALETTE[3]}
    assert method_colors(methods, list(reversed(frame["method"]))) == colors
    assert "random_init" in REFERENCE_COLORS and "random_init" not in colors
    assert method_colors(methods, ["beta", "zeta"]) == {"zeta": PALETTE[0], "beta": PALETTE[1]}
    assert "tab:gray" not in PALETTE and "grey" not in PALETTE


def _store(root: Path, tagged: bool) -> str:
    """An MLflow store with two methods and the untrained reference, three seeds each, as bench logs them
    with (tagged) or without (older runs) the method tags."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("exp", artifact_location=(root / "artifacts").as_uri())
    for method, seed, value in three_seeds("zeta", "alpha", "random_init"):
        tags = {
            "method": method,
            "dataset": "synthetic",
            "task": "4class",
            "batch_size": "32",
            "seed": str(seed),
            "reference": str(method == "random_init").lower(),
        }
        if tagged:
            tags.update(zip(("method_display", "method_order", "method_baseline"), TAGS[method], strict=True))
        run_id = client.create_run(experiment, run_name=f"{method}-s{seed}", tags=tags).info.run_id
        metrics = [Metric(METRIC, value, 0, 0), Metric("knn.test.balanced_accuracy", value - 0.01, 0, 0)]
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id, "FINISHED")
    return uri


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, str]:
    return {tagged: _store(tmp_path_factory.mktemp(f"tagged_{tagged}"), tagged) for tagged in (True, False)}


def test_store_report_uses_the_tags(stores):
    data = analyse(stores[True], None)
    assert list(data.runs.drop_duplicates("method").set_index("method")["method_display"].sort_index()) == [
        "Alpha",
        "random init",
        "Zeta-SSL",
    ]
    assert data.runs["method_order"].dtype == float and data.runs["method_baseline"].dtype == bool
    names = [t.name for t in data.tables]
    assert "paired_tests" in names
    assert list(next(t for t in data.tables if t.name == "comparison_knn").display["method"]) == [
        "Zeta-SSL",
        "Alpha",
        "random init (reference)",
    ]
    assert not any("predate" in note for note in data.notes)


def test_store_from_before_the_tags_reports_without_tests(stores, tmp_path):
    data = analyse(stores[False], None)
    assert data.methods.baseline is None and data.tests.empty
    assert "paired_tests" not in [t.name for t in data.tables]
    assert list(data.runs.drop_duplicates("method")["method_display"]) == ["alpha", "random_init", "zeta"]
    assert any(
        "Runs of alpha, zeta predate the method tags" in note and "no paired tests" in note for note in data.notes
    )
    summary = build_report(stores[False], None, tmp_path / "old.pdf", formats=("pdf", "md", "csv"))
    assert summary.pdf is not None and summary.pdf.stat().st_size > 0
    assert not (tmp_path / "old_tables" / "paired_tests.csv").exists()


def test_reports_spell_no_method_name():
    """Reference names and experiment names may appear; a method's registry name may not."""
    for path in sorted((ROOT / "reports").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in METHOD_NAMES, f"{path.name}:{node.lineno} names {node.value!r}"
