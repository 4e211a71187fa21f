"""Reference runs: the supervised reference learns, and ``--weights`` starts any backbone from exactly
the tensors of a local file (identified by its sha256), with one clear line when the file is wrong."""

import shutil

import pytest
import torch
from mlflow.tracking import MlflowClient
from torchvision import models

from bench.cli import main
from bench.ledger import Ledger
from bench.resolve import build_run_config, deep_merge, load_preset
from bench.run import execute
from bench.sweep import expand
from bench.tracking import Tracker
from bench.weights import build_backbone, file_sha256

SMOKE = ["--preset", "smoke", "--no-progress"]
CHANCE = 0.25  # four balanced classes


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A torchvision ResNet-18 state dict (fc included) unlike the run's own seeded init: another seed,
    and BatchNorm statistics moved off their initial values."""
    torch.manual_seed(123)
    state = models.resnet18(weights=None).state_dict()
    shift = {"running_mean": 0.01, "running_var": 0.1}
    state = {k: v + shift.get(k.rsplit(".", 1)[-1], 0.0) if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
    torch.save(state, path)
    return path, state


def assert_backbone_holds(backbone_state, file_state):
    prefix = {"stem.0.": "conv1.", "stem.1.": "bn1.", "stem.4.": "layer1."}
    compared = 0
    for key, value in backbone_state.items():
        source = next((new + key[len(old) :] for old, new in prefix.items() if key.startswith(old)), key)
        assert torch.equal(value, file_state[source]), key
        compared += 1
    assert compared == len(file_state) - 2  # everything but the classifier fc.weight and fc.bias


def test_weights_file_loads_the_exact_tensors(weights_file):
    path, state = weights_file
    backbone = build_backbone("resnet18", "imagenet", str(path), file_sha256(path))
    assert_backbone_holds(backbone.state_dict(), state)
    torch.manual_seed(0)
    untouched = build_backbone("resnet18", "imagenet", None, None).state_dict()
    assert not torch.equal(untouched["layer2.0.conv1.weight"], state["layer2.0.conv1.weight"])


def test_weights_identify_runs_by_content_not_path(weights_file, tmp_path):
    path, state = weights_file
    tree = load_preset("smoke")

    def config(file):
        return build_run_config(deep_merge(tree, {"model": {"weights": str(file)}}), "simclr", "synthetic", 32, 0)

    copy = tmp_path / "elsewhere.pth"
    shutil.copy(path, copy)
    other = tmp_path / "other.pth"
    torch.save({**state, "conv1.weight": state["conv1.weight"] * 2}, other)
    assert config(path).model.weights_sha256 == file_sha256(path)
    assert config(path).config_hash() == config(copy).config_hash()
    assert config(path).config_hash() != config(other).config_hash()
    assert config(path).config_hash() != build_run_config(tree, "simclr", "synthetic", 32, 0).config_hash()
    assert config(path).flat_params()["model.weights"] == str(path)


def test_imagenet_reference_run_logs_the_weights_and_starts_from_them(weights_file, tmp_path):
    path, state = weights_file
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert main(["run", *SMOKE, "--tracking-uri", uri, "--methods", "random_init", "--weights", str(path)]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    digest = file_sha256(path)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.weights"] == str(path) and run.data.params["model.weights_sha256"] == digest
    assert run.data.tags["weights"] == path.name and run.data.tags["weights_sha256"] == digest
    saved = torch.load(client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path)), weights_only=True)
    assert_backbone_holds(saved["model"], state)


def bad_weights(tmp_path, weights_file):
    path, state = weights_file
    missing_key = tmp_path / "missing-key.pth"
    torch.save({k: v for k, v in state.items() if k != "layer3.0.conv1.weight"}, missing_key)
    not_a_state_dict = tmp_path / "notes.pth"
    not_a_state_dict.write_text("these are not weights")
    return [
        (["--weights", str(tmp_path / "nope.pth")], f"weights file {tmp_path / 'nope.pth'} cannot be read"),
        (["--weights", str(missing_key)], "does not match resnet18: 1 missing key(s) (e.g. layer3.0.conv1.weight)"),
        (
            ["--weights", str(path), "--set", "model.backbone=resnet50"],
            "does not match resnet50:",
        ),
        (["--weights", str(not_a_state_dict)], f"weights file {not_a_state_dict} is not a torchvision state dict"),
        (["--weights", str(path), "--set", f"model.weights_sha256={'ab' * 32}"], f"not the expected {'ab' * 32}"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_missing_or_mismatched_weights_are_one_line_exit_2_and_nothing_written(tmp_path, capsys, weights_file, case):
    extra, message = bad_weights(tmp_path, weights_file)[case]
    target = tmp_path / "store"
    uri = f"sqlite:///{target / 'm.db'}"
    assert main(["run", *SMOKE, "--methods", "random_init", "--tracking-uri", uri, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("bench: error:") and "\n" not in err, err
    assert not target.exists()


@pytest.mark.slow
def test_supervised_reference_learns(tmp_path):
    """Cross-entropy from scratch on the train labels (64 px, 512 images, 8 epochs: ~50 s on 2 cores)."""
    tree = deep_merge(
        load_preset("smoke"),
        {
            "methods": ["supervised"],
            "data": {"image_size": 64, "synthetic_sizes": [512, 128, 128], "train_limit": None, "eval_limit": None},
            "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-6},
            "train": {"epochs": 8, "batch_size": 64},
        },
    )
    (config,) = expand(tree)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "references")
    outcome = execute(config, tracker, Ledger(tmp_path), progress=False)
    assert outcome.status == "FINISHED"
    run = tracker.client.get_run(outcome.run_id)
    assert run.data.tags["reference"] == "true" and run.data.tags["method"] == "supervised"
    losses = [m.value for m in tracker.client.get_metric_history(outcome.run_id, "train.loss")]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert outcome.metrics["knn.val.accuracy"] > CHANCE + 0.15, outcome.metrics  # measured 0.77
    # Trained on the labels, it spends its variance on the class rather than on a nuisance.
    shares = {k.rsplit(".", 1)[1]: v for k, v in outcome.metrics.items() if k.startswith("variance_share.test.")}
    nuisance = max(share for name, share in shares.items() if name != "class")
    assert shares["class"] > 0.5 and nuisance < 0.1, shares  # measured 0.80, at most 0.03


@pytest.mark.slow
def test_supervised_reference_resumes_from_its_checkpoint_bit_for_bit(tmp_path):
    tree = deep_merge(load_preset("smoke"), {"methods": ["supervised"], "train": {"epochs": 2}})
    (config,) = expand(tree)
    interrupted = Tracker(f"sqlite:///{tmp_path / 'a.db'}", "references")
    ledger = Ledger(tmp_path / "a")

    def stop_after_first_epoch(epoch, model):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(config, interrupted, ledger, progress=False, epoch_hook=stop_after_first_epoch)
    resumed = execute(config, interrupted, ledger, progress=False)
    assert resumed.status == "FINISHED" and resumed.note == "resumed after epoch 1"
    clean = execute(config, Tracker(f"sqlite:///{tmp_path / 'b.db'}", "references"), Ledger(tmp_path / "b"))
    assert resumed.metrics == clean.metrics and "knn.test.accuracy" in clean.metrics
