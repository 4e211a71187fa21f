"""The method interface: registry, step structure, which weights each step moves, BYOL's target."""

import copy

import pytest
import torch

from methods import METHODS, build_method, get_method
from methods.backbones import Backbone
from methods.base import SSLBatch
from methods.byol import ema_tau

SMALL = {
    "simclr": {"proj_hidden_dim": 32, "proj_dim": 16},
    "byol": {"proj_hidden_dim": 32, "proj_dim": 16},
    "barlow": {"proj_dims": [32, 32]},
    "fgssl": {"grids": [4, 2, 1], "block_mid_channels": 16, "block_out_channels": 32, "embed_dim": 16},
    "simsiam": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 8},
    "rotation": {},
}
SMALL.update({name: {part: SMALL[part] for part in name.split("+")} for name in METHODS if "+" in name})


def make(name, **options):
    torch.manual_seed(0)
    return build_method(name, Backbone("resnet18"), {**SMALL[name], **options})


def batch(seed=0, size=16, n=6):
    g = torch.Generator().manual_seed(seed)
    return SSLBatch(
        torch.randn(n, 3, size, size, generator=g),
        torch.randn(n, 3, size, size, generator=g),
        torch.Generator().manual_seed(seed),
    )


def test_registry_names_and_clear_error():
    singles = {"simclr", "byol", "barlow", "fgssl", "simsiam", "rotation"}
    composites = {f"{name}+fgssl" for name in ("simclr", "byol", "barlow", "simsiam", "rotation")}
    assert set(METHODS) == singles | composites
    with pytest.raises(ValueError, match="valid names: simclr, byol, barlow, fgssl, simsiam, rotation"):
        get_method("moco")


def test_unknown_option_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match="temperatur.*valid: temperature"):
        build_method("simclr", Backbone(), {"temperatur": 0.1})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_yields_finite_losses_with_gradients(name):
    method = make(name).train()
    steps = list(method.training_steps(batch()))
    assert [s.name for s in steps] == list(method.step_names)
    for step in steps:
        assert step.loss.ndim == 0 and torch.isfinite(step.loss)
    steps[-1].loss.backward()
    assert method.backbone.layer4[-1].conv2.weight.grad is not None


@pytest.mark.parametrize(
    "options,expected",
    [
        ({}, ["level1", "level2", "level3", "concat"]),
        ({"levels": [1]}, ["level1", "concat"]),
        ({"levels": [1, 2], "concat": False}, ["level1", "level2"]),
        ({"schedule": "joint"}, ["joint"]),
    ],
)
def test_fgssl_step_structure(options, expected):
    method = make("fgssl", **options).train()
    assert [s.name for s in method.training_steps(batch())] == expected


def changed_parameters(method, step_index):
    """Names of parameters a plain SGD step on the step_index-th loss changes (steps before it applied too)."""
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    before = None
    for i, step in enumerate(method.training_steps(batch())):
        if i == step_index:
            before = {n: p.detach().clone() for n, p in method.named_parameters()}
        optimizer.zero_grad(set_to_none=True)
        step.loss.backward()
        optimizer.step()
        if i == step_index:
            break
    return {n for n, p in method.named_parameters() if not torch.equal(before[n], p)}


def test_each_fgssl_step_moves_only_what_its_loss_depends_on():
    level1 = changed_parameters(make("fgssl").train(), 0)
    h = "hierarchy."
    assert any(n.startswith("backbone.layer2") for n in level1) and any(n.startswith(h + "blocks.0") for n in level1)
    untouched = ("blocks.1", "blocks.2", "embeddings.1", "embeddings.2", "concat")
    assert not any(n.startswith(("backbone.layer3", "backbone.layer4", *(h + u for u in untouched))) for n in level1)
    level3 = changed_parameters(make("fgssl").train(), 2)
    assert any(n.startswith("backbone.layer4") for n in level3) and any(n.startswith(h + "blocks.2") for n in level3)
    earlier = tuple(h + u for u in ("blocks.0", "blocks.1", "embeddings.0", "concat"))
    assert not any(n.startswith(earlier) for n in level3)
    concat = changed_parameters(make("fgssl").train(), 3)
    assert {".".join(n.split(".")[:2]) for n in concat} >= {"backbone.layer4", h + "blocks", h + "concat_embedding"}
    assert not any(n.startswith(h + "embeddings.") for n in concat)


@pytest.mark.parametrize("level_index", [0, 1, 2])
def test_fgssl_lean_and_full_forward_give_the_same_gradients(level_index):
    grads = []
    for forward in ("lean", "full"):
        method = make("fgssl", forward=forward).train()
        step = list(method.training_steps(batch()))[level_index]
        step.loss.backward()
        grads.append({n: p.grad for n, p in method.named_parameters() if p.grad is not None})
    assert grads[0].keys() <= grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-6)


def test_fgssl_authors_code_embeds_every_level_from_the_first_block():
    method = make("fgssl", embed_source="authors_code").train()
    step = list(method.training_steps(batch()))[2]
    step.loss.backward()
    blocks = method.hierarchy.blocks
    assert blocks[0].body[0].weight.grad is not None and blocks[2].body[0].weight.grad is None


def test_fgssl_backbone_learns_ten_times_slower():
    assert [g.lr_scale for g in make("fgssl").param_groups()] == [0.1, 1.0]
    method = make("fgssl")
    backbone, heads = method.param_groups()
    assert {id(p) for p in backbone.params} == {id(p) for p in method.backbone.parameters()}
    assert len(backbone.params) + len(heads.params) == len(list(method.parameters()))


def test_byol_target_gets_no_gradient_and_follows_by_ema():
    method = make("byol").train()
    step = next(method.training_steps(batch()))
    step.loss.backward()
    assert all(p.grad is None for p in method.target_backbone.parameters())
    assert all(p.grad is None for p in method.target_projector.parameters())
    target_ids = {id(p) for p in [*method.target_backbone.parameters(), *method.target_projector.parameters()]}
    assert not target_ids & {id(p) for g in method.param_groups() for p in g.params}
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    target_before = copy.deepcopy(method.target_backbone)
    method.after_optimizer_step(progress=0.0)
    tau = ema_tau(0.996, 0.0)
    for t, t0, o in zip(
        method.target_backbone.parameters(), target_before.parameters(), method.backbone.parameters(), strict=True
    ):
        torch.testing.assert_close(t, tau * t0 + (1 - tau) * o)


def test_ema_tau_schedule_endpoints():
    assert ema_tau(0.996, 0.0) == pytest.approx(0.996)
    assert ema_tau(0.996, 0.5) == pytest.approx(0.998)
    assert ema_tau(0.996, 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_embed_is_the_frozen_pooled_backbone(name):
    method = make(name).eval()
    x = torch.randn(3, 3, 32, 32)
    out = method.embed(x)
    assert out.shape == (3, 512) and not out.requires_grad
    torch.testing.assert_close(out, method.backbone(x).detach())


def test_small_stem_keeps_spatial_extent():
    maps = Backbone("resnet18", stem="small").stages(torch.randn(2, 3, 32, 32))
    assert [m.shape[-1] for m in maps] == [16, 8, 4]
    with pytest.raises(ValueError, match="valid names"):
        Backbone("vgg")
