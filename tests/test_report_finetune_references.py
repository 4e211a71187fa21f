"""The report with the fine-tune protocol and the new references (supervised, pretrained weights).

The stores are real MLflow stores filled through MlflowClient with fake-but-plausible runs, logged
with the params (from bench's own config builder, so resolved as bench resolves them), tags, metrics,
histories and artifacts ``bench run`` logs, so these tests take seconds instead of minutes of training.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from scipy import stats as sps

from bench.resolve import build_run_config
from bench.schema import RunConfig
from reports import analyse, build_report
from reports.arms import method_label, reference_kind
from reports.collect import experiment_ids, load_runs, metric_columns
from reports.run_tables import variance_table

WEIGHTS = {"A": b"stand-in for ImageNet resnet18 weights", "B": b"stand-in for other weights"}
SHA_A, SHA_B = (hashlib.sha256(WEIGHTS[k]).hexdigest() for k in ("A", "B"))
CLASSES = ("class_0", "class_1", "class_2", "class_3")
NAMES = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")
BASE = {"random_init": 0.40, "supervised": 0.62, "fgssl": 0.50, "simclr": 0.55, "byol": 0.45}
PROTOCOL_GAIN = {"knn": 0.0, "linear": 0.05, "finetune": 0.12}
LEGACY_ABSENT = ("model.weights", "eval.finetune_")
# The method tags bench logs per run: display name, report order, baseline (legacy runs predate them).
METHOD_TAGS = {
    "fgssl": ("FG-SSL", "0", "true"),
    "simclr": ("SimCLR", "10", "false"),
    "byol": ("BYOL", "20", "false"),
    "random_init": ("random init", "1000", "false"),
    "supervised": ("supervised", "1000", "false"),
}
pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")


@dataclass(frozen=True)
class FakeRun:
    """One run as ``bench run`` would log it; ``weights`` names a WEIGHTS file content (None: none), which
    the store writes to ``weights_file`` so the same weights can sit at two paths."""

    method: str
    batch_size: int
    seed: int
    protocols: tuple[str, ...] = ("knn", "linear")
    weights: str | None = None
    weights_file: str = "imagenet.pt"
    status: str = "FINISHED"
    options: dict[str, object] = field(default_factory=dict)
    finetune_mode: str = "auto"  # bench resolves it per method: fgssl progressive, the rest plain
    legacy: bool = False  # logged before weights files, the fine-tune and the method tags: none of them

    @property
    def reference(self) -> bool:
        return self.method in ("random_init", "supervised")

    def config(self, epochs: int, weights_dir: Path) -> RunConfig:
        tree: dict[str, object] = {
            "train": {"epochs": epochs},
            "eval": {"protocols": list(self.protocols), "finetune_epochs": epochs, "finetune_mode": self.finetune_mode},
            "method_options": {self.method: dict(self.options)} if self.options else {},
        }
        if self.weights:
            path = weights_dir / self.weights_file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(WEIGHTS[self.weights])
            tree["model"] = {"weights": str(path)}
        return build_run_config(tree, self.method, "synthetic", self.batch_size, self.seed)

    def params(self, config: RunConfig) -> dict[str, str]:
        params = config.flat_params()
        if self.legacy:
            params = {k: v for k, v in params.items() if not k.startswith(LEGACY_ABSENT)}
        return params


def score(run: FakeRun, protocol: str, split: str, name: str) -> float:
    """A plausible metric: method level, a gain for weights and for stronger protocols, seed noise."""
    noise_seed = [run.seed, run.batch_size, zlib.crc32(f"{run.method}{run.weights}{protocol}{split}{name}".encode())]
    value = BASE[run.method] + PROTOCOL_GAIN[protocol] + (0.2 if run.weights else 0.0)
    value += {"accuracy": 0.0, "balanced_accuracy": -0.01, "f1_macro": -0.03, "auc_macro": 0.15}[name]
    value += 0.01 * math.log2(run.batch_size / 8) * (1 if run.method == "simclr" else -0.2)
    value += float(np.random.default_rng(noise_seed).normal(0.0, 0.015))
    return round(min(max(value, 0.0), 1.0), 6)


def log_fake_run(client: MlflowClient, experiment_id: str, run: FakeRun, root: Path, epochs: int = 3) -> str:
    """Create one run with bench's params and tags, per-epoch histories, final metrics and test reports."""
    config = run.config(epochs, root / "weights")
    tags = {
        "method": run.method,
        "dataset": "synthetic",
        "task": "4class",
        "batch_size": str(run.batch_size),
        "seed": str(run.seed),
        "config_hash": config.config_hash(),
        "device": "cpu",
        "reference": str(run.reference).lower(),
        "git_commit": "0123abc",
        "version.python": "3.12.0",
        "host.cpus": "2",
    }
    if run.weights:
        tags.update({"weights": run.weights_file, "weights_sha256": str(config.model.weights_sha256)})
    if not run.legacy:
        tags.update(zip(("method_display", "method_order", "method_baseline"), METHOD_TAGS[run.method], strict=True))
    name = f"{run.method}-synthetic-b{run.batch_size}-s{run.seed}"
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    client.log_batch(run_id, params=[Param(k, v) for k, v in run.params(config).items()])
    metrics: list[Metric] = []
    if run.method != "random_init":
        for epoch in range(epochs):
            loss = 5.0 / (epoch + 1) + 0.01 * run.seed
            metrics += [
                Metric("train.loss", loss, 0, epoch),
                Metric("train.images_per_second", 100.0 + epoch, 0, epoch),
            ]
    if run.status != "FINISHED":
        client.log_batch(run_id, metrics=metrics, tags=[RunTag("failure_reason", "non-finite loss in epoch 2")])
        client.set_terminated(run_id, run.status)
        return run_id
    if "finetune" in run.protocols:
        for epoch in range(epochs):
            val = score(run, "finetune", "val", "balanced_accuracy") - 0.02 * abs(epoch - 1)
            metrics += [
                Metric("finetune.train.loss", 1.5 / (epoch + 1), 0, epoch),
                Metric("finetune.train.loss.ce", 1.5 / (epoch + 1), 0, epoch),
                Metric("finetune.epoch_val.balanced_accuracy", val, 0, epoch),
            ]
        metrics.append(Metric("finetune.selected_epoch", 1.0, 0, epochs))
    for protocol in run.protocols:
        for split in ("val", "test"):
            metrics += [Metric(f"{protocol}.{split}.{n}", score(run, protocol, split, n), 0, epochs) for n in NAMES]
        report = {"protocol": protocol, "class_names": list(CLASSES), "confusion_matrix": np.eye(4, dtype=int).tolist()}
        path = root / "staging" / run_id / f"{protocol}_test_report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report))
        client.log_artifact(run_id, str(path))
    metrics.append(Metric("run.seconds", 60.0 + run.batch_size, 0, 0))
    client.log_batch(run_id, metrics=metrics)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def make_store(root: Path, experiments: dict[str, Iterable[FakeRun]]) -> str:
    """A sqlite MLflow store under ``root`` with the given runs per experiment; returns its URI."""
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    for name, runs in experiments.items():
        experiment_id = client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
        for run in runs:
            log_fake_run(client, experiment_id, run, root)
    return uri


def sweep(methods: Iterable[str], sizes: Iterable[int], seeds: Iterable[int], **kwargs: object) -> list[FakeRun]:
    return [FakeRun(m, b, s, **kwargs) for m in methods for b in sizes for s in seeds]


FT = ("knn", "linear", "finetune")
PLAIN_METHODS = ("fgssl", "simclr", "random_init")
OLD_TABLES = ["comparison_knn", "comparison_linear", "paired_tests", "batch_size_sensitivity", "cost"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store (creating its schema is the slow part) with three experiments:

    plain: knn and linear only, as before the fine-tune existed;
    mixed: the same runs, seeds 0 and 1 also fine-tuned, plus byol without fine-tune, one byol run
        logged by the harness before weights and fine-tune params existed, and one simclr run
        fine-tuned progressively (``--finetune-mode progressive``) instead of plain;
    refs: every method and reference fine-tuned, random_init also from weights A (one copy at another
        path), simclr also from weights B.
    """
    plain = sweep(PLAIN_METHODS, (8, 16), (0, 1, 2))
    mixed = [replace(r, protocols=FT) if r.seed < 2 else r for r in plain]
    mixed += [*sweep(["byol"], [16], (0, 1, 2)), FakeRun("byol", 16, 3, legacy=True)]
    mixed.append(FakeRun("simclr", 16, 0, FT, finetune_mode="progressive"))
    refs = sweep((*PLAIN_METHODS, "supervised"), [16], (0, 1, 2), protocols=FT)
    refs += [FakeRun("random_init", 16, s, FT, "A", "copy.pt" if s == 2 else "imagenet.pt") for s in (0, 1, 2)]
    refs += sweep(["simclr"], [16], (0, 1, 2), protocols=FT, weights="B", weights_file="other.pt")
    return make_store(tmp_path_factory.mktemp("store"), {"plain": plain, "mixed": mixed, "refs": refs})


def runs_of(uri: str, experiment: str) -> pd.DataFrame:
    client = MlflowClient(tracking_uri=uri)
    return load_runs(client, experiment_ids(client, [experiment]))


def logged(runs: pd.DataFrame, method: str, metric: str, batch: int = 16, weights: str = "") -> pd.Series:
    """Seed -> value of one arm's main runs (ablation variants are compared apart)."""
    main = runs[runs["variant"] == ""]
    rows = main[(main["method"] == method) & (main["batch_size"] == batch) & (main["weights"] == weights)]
    return rows.set_index("seed")[metric].dropna()


def stat(stats: pd.DataFrame, method: str, metric: str, batch: int = 16, weights: str = "") -> pd.Series:
    row = stats[
        (stats["method"] == method)
        & (stats["batch_size"] == batch)
        & (stats["weights"] == weights)
        & (stats["metric"] == metric)
    ]
    assert len(row) == 1, row
    return row.iloc[0]


def table(data, name: str):
    return next(t for t in data.tables if t.name == name)


def all_text(data) -> str:
    parts = [data.summary, *data.notes]
    for t in data.tables:
        parts += [t.title, *t.notes, *map(str, t.display.columns), *t.display.astype(str).to_numpy().ravel()]
    return "\n".join(parts)


def test_only_final_scores_count_as_metrics(store):
    """The fine-tune's per-epoch histories and its selected epoch share the prefix but are no scores."""
    columns = metric_columns(runs_of(store, "mixed"))
    assert {"finetune.test.accuracy", "finetune.val.balanced_accuracy", "knn.test.accuracy"} <= set(columns)
    for history in ("finetune.train.loss", "finetune.train.loss.ce", "finetune.epoch_val.balanced_accuracy"):
        assert history not in columns
    assert "finetune.selected_epoch" not in columns
    metrics = analyse(store, ["mixed"]).metrics
    assert [m.split(".")[0] for m in metrics] == ["knn"] * 4 + ["linear"] * 4 + ["finetune"] * 4


def test_finetune_results_in_tables_and_statistics(store):
    data = analyse(store, ["mixed"])
    runs = runs_of(store, "mixed")
    assert [t.name for t in data.tables][:3] == ["comparison_knn", "comparison_linear", "comparison_finetune"]
    assert "finetune.test.balanced_accuracy" in data.headline

    values = logged(runs, "simclr", "finetune.test.accuracy")
    assert list(values.index) == [0, 1]
    cell = stat(data.stats, "simclr", "finetune.test.accuracy")
    assert (cell["n"], cell["mean"], cell["std"]) == (2, pytest.approx(values.mean()), pytest.approx(values.std()))
    comparison = table(data, "comparison_finetune")
    shown = comparison.display.set_index(["batch", "method"]).loc[("16", "SimCLR"), "accuracy"]
    assert shown.startswith(f"{values.mean():.3f} ± {values.std():.3f}")
    assert "BYOL" not in set(comparison.display["method"])  # it never ran the fine-tune
    assert any("No finished run evaluated with finetune: BYOL at batch 16" in note for note in comparison.notes)

    tests = data.tests.set_index(["batch_size", "metric", "method"])
    base = logged(runs, "fgssl", "finetune.test.accuracy")
    expected = sps.ttest_rel(values.to_numpy(), base.loc[values.index].to_numpy()).pvalue
    assert tests.loc[(16, "finetune.test.accuracy", "simclr"), "p_t"] == pytest.approx(expected)
    assert (16, "finetune.test.accuracy", "byol") not in tests.index
    paired = table(data, "paired_tests").display
    assert "finetune accuracy" in set(paired["metric"])

    sensitivity = table(data, "batch_size_sensitivity").data.set_index(["method", "metric"])
    fg = runs[(runs["method"] == "fgssl")].dropna(subset=["finetune.test.balanced_accuracy"])
    fit = sps.linregress(np.log2(fg["batch_size"].astype(float)), fg["finetune.test.balanced_accuracy"])
    assert sensitivity.loc[("fgssl", "finetune.test.balanced_accuracy"), "slope"] == pytest.approx(fit.slope)
    assert "finetune accuracy" in table(data, "batch_size_sensitivity").display["metric"].tolist()


def test_adding_the_finetune_changes_no_knn_or_linear_number(store):
    """Runs with and without the fine-tune (and runs logged before it existed) are one setting."""
    mixed, plain = analyse(store, ["mixed"]), analyse(store, ["plain"])
    assert set(mixed.runs["setting"]) == {"synthetic"}
    columns = ["setting", "batch_size", "method", "metric", "n", "mean", "std", "ci_low", "ci_high"]
    for metric in plain.metrics:
        old = plain.stats[plain.stats["metric"] == metric][columns].reset_index(drop=True)
        new = mixed.stats[(mixed.stats["metric"] == metric) & mixed.stats["method"].isin(PLAIN_METHODS)]
        pd.testing.assert_frame_equal(new[columns].reset_index(drop=True), old)
    assert stat(mixed.stats, "byol", "knn.test.accuracy")["n"] == 4  # the legacy run pools with the new ones
    assert set(mixed.runs.loc[mixed.runs["method"] == "byol", "method_display"]) == {"BYOL"}  # and takes their tags


def test_another_finetune_mode_is_a_variant_not_pooled(store):
    """fgssl fine-tuned progressively and the rest plain (bench's auto mode) is one comparison; a method
    also fine-tuned in another mode is an ablation variant of it, kept out of the main cells."""
    data = analyse(store, ["mixed"])
    runs = data.runs
    progressive = runs[(runs["method"] == "simclr") & (runs["param.eval.finetune_mode"] == "progressive")]
    assert len(progressive) == 1 and progressive.iloc[0]["variant"].startswith("finetune_mode=progressive")
    assert (runs.loc[runs["method"] != "simclr", "variant"] == "").all()
    assert stat(data.stats, "simclr", "finetune.test.accuracy")["n"] == 2
    ablation = table(data, "ablation_simclr").display
    assert any(o.startswith("finetune_mode=progressive") for o in ablation["options"])
    assert any(o.startswith("finetune_mode=plain") and o.endswith("(main)") for o in ablation["options"])
    notes = table(data, "comparison_finetune").notes
    assert any(
        n.startswith("Fine-tune mode per method: FG-SSL progressive (grids ") and "SimCLR plain" in n for n in notes
    )


def test_store_without_finetune_or_weights_gives_the_old_report(store, tmp_path):
    data = analyse(store, ["plain"])
    assert [t.name for t in data.tables] == OLD_TABLES
    assert data.headline == [
        "knn.test.accuracy",
        "knn.test.balanced_accuracy",
        "linear.test.accuracy",
        "linear.test.balanced_accuracy",
    ]
    text = all_text(data)
    assert "finetune" not in text and "weights" not in text
    assert "The untrained reference random init" in data.summary
    comparison = table(data, "comparison_knn").display
    assert list(comparison.columns) == [
        "dataset",
        "batch",
        "method",
        "accuracy",
        "balanced acc.",
        "f1 (macro)",
        "auc (macro)",
    ]
    assert list(comparison["method"]) == ["FG-SSL", "SimCLR", "random init (reference)"] * 2 + [
        "majority class",
        "chance",
    ]
    # the fake test reports' confusion matrices hold one image per class: 4 classes, majority = chance = 1/4
    assert comparison.iloc[-2]["accuracy"] == "0.250" and comparison.iloc[-1]["balanced acc."] == "0.250"

    summary = build_report(store, ["plain"], tmp_path / "plain.pdf", formats=("csv",))
    for path in summary.files:
        assert not {"weights", "weights_file"} & set(pd.read_csv(path, nrows=1).columns), path.name


def test_runs_from_other_weights_are_never_pooled(store):
    data = analyse(store, ["refs"])
    runs = runs_of(store, "refs")
    assert set(runs["setting"]) == {"synthetic"}  # the weights are an arm, not a setting; paths do not count
    for method, weights in (("random_init", ""), ("random_init", SHA_A), ("simclr", ""), ("simclr", SHA_B)):
        for metric in ("knn.test.accuracy", "finetune.test.balanced_accuracy"):
            values = logged(runs, method, metric, weights=weights)
            cell = stat(data.stats, method, metric, weights=weights)
            assert (cell["n"], cell["mean"]) == (3, pytest.approx(values.mean())), (method, weights, metric)

    labels = list(table(data, "comparison_finetune").display["method"])
    assert labels[-2:] == ["majority class", "chance"]
    labels = labels[:-2]
    assert labels == [
        "FG-SSL",
        "SimCLR",
        f"SimCLR (weights {SHA_B[:8]})",
        "random init (reference)",
        f"random init (reference, weights {SHA_A[:8]})",
        "supervised (reference)",
    ]
    assert list(table(data, "cost").display["method"]) == labels
    assert list(table(data, "cost").data["runs"]) == [3] * 6

    tests = data.tests[data.tests["metric"] == "knn.test.accuracy"].set_index(["method", "weights"])
    assert set(tests["baseline"]) == {"FG-SSL"}
    assert {("simclr", ""), ("simclr", SHA_B), ("random_init", ""), ("random_init", SHA_A)} <= set(tests.index)
    sim_b = logged(runs, "simclr", "knn.test.accuracy", weights=SHA_B)
    base = logged(runs, "fgssl", "knn.test.accuracy")
    expected = sps.ttest_rel(sim_b.to_numpy(), base.loc[sim_b.index].to_numpy()).pvalue
    assert tests.loc[("simclr", SHA_B), "p_t"] == pytest.approx(expected)
    assert f"SimCLR (weights {SHA_B[:8]})" in set(table(data, "paired_tests").display["method"])


def test_references_are_named_for_what_they_are(store):
    summary = analyse(store, ["refs"]).summary
    assert "The untrained reference random init (" in summary
    assert "The supervised from scratch reference supervised (" in summary
    assert f"The pretrained weights {SHA_A[:8]} reference random init (" in summary
    judged = [p for p in summary.splitlines() if p.startswith("- ") and not p.startswith("- Batch size")]
    assert judged and all(p.count("untrained") == 1 for p in judged)


@pytest.mark.parametrize(
    ("method", "weights", "kind", "label"),
    [
        ("random_init", "", "untrained", "random_init (reference)"),
        (
            "random_init",
            "1a2b3c4d" + "5" * 56,
            "pretrained weights 1a2b3c4d",
            "random_init (reference, weights 1a2b3c4d)",
        ),
        ("supervised", "", "supervised from scratch", "supervised (reference)"),
        (
            "supervised",
            "9f8e7d6c" + "0" * 56,
            "supervised from pretrained weights 9f8e7d6c",
            "supervised (reference, weights 9f8e7d6c)",
        ),
    ],
)
def test_reference_kind_and_label(method: str, weights: str, kind: str, label: str):
    assert reference_kind(method, weights) == kind
    assert method_label(method, True, weights) == label


@pdftotext
def test_pdf_shows_finetune_and_references(store, tmp_path):
    out = tmp_path / "refs.pdf"
    build_report(store, ["refs"], out, formats=("pdf",))
    text = " ".join(
        subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True, check=True).stdout.split()
    )
    runs = runs_of(store, "refs")
    values = logged(runs, "simclr", "finetune.test.accuracy", weights=SHA_B)
    assert "Comparison on test (finetune protocol)" in text
    assert f"{values.mean():.3f} ± {values.std():.3f}" in text
    assert f"random init (reference, weights {SHA_A[:8]})" in text and "supervised (reference)" in text
    assert f"{SHA_A[:8]} = {SHA_A} (copy.pt, imagenet.pt): random init" in text
    assert "Fine-tune training loss per epoch" in text and "Fine-tune val balanced accuracy" in text
    assert "finetune: per method, its run with the highest validation balanced accuracy" in text


def test_variance_shares_table_lists_the_class_first_then_each_factor(store):
    runs = runs_of(store, "plain")
    assert variance_table(runs) is None  # logged before the shares existed: no table, no empty columns
    runs["variance_share.test.skin_brightness"] = 0.1
    runs["variance_share.test.class"] = runs["seed"] * 0.1  # seeds 0, 1, 2: mean 0.1, std 0.1
    variance = variance_table(runs)
    assert list(variance.display.columns) == ["dataset", "batch", "method", "class", "skin brightness"]
    first = variance.display.iloc[0]
    assert (first["method"], first["class"], first["skin brightness"]) == ("FG-SSL", "0.100 ± 0.100", "0.100 ± 0.000")
    assert variance.data.iloc[0]["class_mean"] == pytest.approx(0.1) and variance.data.iloc[0]["runs"] == 3
