"""Every bad input a user can type or point at: one line on stderr starting ``bench: error:``, exit
code 2, and nothing written. The table of bad inputs in docs/reliability.md is this table."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from bench.cli import main

SMOKE = ["--preset", "smoke", "--no-progress"]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def touched_store(tmp: Path) -> str:
    (tmp / "mlflow.db").touch()
    return f"sqlite:///{tmp / 'mlflow.db'}"


def bad_weights(tmp: Path) -> str:
    path = tmp / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    return str(path)


# (case, extra arguments of ``bench run`` given the test's tmp folder, part of the expected message)
RUN_CASES = [
    ("unknown method", lambda t: ["--methods", "moco"], "unknown method 'moco'; valid names: all, paper, simclr, byol"),
    ("unknown dataset", lambda t: ["--dataset", "cifar10"], "unknown dataset 'cifar10'; valid names: synthetic"),
    ("method name near a valid one", lambda t: ["--methods", "fg-ssl"],
     "unknown method 'fg-ssl' (did you mean 'fgssl'?)"),
    ("dataset name near a valid one", lambda t: ["--dataset", "isic-17"],
     "unknown dataset 'isic-17' (did you mean 'isic2017'?)"),
    ("jigsaw grid does not divide the image", lambda t: ["--methods", "fgssl", "--jigsaw-grids", "8,4,3"],
     "jigsaw grid 3 does not divide the image size 32x32"),
    ("batch larger than the training set", lambda t: ["--batch-sizes", "4096"],
     "batch size 4096 is larger than the synthetic training set (128 images)"),
    ("batch size below 2", lambda t: ["--batch-sizes", "1"], "batch size must be in [2, 100000], got 1"),
    ("zero epochs", lambda t: ["--epochs", "0"], "epochs must be in [1, 100000], got 0"),
    ("negative seed", lambda t: ["--seeds", "-1"], "seed must be in [0, 2**32), got -1"),
    ("image too small", lambda t: ["--image-size", "8"], "image size must be in [16, 1024] px, got 8"),
    ("negative learning rate", lambda t: ["--lr", "-0.1"], "learning rate must be in (0, 10.0], got -0.1"),
    ("unknown config key", lambda t: ["--set", "optim.nesterov=true"], "unknown key(s) optim.nesterov"),
    ("value of the wrong type", lambda t: ["--set", "optim.lr=fast"], "optim.lr expects float, got 'fast'"),
    ("--set without a value", lambda t: ["--set", "optim.lr"], "--set expects KEY=VALUE, got 'optim.lr'"),
    ("unknown optimizer", lambda t: ["--set", "optim.name=lamb"], "unknown optimizer 'lamb'; valid: sgd, adamw"),
    ("unknown backbone", lambda t: ["--set", "model.backbone=vit"], "unknown backbone 'vit'; valid: resnet18"),
    ("grids that are not integers", lambda t: ["--jigsaw-grids", "a,b"], "--jigsaw-grids expects comma-separated"),
    ("FG-SSL level that does not exist", lambda t: ["--methods", "fgssl", "--set", "method_options.fgssl.levels=[1,5]"],
     "fgssl levels must be distinct values from (1, 2, 3), got (1, 5)"),
    ("FG-SSL embedding width 0", lambda t: ["--methods", "fgssl", "--set", "method_options.fgssl.embed_dim=0"],
     "fgssl embed_dim must be in [1, 65536], got 0"),
    ("SimCLR temperature 0", lambda t: ["--methods", "simclr", "--set", "method_options.simclr.temperature=0"],
     "simclr temperature must be > 0, got 0"),
    ("unknown evaluation protocol", lambda t: ["--eval", "knn,probe"], "unknown eval protocol(s) probe"),
    ("CUDA asked for on a machine without it", lambda t: ["--device", "cuda"],
     "--device cuda was requested but no CUDA device is available"),
    ("dataset that needs files, none given", lambda t: ["--dataset", "isic2017"], "dataset 'isic2017' needs"),
    ("data root that does not exist", lambda t: ["--dataset", "isic2017", "--data-root", str(t / "nowhere")],
     "is not a directory"),
    ("unknown task", lambda t: ["--task", "7class"], "dataset 'synthetic' has no task '7class'; valid tasks: 4class"),
    ("config file that does not exist", lambda t: ["--config", str(t / "missing.yaml")],
     "cannot read config file"),
    ("sweep YAML that does not parse", lambda t: ["--config", write(t / "a.yaml", "train:\n  batch_size: [32\n")],
     "line 3"),
    ("sweep YAML with a misspelt key", lambda t: ["--config", write(t / "b.yaml", "train:\n  bach_size: 32\n")],
     "unknown key(s) train.bach_size; valid: epochs, batch_size, seed"),
    ("sweep YAML with an empty axis", lambda t: ["--config", write(t / "c.yaml", "seeds: []\n")],
     "sweep axis 'seeds' must be a non-empty list"),
    ("weights file that does not exist", lambda t: ["--weights", str(t / "resnet18.pth")], "weights file"),
    ("weights file of another network", lambda t: ["--weights", bad_weights(t)], "does not match resnet18"),
    ("zero worker processes", lambda t: ["--workers", "0"], "--workers must be at least 1, got 0"),
    ("tracking server that is not running", lambda t: ["--tracking-uri", "http://127.0.0.1:9"],
     "tracking server http://127.0.0.1:9 is not reachable (connection refused)"),
    ("view crop bound out of range", lambda t: ["--set", "views.crop_scale_min=0"],
     "views.crop_scale_min must be in (0, 1], got 0.0"),
    # Values that ended in a traceback, ran silently truncated, or failed inside a run (issue 21).
    ("epochs that overflow", lambda t: ["--set", "train.epochs=1.0e+400"], "train.epochs must be a finite number"),
    ("NaN seed", lambda t: ["--set", "seeds=[.nan]"], "seeds must be a finite number, got nan"),
    ("infinite learning rate", lambda t: ["--set", "optim.lr=.inf"], "optim.lr must be a finite number, got inf"),
    ("null on a sweep axis", lambda t: ["--set", "batch_sizes=[null]"], "batch_sizes must not be empty"),
    ("text on a sweep axis", lambda t: ["--set", "seeds=[abc]"], "seeds expects int, got 'abc'"),
    ("non-integer batch size", lambda t: ["--set", "batch_sizes=[32.9]"], "batch_sizes expects int, got 32.9"),
    ("boolean where a number belongs", lambda t: ["--set", "train.epochs=true"], "train.epochs expects int, got True"),
    ("split of size 0", lambda t: ["--set", "data.synthetic_sizes=[0,64,64]"], "data.synthetic_sizes must be three"),
    ("cache folder that is a file", lambda t: ["--cache-dir", write(t / "cache", "x")], "is a file, not a folder"),
    ("cache folder that cannot be written", lambda t: ["--cache-dir", "/sys/kernel/fgssl-cache"], "cannot be written"),
    ("scalar where a mapping belongs", lambda t: ["--set", "method_options.simclr=5"],
     "method_options.simclr must be a mapping, got 5"),
    ("misspelt method under method_optim", lambda t: ["--set", "method_optim.byl.lr=0.1"],
     "unknown method 'byl' under method_optim; valid: simclr, byol"),
    ("misspelt method under method_options", lambda t: ["--set", "method_options.simclrr.temperature=0.1"],
     "unknown method 'simclrr' under method_options"),
    ("empty experiment name", lambda t: ["--experiment", ""], "--experiment must be a non-empty name"),
    ("over-long experiment name", lambda t: ["--experiment", "x" * 300], "--experiment must be at most 256"),
    ("evaluation batch size 0", lambda t: ["--set", "eval.batch_size=0"], "eval.batch_size must be in [1, 100000]"),
    ("kNN temperature 0", lambda t: ["--set", "eval.knn_temperature=0"], "eval.knn_temperature must be > 0"),
    ("negative momentum", lambda t: ["--set", "optim.momentum=-1"], "optim.momentum must be in [0, 1), got -1.0"),
]  # fmt: skip


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error:"), err
    return err[0]


def run_case(name: str, extra, message: str):
    if name.startswith("CUDA"):
        return pytest.param(
            extra, message, id=name, marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")
        )
    return pytest.param(extra, message, id=name)


@pytest.mark.parametrize("extra,message", [run_case(*c) for c in RUN_CASES])
def test_bad_run_input(tmp_path, capsys, extra, message):
    store = tmp_path / "store"
    args = ["run", *SMOKE, "--tracking-uri", f"sqlite:///{store / 'mlflow.db'}", *extra(tmp_path)]
    assert main(args) == 2
    assert message in one_error_line(capsys)
    assert not store.exists()


def test_unwritable_tracking_location(capsys):
    # sysfs refuses new files even to root, so this holds for every user.
    assert main(["run", *SMOKE, "--tracking-uri", "sqlite:////sys/kernel/fgssl-bench/mlflow.db"]) == 2
    assert "tracking directory /sys/kernel/fgssl-bench is not writable" in one_error_line(capsys)


def test_tracking_location_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["run", *SMOKE, "--tracking-uri", f"sqlite:///{blocker / 'mlflow.db'}"]) == 2
    assert f"tracking directory {blocker} cannot be created: {blocker} is a file" in one_error_line(capsys)


def test_checkpoint_of_another_configuration_is_refused(tmp_path, capsys):
    """A checkpoint file whose recorded config differs is never resumed from; the keys are named."""
    from bench.ledger import Ledger

    ledger = Ledger(tmp_path)
    ledger.save("abc", {"config": {"train": {"epochs": 3, "seed": 0}}})
    with pytest.raises(Exception, match=r"belongs to another configuration \(differs in train.epochs\)"):
        ledger.load("abc", {"train": {"epochs": 5, "seed": 0}})


OTHER_CASES = [
    ("tune: no trials", lambda t: ["tune", "--method", "simclr", "--trials", "0", *SMOKE[:2]],
     "--trials must be at least 1, got 0"),
    ("tune: method that cannot be tuned", lambda t: ["tune", "--method", "moco", "--trials", "2", *SMOKE[:2]],
     "cannot tune 'moco'; tunable methods: simclr, byol, barlow, fgssl"),
    ("report: store that does not exist", lambda t: ["report", "--tracking-uri", f"sqlite:///{t / 'mlflow.db'}",
     "--out", str(t / "report")], "no MLflow store at"),
    ("ui: port out of range", lambda t: ["ui", "--tracking-uri", touched_store(t), "--port", "70000"],
     "--port must be in 1-65535, got 70000"),
    ("ui: store that does not exist", lambda t: ["ui", "--tracking-uri", f"sqlite:///{t / 'none' / 'mlflow.db'}",
     "--port", "0"], "no MLflow store at"),
    ("data check: folder without the dataset", lambda t: ["data", "check", "isic2017", "--root", str(t)],
     "; to download it: bench data download isic2017 --root"),
    ("data download: dataset behind a login", lambda t: ["data", "download", "aptos2019", "--root", str(t)],
     "kaggle competitions download"),
]  # fmt: skip


@pytest.mark.parametrize("argv,message", [c[1:] for c in OTHER_CASES], ids=[c[0] for c in OTHER_CASES])
def test_bad_input_to_other_commands(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)  # the default store and tuning journal would land in the working directory
    assert main(argv(tmp_path)) == 2
    assert message in one_error_line(capsys)


def test_ui_port_in_use(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--tracking-uri", touched_store(tmp_path), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(capsys)
