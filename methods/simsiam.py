"""SimSiam (Chen and He 2021): a predictor maps one view's projection onto the other's, whose gradient
is stopped; no negatives and no momentum encoder (one of the paper's own baselines, PAPER.md)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from methods import distributed
from methods.backbones import Backbone
from methods.base import SSLBatch, SSLMethod, StepLoss
from methods.heads import check_widths, mlp
from methods.losses import simsiam
from methods.simclr import VIEWS


@dataclass(frozen=True)
class SimSiamConfig:
    """The paper's ImageNet heads: a 3-layer projector to 2048-d with BN on its output, and a 2-layer
    predictor through a 512-d bottleneck (section 3, "Projection MLP" and "Prediction MLP")."""

    proj_hidden_dim: int = 2048
    proj_dim: int = 2048
    pred_hidden_dim: int = 512

    def __post_init__(self) -> None:
        check_widths(
            "simsiam",
            proj_hidden_dim=self.proj_hidden_dim,
            proj_dim=self.proj_dim,
            pred_hidden_dim=self.pred_hidden_dim,
        )


class SimSiam(SSLMethod):
    # Views: the SimSiam code's (MoCo v2) pair, crop scale 0.2 and blur p 0.5 on both views, which is
    # SimCLR's recipe here; PAPER.md's "BYOL-style" refers to the family (crop, jitter, blur), not to
    # BYOL's asymmetric blur and solarisation.
    name = "simsiam"
    display_name = "SimSiam"
    report_order = 40
    view_recipe = VIEWS
    config_class = SimSiamConfig
    search_space = {"pred_hidden_dim": ("categorical", (256, 512, 1024))}

    def __init__(self, backbone: Backbone, config: SimSiamConfig) -> None:
        super().__init__(backbone, config)
        c = config
        self.projector = mlp(backbone.out_dim, (c.proj_hidden_dim, c.proj_hidden_dim, c.proj_dim), last_batchnorm=True)
        self.predictor = mlp(c.proj_dim, (c.pred_hidden_dim, c.proj_dim))

    @property
    def step_names(self) -> tuple[str, ...]:
        return ("loss",)

    def training_steps(self, batch: SSLBatch) -> Iterator[StepLoss]:
        z1 = self.projector(self.backbone(batch.view1))
        z2 = self.projector(self.backbone(batch.view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        # A per-sample mean, so gathering changes no gradient; it makes the loss the global batch's.
        p1, p2, g1, g2 = (distributed.gather(t) for t in (p1, p2, z1, z2))
        yield StepLoss("loss", simsiam(p1, p2, g1, g2), z1.detach())
