"""Config resolution: presets as data, strict keys, typed values, and a hash that identifies results."""

import pytest
import torch
from torchvision import models

from bench.errors import BenchError
from bench.imagenet import MIRROR_ENV, named_weights
from bench.resolve import PRESETS, build_run_config, deep_merge, load_preset
from bench.sweep import expand
from bench.weights import file_sha256


def config(tree=None, method="fgssl", dataset="synthetic", batch_size=32, seed=0):
    return build_run_config(deep_merge(load_preset("smoke"), tree or {}), method, dataset, batch_size, seed)


@pytest.fixture
def imagenet_resnet50(tmp_path, monkeypatch):
    """torch's hub cache holding a ResNet-50 file under the name of torchvision's ImageNet weights (the
    paper preset's), and no way to download anything; returns the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens on the discard port
    path = named_weights("imagenet", "resnet50").path
    path.parent.mkdir(parents=True)
    torch.save(models.resnet50().state_dict(), path)
    return path


def test_presets_are_data_and_all_resolve(imagenet_resnet50):
    assert set(PRESETS) == {"smoke", "cpu", "paper"}
    for preset in PRESETS:
        tree = load_preset(preset)
        for method in ("simclr", "byol", "barlow", "fgssl", "random_init"):
            build_run_config(tree, method, "isic2017", 32, 0)
    paper = build_run_config(load_preset("paper"), "barlow", "isic2017", 32, 0)
    assert paper.model.weights == "imagenet" and paper.model.weights_sha256 == file_sha256(imagenet_resnet50)


def test_hash_ignores_paths_and_device_but_not_results_relevant_values():
    base = config()
    assert base.config_hash() == config({"data": {"root": "/elsewhere", "cache_dir": "/tmp/c"}}).config_hash()
    assert base.config_hash() == config({"device": "cpu"}).config_hash()
    assert base.config_hash() != config(seed=1).config_hash()
    assert base.config_hash() != config({"method_options": {"fgssl": {"lambd": 0.01}}}).config_hash()


def test_fgssl_grids_default_to_the_dataset_grids_from_the_paper():
    assert config(dataset="isic2017").method_options["grids"] == (16, 8, 4)
    assert config(dataset="synthetic").method_options["grids"] == (8, 4, 2)
    assert config({"method_options": {"fgssl": {"grids": [4, 2, 1]}}}).method_options["grids"] == (4, 2, 1)


def test_flat_params_name_every_value_the_same_way_for_every_method():
    params = config().flat_params()
    assert params["train.batch_size"] == "32" and params["method.grids"] == "8,4,2"
    assert params["method.schedule"] == "progressive" and params["optim.name"] == "sgd"
    simclr = config(method="simclr").flat_params()
    assert {k for k in params if not k.startswith("method.")} == {k for k in simclr if not k.startswith("method.")}


def test_per_method_optimizer_overrides():
    tree = {"method_optim": {"fgssl": {"lr": 0.2}}}
    assert config(tree).optim.lr == 0.2 and config(tree, method="simclr").optim.lr == 0.05


@pytest.mark.parametrize(
    "tree,message",
    [
        ({"trian": {}}, "unknown config section(s) trian"),
        ({"train": {"epochs": "many"}}, "train.epochs expects int"),
        ({"method_options": {"fgssl": {"schedule": "sometimes"}}}, "unknown fgssl schedule 'sometimes'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"data": {"image_size": 30}}, "jigsaw grid 8 does not divide the image size 30x30"),
        ({"method_options": {"random_init": {"x": 1}}}, None),
    ],
)
def test_bad_values_are_named(tree, message):
    if message is None:
        with pytest.raises(BenchError, match="takes no method options"):
            config(tree, method="random_init")
        return
    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(tree)


def test_sweep_expands_the_cross_product_and_all_means_the_ssl_methods():
    tree = {**load_preset("smoke"), "methods": ["all", "random_init"], "batch_sizes": [16, 32], "seeds": [0, 1]}
    runs = expand(tree)
    assert len(runs) == 7 * 2 * 2
    assert {r.method for r in runs} == {"simclr", "byol", "barlow", "fgssl", "simsiam", "rotation", "random_init"}
    assert len({r.config_hash() for r in runs}) == 28


def test_study_parts_expand_separately_and_shared_configurations_run_once():
    tree = {
        **load_preset("smoke"),
        "parts": [
            {"methods": ["simclr", "fgssl"], "batch_sizes": [16], "seeds": [0, 1]},
            {"methods": ["simclr"], "batch_sizes": [16, 32], "seeds": [0]},  # simclr b16 s0 is in both
            {"ablation": "hierarchy", "ablation_variants": ["full", "joint"], "batch_sizes": [16], "seeds": [0]},
        ],
    }
    runs = expand(tree)
    points = sorted((r.method, r.train.batch_size, r.train.seed, r.ablation or "") for r in runs)
    # the ablation's "full" variant is the fgssl b16 s0 run of the first part
    assert points == [
        ("fgssl", 16, 0, ""),
        ("fgssl", 16, 0, "joint"),
        ("fgssl", 16, 1, ""),
        ("simclr", 16, 0, ""),
        ("simclr", 16, 1, ""),
        ("simclr", 32, 0, ""),
    ]


def test_command_line_wins_over_study_parts(tmp_path):
    from bench.cli import build_parser, run_tree

    study = tmp_path / "study.yaml"
    study.write_text("parts:\n  - {methods: [simclr], seeds: [0, 1]}\n  - {methods: [byol], seeds: [2]}\n")
    argv = ["run", "--preset", "smoke", "--config", str(study), "--epochs", "1", "--seeds", "5"]
    args = build_parser().parse_args(argv)
    runs = expand(run_tree(args))
    assert sorted((r.method, r.train.seed, r.train.epochs) for r in runs) == [("byol", 5, 1), ("simclr", 5, 1)]


def test_command_line_learning_rate_reaches_methods_the_file_gives_their_own(tmp_path):
    from bench.cli import build_parser, run_tree

    study = tmp_path / "study.yaml"
    study.write_text(
        "method_optim: {byol: {lr: 0.3, weight_decay: 0.1}}\n"
        "parts:\n  - {methods: [simclr, byol]}\n  - {methods: [barlow], method_optim: {barlow: {lr: 0.2}}}\n"
    )

    def resolved(*flags):
        args = build_parser().parse_args(["run", "--preset", "smoke", "--config", str(study), *flags])
        return {r.method: (r.optim.lr, r.optim.weight_decay) for r in expand(run_tree(args))}

    smoke = load_preset("smoke")["optim"]
    default_wd = build_run_config(load_preset("smoke"), "simclr", "synthetic", 32, 0).optim.weight_decay
    assert resolved() == {"simclr": (smoke["lr"], default_wd), "byol": (0.3, 0.1), "barlow": (0.2, default_wd)}
    # --lr is the learning rate of every method; the other per-method values stay.
    assert resolved("--lr", "0.01") == {"simclr": (0.01, default_wd), "byol": (0.01, 0.1), "barlow": (0.01, default_wd)}
    # A per-method value on the command line is more specific than --lr.
    assert resolved("--lr", "0.01", "--set", "method_optim.byol.lr=0.5")["byol"] == (0.5, 0.1)


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"parts": []}, "'parts' must be a non-empty list"),
        ({"parts": [{"parts": [{}]}]}, "cannot hold 'parts'"),
        ({"ablation": "hierarchy", "ablation_variants": ["levels-9"]}, "unknown hierarchy variant(s) levels-9; valid"),
        ({"ablation_variants": ["joint"]}, "ablation_variants (--ablation-variants) needs an ablation"),
    ],
)
def test_bad_study_files_are_named(tree, message):
    with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand({**load_preset("smoke"), **tree})


def test_views_section_at_its_defaults_keeps_the_hash_of_runs_from_before_it():
    base = config()
    assert "views" not in base.identity() and "views.rotate" in base.flat_params()
    assert config({"views": {"crop_scale_min": None, "rotate": False}}).config_hash() == base.config_hash()
    rotated = config({"views": {"rotate": True}})
    assert rotated.identity()["views"]["rotate"] is True and rotated.config_hash() != base.config_hash()
    assert config({"views": {"color_jitter": 1.0}}).config_hash() != base.config_hash()  # FG-SSL gains a jitter


@pytest.mark.parametrize(
    "views,message",
    [
        ({"crop_scale_min": 1.5}, r"views.crop_scale_min must be in \(0, 1\], got 1.5"),
        ({"color_jitter": -1}, r"views.color_jitter must be in \[0, 5\], got -1.0"),
        ({"rotate": "sometimes"}, "views.rotate expects bool"),
        ({"blur": 2}, r"unknown key\(s\) views.blur"),
    ],
)
def test_bad_view_options_are_clear_errors(views, message):
    with pytest.raises(BenchError, match=message):
        config({"views": views})


def test_a_run_trains_on_the_views_its_config_asks_for():
    from bench.data import load_for_config
    from bench.run import build_ssl_trainer
    from datasets.augment import RandomRotation
    from methods.backbones import Backbone

    run = config({"views": {"rotate": True, "crop_scale_min": 0.5}}, method="barlow")
    trainer = build_ssl_trainer(run, load_for_config(run.data), Backbone("resnet18"), torch.device("cpu"), False, None)
    for view in trainer.views:
        assert any(isinstance(op, RandomRotation) for op in view.ops) and view.ops[0].scale == (0.5, 1.0)


def test_method_and_dataset_names_are_matched_without_regard_to_case():
    runs = expand({**load_preset("smoke"), "methods": ["FGSSL", "SimCLR+FGSSL"], "datasets": ["Synthetic"]})
    assert sorted(r.method for r in runs) == ["fgssl", "simclr+fgssl"]
    assert {r.data.name for r in runs} == {"synthetic"}
