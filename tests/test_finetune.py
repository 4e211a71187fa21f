"""The fine-tuning protocol: it learns, selects on validation, scores test once with the selected
weights, PMG's prediction is the sum of the four heads, and it is logged like the other protocols."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.evaluate import embed_split
from bench.finetune import BestEpoch, ProgressiveClassifier, build_classifier, finetune, predict_scores
from bench.metrics import classification_metrics
from bench.resolve import build_run_config, load_preset
from datasets import DataRequest, load_dataset
from datasets.augment import build_eval_transform
from methods import build_method
from methods.backbones import Backbone

CPU = torch.device("cpu")
SMOKE = ["--preset", "smoke", "--no-progress"]
FGSSL_SMALL = {"grids": [8, 4, 2], "block_mid_channels": 16, "block_out_channels": 32, "embed_dim": 16}


def smoke_eval(method="random_init", **overrides):
    tree = load_preset("smoke")
    tree["eval"] = {**tree["eval"], "protocols": ["finetune"], **overrides}
    return build_run_config(tree, method, "synthetic", 32, 0).eval


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", DataRequest(image_size=32, synthetic_sizes=(128, 64, 64)))


def run_finetune(pretrained, data, evaluation, seed=0, snapshots=None, losses=None):
    def on_epoch_end(report, model):
        if losses is not None:
            losses.append(sum(report.stats.losses.values()))
        if snapshots is not None:
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    return finetune(
        pretrained,
        data,
        evaluation,
        seed,
        CPU,
        class_names=data.class_names,
        ordinal=False,
        progress=False,
        on_epoch_end=on_epoch_end,
    )


def test_auto_mode_is_progressive_for_fgssl_only_and_grids_follow_the_method():
    assert smoke_eval("fgssl").finetune_mode == "progressive"
    assert smoke_eval("fgssl").finetune_grids == (8, 4, 2)
    assert smoke_eval("simclr").finetune_mode == "plain" and smoke_eval("simclr").finetune_grids == ()
    forced = smoke_eval("simclr", finetune_mode="progressive")
    assert forced.finetune_mode == "progressive" and forced.finetune_grids == (8, 4, 2)  # synthetic's paper grids


def test_finetune_settings_are_not_part_of_the_identity_unless_finetune_is_selected():
    tree = load_preset("smoke")
    base = build_run_config(tree, "simclr", "synthetic", 32, 0)
    longer = build_run_config({**tree, "eval": {**tree["eval"], "finetune_epochs": 7}}, "simclr", "synthetic", 32, 0)
    assert base.config_hash() == longer.config_hash()
    with_ft = {**tree, "eval": {**tree["eval"], "protocols": ["knn", "finetune"]}}
    longer_ft = {**tree, "eval": {**tree["eval"], "protocols": ["knn", "finetune"], "finetune_epochs": 7}}
    assert build_run_config(with_ft, "simclr", "synthetic", 32, 0).config_hash() != (
        build_run_config(longer_ft, "simclr", "synthetic", 32, 0).config_hash()
    )


def test_progressive_prediction_is_the_sum_of_the_four_heads():
    torch.manual_seed(0)
    method = build_method("fgssl", Backbone(), FGSSL_SMALL)
    evaluation = smoke_eval("fgssl")
    model = build_classifier(method, "progressive", 4, evaluation, seed=0).eval()
    assert isinstance(model, ProgressiveClassifier)
    # FG-SSL's pretrained blocks and embeddings are reused (copied, so the pretrained model is untouched).
    assert model.hierarchy is not method.hierarchy
    assert torch.equal(model.hierarchy.blocks[0].body[0].weight, method.hierarchy.blocks[0].body[0].weight)
    concat = model.hierarchy.concat_embedding.body[1].weight
    assert torch.equal(concat, method.hierarchy.concat_embedding.body[1].weight)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        heads = model.level_logits(x)
        assert len(heads) == 4 and all(h.shape == (5, 4) for h in heads)
        torch.testing.assert_close(model(x), heads[0] + heads[1] + heads[2] + heads[3])
    # Any backbone gets new heads on layer2/3/4 with the configured widths.
    other = build_classifier(Backbone(), "progressive", 4, evaluation, seed=0)
    assert [b.body[0].in_channels for b in other.hierarchy.blocks] == [128, 256, 512]
    assert other.hierarchy.blocks[0].body[3].out_channels == evaluation.finetune_block_channels[1]
    # Training takes four steps per batch: three jigsaw levels, then the concat head.
    steps = list(other.train().training_steps(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), None))
    assert [step.name for step in steps] == ["level1", "level2", "level3", "concat"]


def test_best_epoch_keeps_the_first_maximum_and_its_weights():
    layer = torch.nn.Linear(1, 1)
    best = BestEpoch()
    for epoch, score in enumerate([0.3, 0.5, 0.5, 0.4]):
        with torch.no_grad():
            layer.weight.fill_(epoch)
        best.offer(epoch, score, layer, np.full((1, 1), epoch))
    assert best.epoch == 1 and best.score == 0.5 and best.state["weight"].item() == 1.0


MODES = ["plain", pytest.param("progressive", marks=pytest.mark.slow)]  # progressive: ~15 s each


@pytest.mark.parametrize("mode", MODES)
def test_selected_epoch_has_the_best_val_and_test_is_scored_with_its_weights(data, mode):
    """By construction: test is the validation split, so test computed with the selected epoch's weights
    must equal the best validation score; and rescoring the snapshot of that epoch reproduces it."""
    torch.manual_seed(0)
    pretrained = Backbone()
    evaluation = smoke_eval(finetune_mode=mode, finetune_epochs=4, finetune_lr=3e-3)
    same = dataclasses.replace(data, test=data.val)
    snapshots = []
    result = run_finetune(pretrained, same, evaluation, snapshots=snapshots)
    history = result.selection["val_balanced_accuracy_per_epoch"]
    selected = int(result.metrics["selected_epoch"])
    assert len(history) == 4 and selected == int(np.argmax(history))  # argmax: the first maximum
    assert result.metrics["val.balanced_accuracy"] == history[selected] == max(history)
    assert result.metrics["test.balanced_accuracy"] == max(history)
    model = build_classifier(pretrained, mode, same.num_classes, evaluation, seed=0)
    model.load_state_dict(snapshots[selected])
    scores = predict_scores(model, data.test, build_eval_transform(32), CPU, 64)
    expected = classification_metrics(data.test.labels, scores)
    original = run_finetune(pretrained, data, evaluation)
    assert int(original.metrics["selected_epoch"]) == selected  # same training: test does not steer it
    assert {k: original.metrics[f"test.{k}"] for k in expected} == expected


@pytest.mark.parametrize("mode", MODES)
def test_finetune_learns_and_repeats_bit_for_bit_and_leaves_the_pretrained_model_alone(data, mode):
    torch.manual_seed(0)
    pretrained = Backbone()
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    evaluation = smoke_eval(finetune_mode=mode, finetune_epochs=4, finetune_lr=3e-3)
    losses, again = [], []
    first = run_finetune(pretrained, data, evaluation, losses=losses)
    second = run_finetune(pretrained, data, evaluation, losses=again)
    assert losses[-1] < losses[0], losses
    assert losses == again and first.metrics == second.metrics
    assert all(torch.equal(v, before[k]) for k, v in pretrained.state_dict().items())


def frozen_probe_accuracy(backbone, data):
    """Nearest class mean on frozen features: what an untrained backbone gives without fine-tuning."""
    transform = build_eval_transform(data.image_size)
    train_x, train_y = embed_split(backbone.eval(), data.train, transform, CPU, 256)
    val_x, val_y = embed_split(backbone, data.val, transform, CPU, 256)
    means = np.stack([train_x[train_y == c].mean(0) for c in range(data.num_classes)])
    return float((((val_x[:, None] - means[None]) ** 2).sum(-1).argmin(1) == val_y).mean())


@pytest.mark.slow
def test_finetuning_beats_the_frozen_random_backbone():
    data = load_dataset("synthetic", DataRequest(image_size=64, synthetic_sizes=(512, 128, 128)))
    torch.manual_seed(0)
    backbone = Backbone()
    evaluation = smoke_eval(finetune_epochs=8, finetune_batch_size=64, finetune_lr=1e-3)
    result = run_finetune(backbone, data, evaluation)
    frozen = frozen_probe_accuracy(backbone, data)
    assert result.metrics["val.accuracy"] > frozen + 0.05, (result.metrics, frozen)


def test_finetune_protocol_logged_like_the_others_with_reports_for_every_protocol(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", *SMOKE, "--tracking-uri", uri, "--methods", "random_init", "--eval", "knn,linear,finetune"]
    assert main(args) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    metrics = run.data.metrics
    for protocol in ("knn", "linear", "finetune"):
        for split in ("val", "test"):
            for name in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro"):
                assert f"{protocol}.{split}.{name}" in metrics
        path = client.download_artifacts(run.info.run_id, f"{protocol}_test_report.json", str(tmp_path))
        report = json.loads(Path(path).read_text())
        assert report["protocol"] == protocol
        assert np.asarray(report["confusion_matrix"]).shape == (4, 4)
        assert np.asarray(report["confusion_matrix"]).sum() == 64
        assert {"precision", "recall", "f1", "support"} <= set(report["per_class"][0])
    assert run.data.params["eval.finetune_mode"] == "plain"
    history = client.get_metric_history(run.info.run_id, "finetune.epoch_val.balanced_accuracy")
    assert [m.step for m in history] == [0, 1]
    best = max(history, key=lambda m: (m.value, -m.step))
    assert metrics["finetune.selected_epoch"] == best.step
    assert metrics["finetune.val.balanced_accuracy"] == best.value
    assert len(client.get_metric_history(run.info.run_id, "finetune.train.loss")) == 2


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--set", "eval.finetune_mode=joint"], "unknown finetune mode 'joint'; valid: auto, plain, progressive"),
        (
            ["--eval", "finetune", "--finetune-mode", "progressive", "--set", "eval.finetune_grids=[8,4,3]"],
            "jigsaw grid 3 does not divide the image size 32x32",
        ),
        (["--eval", "finetune", "--finetune-epochs", "0"], "eval.finetune_epochs must be in [1, 100000]"),
        (["--eval", "finetune", "--set", "eval.finetune_batch_size=4096"], "eval.finetune_batch_size 4096 is larger"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_bad_finetune_settings_are_one_line_exit_2(tmp_path, capsys, extra, message):
    target = tmp_path / "store"
    assert main(["run", *SMOKE, "--methods", "simclr", "--tracking-uri", f"sqlite:///{target / 'm.db'}", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("bench: error:") and "\n" not in err
    assert not target.exists()
