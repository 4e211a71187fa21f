"""SimSiam, Rotation and the composites X+fgssl: losses by hand, exact rotations, learning, step order."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_methods import batch

from methods import METHOD_SETS, METHODS, build_method, get_method
from methods.backbones import Backbone
from methods.barlow import BarlowTwins
from methods.base import SSLBatch
from methods.byol import ema_tau
from methods.compose import compose
from methods.fgssl import FGSSL
from methods.losses import simsiam
from methods.rotation import Rotation, rotate, rotate_by
from methods.simclr import SimCLR

FGSSL_SMALL = {"grids": [4, 2, 1], "block_mid_channels": 16, "block_out_channels": 32, "embed_dim": 16}
SMALL = {
    "simsiam": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 8},
    "rotation": {},
    "barlow+fgssl": {"barlow": {"proj_dims": [32, 32]}, "fgssl": FGSSL_SMALL},
    "byol+fgssl": {"byol": {"proj_hidden_dim": 32, "proj_dim": 16, "tau_base": 0.5}, "fgssl": FGSSL_SMALL},
}
COMPOSITE_STEPS = ["barlow.loss", "fgssl.level1", "fgssl.level2", "fgssl.level3", "fgssl.concat"]


def make(name, seed=0):
    torch.manual_seed(seed)
    return build_method(name, Backbone("resnet18"), SMALL[name]).train()


# --- the SimSiam loss -------------------------------------------------------------------------------


def test_simsiam_loss_hand_computed():
    p1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)  # cosines with p1: 1 and 1/sqrt(2)
    p2 = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    z1 = torch.tensor([[4.0, -3.0], [-2.0, 0.0]], dtype=torch.float64)  # cosines with p2: 0 and -1
    d12 = -(1 + 1 / math.sqrt(2)) / 2
    d21 = -(0 + -1) / 2
    assert simsiam(p1, p2, z1, z2).item() == pytest.approx(0.5 * (d12 + d21), rel=1e-12)


def test_simsiam_loss_is_symmetric_and_bounded():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(7, 5, generator=g) for _ in range(4))
    assert simsiam(p1, p2, z1, z2).item() == pytest.approx(simsiam(p2, p1, z2, z1).item(), rel=1e-6)
    assert -1 <= simsiam(p1, p2, z1, z2).item() <= 1
    assert simsiam(z2, z1, z1, z2).item() == pytest.approx(-1.0, abs=1e-6)  # each prediction hits its target
    assert simsiam(-z2, -z1, z1, z2).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        simsiam(p1, p2, z1, z2[:, :4])


def test_simsiam_loss_stops_the_gradient_at_the_projections():
    g = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(4, 3, generator=g).requires_grad_() for _ in range(4))
    simsiam(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def negative_cosine_by_hand(p, z):
    return -((p * z).sum(dim=1) / (p.pow(2).sum(dim=1).sqrt() * z.pow(2).sum(dim=1).sqrt())).mean()


def simsiam_grads(method, views, stop_gradient):
    """Gradients of SimSiam's objective written out here, with or without the stop-gradient."""
    method.zero_grad(set_to_none=True)
    z1, z2 = (method.projector(method.backbone(v)) for v in views)
    t1, t2 = (z.detach() if stop_gradient else z for z in (z1, z2))
    p1, p2 = method.predictor(z1), method.predictor(z2)
    (0.5 * (negative_cosine_by_hand(p1, t2) + negative_cosine_by_hand(p2, t1))).backward()
    return {n: p.grad.clone() for n, p in method.named_parameters()}


def test_simsiam_method_takes_no_gradient_through_the_target_branch():
    method = make("simsiam")
    b = batch()
    views = (b.view1, b.view2)
    (step,) = method.training_steps(SSLBatch(*views))
    method.zero_grad(set_to_none=True)
    step.loss.backward()
    got = {n: p.grad.clone() for n, p in method.named_parameters()}
    stopped, through = simsiam_grads(method, views, True), simsiam_grads(method, views, False)
    for name, grad in got.items():
        torch.testing.assert_close(grad, stopped[name], msg=lambda m, n=name: f"{n}: {m}")
    assert not torch.allclose(got["backbone.stem.0.weight"], through["backbone.stem.0.weight"])


def test_simsiam_heads_and_options():
    method = make("simsiam")
    assert isinstance(method.projector[-1], torch.nn.BatchNorm1d) and not method.projector[-1].affine
    assert sum(isinstance(m, torch.nn.Linear) for m in method.projector) == 3
    assert [m.out_features for m in method.predictor if isinstance(m, torch.nn.Linear)] == [8, 16]
    with pytest.raises(ValueError, match="pred_hidden_dim must be in \\[1, 65536\\]"):
        build_method("simsiam", Backbone(), {"pred_hidden_dim": 0})


# --- rotations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_rotate_is_rot90_of_each_image_by_its_label(channels_last):
    images = torch.randn(12, 3, 8, 8)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    rotated, labels = rotate(images, torch.Generator().manual_seed(0))
    assert labels.dtype == torch.int64 and labels.shape == (12,) and set(labels.tolist()) <= {0, 1, 2, 3}
    for image, label, out in zip(images, labels.tolist(), rotated, strict=True):
        assert torch.equal(out, torch.rot90(image, label, dims=(-2, -1)))
    assert rotated.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_rotate_draws_every_label_from_the_generator_and_inverts():
    images = torch.randn(400, 1, 4, 4)
    rotated, labels = rotate(images, torch.Generator().manual_seed(5))
    assert set(labels.tolist()) == {0, 1, 2, 3}
    again, same = rotate(images, torch.Generator().manual_seed(5))
    assert torch.equal(same, labels) and torch.equal(again, rotated)
    assert not torch.equal(rotate(images, torch.Generator().manual_seed(6))[1], labels)
    assert torch.equal(rotate_by(rotated, (4 - labels) % 4), images)


def test_rotate_refuses_non_square_images():
    with pytest.raises(ValueError, match="square"):
        rotate(torch.randn(2, 3, 8, 6))


def test_rotation_loss_is_cross_entropy_of_the_rotated_views_and_views_keep_up_up():
    method = make("rotation")
    b = batch()
    (step,) = method.training_steps(b)
    g = torch.Generator().manual_seed(0)  # the batch's generator, fresh: the same draws, view1 then view2
    (r1, l1), (r2, l2) = rotate(b.view1, g), rotate(b.view2, g)
    logits = method.classifier(method.backbone(torch.cat([r1, r2])))
    torch.testing.assert_close(step.loss, F.cross_entropy(logits, torch.cat([l1, l2])))
    assert step.embedding.shape == (6, 512) and not step.embedding.requires_grad
    assert all(op != "geometry" for view in Rotation.view_recipe for op, _ in view)


def upright_images(g, n, size=16):
    """Noise with a bright bar along the top-left of each image: which way is up is learnable."""
    x = 0.5 * torch.randn(n, 3, size, size, generator=g)
    x[:, :, : size // 4, : size // 2] += 1.0
    return x


def test_rotation_learns_to_tell_which_way_is_up():
    torch.manual_seed(0)
    method = build_method("rotation", Backbone("resnet18")).train()
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-4)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        (step,) = method.training_steps(SSLBatch(upright_images(g, 8), upright_images(g, 8), g))
        optimizer.zero_grad(set_to_none=True)
        step.loss.backward()
        optimizer.step()
        losses.append(step.loss.item())
    assert sum(losses[-10:]) / 10 < 0.35 * math.log(4), losses
    method.eval()
    rotated, labels = rotate(upright_images(torch.Generator().manual_seed(9), 256), torch.Generator().manual_seed(3))
    with torch.no_grad():
        accuracy = (method.classifier(method.backbone(rotated)).argmax(dim=1) == labels).float().mean().item()
    assert accuracy > 0.9


# --- composites -----------------------------------------------------------------------------------------


def test_composite_class_describes_both_parts():
    cls = get_method("barlow+fgssl")
    assert cls.parts == {"barlow": BarlowTwins, "fgssl": FGSSL}
    assert (cls.display_name, cls.report_order, cls.report_baseline) == ("Barlow Twins + FG-SSL", 35, False)
    assert cls.view_recipe == BarlowTwins.view_recipe and not cls.steps_use_every_parameter
    method = make("barlow+fgssl")
    assert method.step_names == tuple(COMPOSITE_STEPS)
    assert [s.name for s in method.training_steps(batch())] == COMPOSITE_STEPS
    assert method.pretrained_hierarchy() is method.components["fgssl"].hierarchy


def test_composite_parts_share_one_backbone_listed_once_at_the_first_parts_rate():
    method = make("barlow+fgssl")
    assert method.components["barlow"].backbone is method.backbone is method.components["fgssl"].backbone
    groups = method.param_groups()
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in method.parameters() if p.requires_grad}
    scale = {id(p): g.lr_scale for g in groups for p in g.params}
    assert {scale[id(p)] for p in method.backbone.parameters()} == {1.0}
    assert {scale[id(p)] for p in method.components["fgssl"].hierarchy.parameters()} == {1.0}


def test_each_composite_step_sees_the_update_of_the_step_before():
    method = make("barlow+fgssl")
    untouched = copy.deepcopy(method)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05)
    steps = method.training_steps(batch(3))
    for k, name in enumerate(COMPOSITE_STEPS):
        weights_now = copy.deepcopy(method)  # the weights after step k-1's update
        step = next(steps)
        assert step.name == name
        # The same batch again (same jigsaw draws), every step before k computed but not applied.
        expected = list(weights_now.training_steps(batch(3)))[k].loss
        torch.testing.assert_close(step.loss, expected, msg=lambda m, n=name: f"{n}: {m}")
        if k:
            stale = list(copy.deepcopy(untouched).training_steps(batch(3)))[k].loss
            assert not torch.allclose(step.loss, stale), name
        optimizer.zero_grad(set_to_none=True)
        step.loss.backward()
        optimizer.step()
    assert next(steps, None) is None


def test_byol_target_follows_only_byols_step():
    method = make("byol+fgssl")
    byol = method.components["byol"]
    optimizer = torch.optim.SGD([p for g in method.param_groups() for p in g.params], lr=0.1)
    target_start = [p.clone() for p in byol.target_backbone.parameters()]
    for step in method.training_steps(batch()):
        optimizer.zero_grad(set_to_none=True)
        step.loss.backward()
        optimizer.step()
        method.after_optimizer_step(progress=0.0)
        if step.name == "byol.loss":
            online_then = [p.detach().clone() for p in method.backbone.parameters()]
            target_then = [p.clone() for p in byol.target_backbone.parameters()]
        else:
            assert all(torch.equal(a, b) for a, b in zip(byol.target_backbone.parameters(), target_then, strict=True))
    tau = ema_tau(0.5, 0.0)
    for target, start, online in zip(byol.target_backbone.parameters(), target_start, online_then, strict=True):
        torch.testing.assert_close(target, tau * start + (1 - tau) * online)
    assert not all(torch.equal(a, b) for a, b in zip(method.backbone.parameters(), online_then, strict=True))


def test_composite_state_dict_round_trip_keeps_the_backbone_shared():
    trained, fresh = make("barlow+fgssl", seed=0), make("barlow+fgssl", seed=1)
    state = trained.state_dict()
    paths = ("", "components.barlow.", "components.fgssl.")
    assert len({state[f"{path}backbone.stem.0.weight"].data_ptr() for path in paths}) == 1
    fresh.load_state_dict(state)
    for (name, a), b in zip(trained.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert fresh.components["fgssl"].backbone is fresh.backbone
    losses = [[s.loss for s in m.training_steps(batch())] for m in (trained, fresh)]
    assert all(torch.equal(a, b) for a, b in zip(*losses, strict=True))


def test_composite_options_resolve_per_part_and_refuse_unknown_names():
    cls = get_method("barlow+fgssl")
    facts = {"paper_grids": (4, 2, 1), "image_size": 32}
    resolved = cls.resolve_options({"barlow": {"lambd": 0.01}}, facts)
    assert set(resolved) == {"barlow", "fgssl"}
    assert resolved["barlow"]["lambd"] == 0.01 and resolved["fgssl"]["grids"] == (4, 2, 1)
    assert cls.finetune_defaults(resolved).mode == "progressive"
    assert cls.finetune_defaults(resolved).grids == (4, 2, 1)
    with pytest.raises(ValueError, match="unknown part.*simclr.*valid: barlow, fgssl"):
        cls.resolve_options({"simclr": {}}, facts)
    with pytest.raises(ValueError, match="gridz"):
        cls.resolve_options({"fgssl": {"gridz": [2, 2, 2]}}, facts)
    with pytest.raises(ValueError, match="does not divide"):
        cls.resolve_options({"fgssl": {"grids": [3, 2, 1]}}, facts)
    with pytest.raises(ValueError, match="temperatur"):
        build_method("simclr+fgssl", Backbone(), {"simclr": {"temperatur": 0.1}})


# --- the registry ---------------------------------------------------------------------------------------


def test_method_sets_and_composite_names():
    assert METHOD_SETS["all"] == ("simclr", "byol", "barlow", "fgssl", "simsiam", "rotation")
    assert METHOD_SETS["paper"] == ("rotation", "simsiam", "barlow", "rotation+fgssl", "simsiam+fgssl", "barlow+fgssl")
    assert all(name in METHODS for names in METHOD_SETS.values() for name in names)
    assert get_method("simclr+fgssl") is compose(SimCLR, FGSSL) is METHODS["simclr+fgssl"]
    assert get_method("simsiam+fgssl").parts["simsiam"].name == "simsiam"


def test_fgssl_cannot_be_added_to_a_multi_step_method():
    with pytest.raises(ValueError, match="fgssl\\+fgssl.*one-step method"):
        get_method("fgssl+fgssl")
    with pytest.raises(ValueError, match="one step per batch, fgssl takes 4"):
        compose(FGSSL, BarlowTwins)
    with pytest.raises(ValueError, match="unknown method 'moco\\+fgssl'"):
        get_method("moco+fgssl")
