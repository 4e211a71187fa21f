"""AugMix and CutMix in the fine-tune: seeded by the run's generator, drawn per image in one batched call,
AugMix equal to its definition replayed image by image with torchvision's ops, CutMix's label weight equal
to the pixels it pasted, and a fine-tune with them that still learns."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from bench.cli import main
from bench.finetune import MixedTargets, cross_entropy, finetune
from bench.resolve import build_run_config, load_preset
from datasets import DataRequest, load_dataset
from datasets.augment import build_finetune_transform
from datasets.augmix import ALL_OPS, PARTIAL_OPS, AugMix, AugMixPlan, apply_ops, magnitude
from datasets.cutmix import CutMix
from methods.backbones import Backbone

BILINEAR = TF.InterpolationMode.BILINEAR


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def images(n: int = 8, height: int = 20, width: int = 24, seed: int = 0) -> torch.Tensor:
    """Float images on the 8-bit grid, as the decoded cache gives them."""
    return torch.randint(0, 256, (n, 3, height, width), generator=gen(seed)).float() / 255


def torchvision_op(image: torch.Tensor, op: str, value: float) -> torch.Tensor:
    """One op as torchvision's AugMix applies it (``_apply_image_or_video_transform``), on one image."""
    if op in ("shear_x", "shear_y"):
        angle = math.degrees(math.atan(value))
        shear = [angle, 0.0] if op == "shear_x" else [0.0, angle]
        return TF.affine(
            image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=BILINEAR, center=[0, 0]
        )
    if op in ("translate_x", "translate_y"):
        move = [int(value), 0] if op == "translate_x" else [0, int(value)]
        return TF.affine(image, angle=0.0, translate=move, scale=1.0, shear=[0.0, 0.0], interpolation=BILINEAR)
    calls = {
        "rotate": lambda: TF.rotate(image, value, interpolation=BILINEAR),
        "posterize": lambda: TF.posterize(image, int(value)),
        "solarize": lambda: TF.solarize(image, value),
        "autocontrast": lambda: TF.autocontrast(image),
        "equalize": lambda: TF.equalize(image),
        "brightness": lambda: TF.adjust_brightness(image, value),
        "color": lambda: TF.adjust_saturation(image, value),
        "contrast": lambda: TF.adjust_contrast(image, value),
        "sharpness": lambda: TF.adjust_sharpness(image, value),
    }
    return calls[op]()


def replay(augmix: AugMix, x: torch.Tensor, plan: AugMixPlan) -> torch.Tensor:
    """The AugMix definition, image by image: each chain applies its first ``depth`` ops in turn, and the
    result is ``original * x + sum_k weight_k * chain_k`` (clamped to [0, 1])."""
    height, width = x.shape[-2:]
    out = []
    for i in range(x.shape[0]):
        mixed = plan.original[i] * x[i]
        for k in range(augmix.width):
            chain = x[i]
            for step in range(int(plan.depths[k, i])):
                op = augmix.ops[int(plan.ops[k, step, i])]
                level, sign = plan.levels[k, step, i : i + 1], plan.signs[k, step, i : i + 1]
                chain = torchvision_op(chain, op, float(magnitude(op, level, sign, height, width)))
            mixed = mixed + plan.weights[i, k] * chain
        out.append(mixed.clamp(0, 1))
    return torch.stack(out)


def test_augmix_is_its_definition_replayed_image_by_image_with_torchvision_ops():
    augmix = AugMix()
    x = images(12)
    plan = augmix.plan(x, gen(3))
    torch.testing.assert_close(augmix.apply(x, plan), replay(augmix, x, plan), atol=2e-5, rtol=0)
    # Every op at every magnitude bin of the severity and both signs, one image per case, chains of one step.
    cases = [(k, level, sign) for k in range(len(ALL_OPS)) for level in range(3) for sign in (1.0, -1.0)]
    n = len(cases)
    ops, levels, signs = (torch.tensor([case[j] for case in cases]).view(1, 1, n) for j in range(3))
    plan = AugMixPlan(ops, levels, signs.float(), torch.ones(1, n, dtype=torch.long), torch.zeros(n), torch.ones(n, 1))
    x = images(n)
    single = AugMix(width=1, depth=1)
    torch.testing.assert_close(single.apply(x, plan), replay(single, x, plan), atol=2e-5, rtol=0)


def test_each_op_on_the_images_that_drew_it_equals_every_op_on_the_whole_batch():
    """The CPU's way (gathered) and the GPU's (every op on the batch, no host synchronisation) agree."""
    x = images(32)
    ops = torch.randint(-1, len(ALL_OPS), (32,), generator=gen(1))  # -1: a chain that has ended
    levels = torch.randint(0, 3, (32,), generator=gen(2))
    signs = torch.where(torch.rand(32, generator=gen(3)) < 0.5, -1.0, 1.0)
    gathered = apply_ops(x, ops, levels, signs, gather=True)
    torch.testing.assert_close(gathered, apply_ops(x, ops, levels, signs, gather=False), atol=1e-6, rtol=0)
    assert torch.equal(gathered[ops == -1], x[ops == -1]) and (ops == -1).any()


def test_augmix_is_seeded_by_the_callers_generator():
    augmix, x = AugMix(), images()
    torch.manual_seed(0)
    first = augmix(x, gen(1))
    torch.manual_seed(99)  # torch's global generator plays no part
    assert torch.equal(first, augmix(x, gen(1)))
    assert not torch.equal(first, augmix(x, gen(2)))


def test_augmix_draws_every_image_its_own_chains_and_weights():
    augmix = AugMix()
    x = images(1).expand(16, -1, -1, -1).contiguous()  # one image, sixteen times
    plan = augmix.plan(x, gen(0))
    out = augmix.apply(x, plan)
    assert len({tuple(plan.ops[:, :, i].flatten().tolist()) for i in range(16)}) > 1
    assert len({round(float(w), 6) for w in plan.original}) == 16
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 16))
    torch.testing.assert_close(plan.original + plan.weights.sum(dim=1), torch.ones(16))
    assert (plan.weights >= 0).all() and set(plan.depths.unique().tolist()) <= {1, 2, 3}
    assert int(plan.ops.max()) < len(ALL_OPS) and int(AugMix(all_ops=False).plan(x, gen(0)).ops.max()) < len(
        PARTIAL_OPS
    )
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("bad", [{"severity": 0}, {"severity": 11}, {"width": 0}, {"depth": 0}, {"alpha": 0.0}])
def test_augmix_refuses_bad_settings(bad):
    with pytest.raises(ValueError, match="AugMix"):
        AugMix(**bad)


def coded_images(n: int, size: int = 16) -> torch.Tensor:
    """Every pixel of every image holds a value of its own, so a pasted pixel shows where it came from."""
    return torch.arange(n * size * size, dtype=torch.float32).view(n, 1, size, size).expand(n, 3, size, size)


def test_cutmix_weight_is_one_minus_the_pasted_share_of_each_image():
    x = coded_images(64)
    mixed = CutMix(alpha=1.0)(x, gen(5))
    total = 16 * 16
    pasted = (mixed.images != x).all(dim=1)  # [B, H, W]
    moved = mixed.partner != torch.arange(64)
    assert moved.sum() > 50
    for i in torch.nonzero(moved).flatten().tolist():
        count = int(pasted[i].sum())
        assert float(mixed.own[i]) == pytest.approx(1 - count / total, abs=1e-7)
        rows, cols = torch.nonzero(pasted[i], as_tuple=True)
        if count:  # one rectangle, holding the partner's pixels from the same place
            assert count == (int(rows.max()) - int(rows.min()) + 1) * (int(cols.max()) - int(cols.min()) + 1)
            assert torch.equal(mixed.images[i][:, pasted[i]], x[int(mixed.partner[i])][:, pasted[i]])
    x1, y1, x2, y2 = mixed.boxes.unbind(dim=1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 16).all() and (y2 <= 16).all()
    clipped = ((x1 == 0) | (y1 == 0) | (x2 == 16) | (y2 == 16)) & (x2 > x1)
    assert clipped.any()  # boxes were clipped at the border, and the weights above count what was kept
    assert 0.2 < float(1 - mixed.own.mean()) < 0.6  # Beta(1, 1) areas, less what the borders cut off


def test_cutmix_is_seeded_batched_and_mixes_each_image_with_probability_p():
    x = coded_images(32)
    first = CutMix()(x, gen(1))
    assert torch.equal(first.images, CutMix()(x, gen(1)).images)
    assert not torch.equal(first.boxes, CutMix()(x, gen(2)).boxes)
    assert len({tuple(box) for box in first.boxes.tolist()}) > 16  # a box per image, not one per batch
    sometimes = CutMix(alpha=1.0, p=0.3)(coded_images(256), gen(0))
    unmixed = sometimes.own == 1
    assert 0.5 < float(unmixed.float().mean()) < 0.9
    assert torch.equal(sometimes.images[unmixed], coded_images(256)[unmixed])
    with pytest.raises(ValueError, match="CutMix"):
        CutMix(alpha=1.0, p=0.0)


def test_mixed_cross_entropy_weights_each_images_two_labels_by_its_pixel_shares():
    logits = torch.randn(4, 3, generator=gen(0))
    own, pasted = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    weight = torch.tensor([1.0, 0.25, 0.5, 0.0])
    expected = (
        sum(
            w * torch.nn.functional.cross_entropy(logits[i : i + 1], own[i : i + 1])
            + (1 - w) * torch.nn.functional.cross_entropy(logits[i : i + 1], pasted[i : i + 1])
            for i, w in enumerate(weight)
        )
        / 4
    )
    torch.testing.assert_close(cross_entropy(logits, MixedTargets(own, pasted, weight)), expected)
    same = MixedTargets(own, pasted, torch.ones(4))
    torch.testing.assert_close(cross_entropy(logits, same), torch.nn.functional.cross_entropy(logits, own))


def test_the_finetune_transform_adds_augmix_only_when_asked():
    plain, mixed = build_finetune_transform(32), build_finetune_transform(32, augmix=True)
    assert mixed.ops[: len(plain.ops)] == plain.ops and mixed.ops[-1] == AugMix()
    batch = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen(0))
    assert torch.equal(mixed(batch, gen(7)), mixed(batch, gen(7)))


def finetune_eval(**values):
    tree = load_preset("smoke")
    tree["eval"] = {**tree["eval"], "protocols": ["knn", "finetune"], **values}
    return build_run_config(tree, "random_init", "synthetic", 32, 0)


def test_augmentation_keys_off_leave_the_config_hash_and_params_as_they_were():
    before = finetune_eval()
    explicit = finetune_eval(finetune_augmix=False, finetune_cutmix_alpha=0.0, finetune_cutmix_prob=1.0)
    assert explicit.config_hash() == before.config_hash()
    assert not any("augmix" in key or "cutmix" in key for key in before.flat_params())
    assert finetune_eval(finetune_cutmix_prob=0.5).config_hash() == before.config_hash()  # no CutMix: no effect
    on = finetune_eval(finetune_augmix=True, finetune_cutmix_alpha=1.0)
    assert on.config_hash() != before.config_hash()
    params = on.flat_params()
    assert params["eval.finetune_augmix"] == "True" and params["eval.finetune_cutmix_alpha"] == "1.0"
    paper = load_preset("paper")["eval"]  # the paper preset's fine-tune
    assert paper["finetune_augmix"] is True and paper["finetune_cutmix_alpha"] == 1.0


@pytest.mark.parametrize(
    "value,message",
    [
        ("eval.finetune_cutmix_alpha=-1", "eval.finetune_cutmix_alpha must be in [0, 100]"),
        ("eval.finetune_cutmix_alpha=.inf", "eval.finetune_cutmix_alpha must be a finite number"),
        ("eval.finetune_cutmix_prob=0", "eval.finetune_cutmix_prob must be in (0, 1]"),
        ("eval.finetune_cutmix_prob=1.5", "eval.finetune_cutmix_prob must be in (0, 1]"),
        ("eval.finetune_augmix=maybe", "eval.finetune_augmix expects bool"),
    ],
)
def test_bad_augmentation_values_are_one_line_exit_2(tmp_path, capsys, value, message):
    target = tmp_path / "store"
    args = ["run", "--preset", "smoke", "--methods", "random_init", "--eval", "finetune", "--set", value]
    assert main([*args, "--tracking-uri", f"sqlite:///{target / 'm.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("bench: error:") and "\n" not in err
    assert not target.exists()


def test_progressive_finetune_with_cutmix_and_augmix_runs_and_repeats():
    data = load_dataset("synthetic", DataRequest(image_size=32, synthetic_sizes=(64, 32, 32)))
    evaluation = finetune_eval(
        finetune_mode="progressive", finetune_epochs=1, finetune_augmix=True, finetune_cutmix_alpha=1.0
    ).eval
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        run = _finetune_on_cpu(data, evaluation)
        results.append(run.metrics)
    assert results[0] == results[1]


@pytest.mark.slow
def test_finetune_with_cutmix_learns_well_above_chance():
    """Chance and the majority class are 0.25 (four balanced classes); the plain fine-tune reached 0.65 here."""
    data = load_dataset("synthetic", DataRequest(image_size=64, synthetic_sizes=(512, 128, 128)))
    tree = load_preset("smoke")
    tree["data"] = {**tree["data"], "image_size": 64}
    tree["eval"] = {**tree["eval"], "protocols": ["finetune"], "finetune_mode": "plain", "finetune_epochs": 6}
    tree["eval"] |= {"finetune_batch_size": 64, "finetune_lr": 1e-3, "finetune_cutmix_alpha": 1.0}
    evaluation = build_run_config(tree, "random_init", "synthetic", 32, 0).eval
    torch.manual_seed(0)
    result = _finetune_on_cpu(data, evaluation)
    assert result.metrics["val.accuracy"] > 0.45 and result.metrics["test.accuracy"] > 0.4, result.metrics


def _finetune_on_cpu(data, evaluation):
    return finetune(
        Backbone(),
        data,
        evaluation,
        0,
        torch.device("cpu"),
        class_names=data.class_names,
        ordinal=False,
        progress=False,
    )
