"""Full fine-tuning with the train labels: the paper's evaluation protocol.

Two ways to fine-tune a pretrained backbone (a copy: the pretrained model itself is left as it was):

- ``plain``: a new linear classifier on the backbone's pooled embedding, cross-entropy, one optimizer
  step per batch (the baselines' protocol).
- ``progressive``: PMG's progressive fine-tune (PAPER.md, fine-tuning): one classifier per hierarchical
  level (layer2, layer3, layer4) plus one on the concatenation; per batch, one optimizer step on
  ``CE(logits_k(jigsaw(x, n_k)))`` for k = 1, 2, 3, then one on ``2 * CE(logits_concat(x))``. A
  prediction is the argmax of the summed logits of the four heads on the unshuffled image. FG-SSL
  brings its pretrained hierarchical blocks and embedding heads; any other backbone gets new ones
  (``eval.finetune_block_channels``, ``eval.finetune_embed_dim``), so the progressive fine-tune can
  be applied to every method and the effect of pretraining separated from that of fine-tuning.

Train augmentation: crop and flips; ``eval.finetune_augmix`` adds AugMix and ``eval.finetune_cutmix_alpha``
CutMix on the batches, with the loss on the mixed labels (the authors' recipe; datasets/augmix.py,
datasets/cutmix.py).

Model selection: after every epoch the model is scored on validation (balanced accuracy); the test
split is scored once, with the weights of the selected epoch (ties: the earliest). The authors scored
test every epoch; the harness does not.

Everything random (data order, augmentation, jigsaw orders, new heads) comes from generators seeded
by the run's seed, so a CPU run repeats bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.devices import place
from bench.evaluate import ProtocolResult, Transform
from bench.metrics import classification_metrics, confusion_and_per_class
from bench.schema import EvalConfig, OptimConfig
from bench.trainer import EpochLoop, EpochStats
from datasets import Dataset, ImageSplit
from datasets.augment import build_eval_transform, build_finetune_transform
from datasets.cutmix import CutMix
from methods.backbones import Backbone
from methods.base import ParamGroup, SSLMethod, StepLoss
from methods.hierarchy import LEVELS, Hierarchy
from methods.jigsaw import jigsaw

DATA_ORDER_STREAM, AUGMENT_STREAM = 2, 3  # distinct from the SSL trainer's streams (0, 1)
HEAD_SEED_OFFSET = 1_000_003
PMG_CONCAT_WEIGHT = 2.0


@dataclass(frozen=True)
class MixedTargets:
    """CutMix's labels: per image its own label ``own``, the pasted image's ``pasted`` and the share of its
    own pixels ``weight``, so the loss is ``weight * CE(own) + (1 - weight) * CE(pasted)`` per image."""

    own: torch.Tensor
    pasted: torch.Tensor
    weight: torch.Tensor


Targets = torch.Tensor | MixedTargets


def cross_entropy(logits: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Mean cross-entropy over the batch; with ``MixedTargets`` each image's two labels weighted by its
    pixel shares (the CutMix loss; with one weight for the batch it is the authors' ``lam * CE(y_a) +
    (1 - lam) * CE(y_b)``)."""
    if isinstance(targets, torch.Tensor):
        return F.cross_entropy(logits, targets)
    own = F.cross_entropy(logits, targets.own, reduction="none")
    pasted = F.cross_entropy(logits, targets.pasted, reduction="none")
    return (targets.weight * own + (1.0 - targets.weight) * pasted).mean()


class PlainClassifier(nn.Module):
    """Backbone + a linear classifier on its pooled embedding; one cross-entropy step per batch."""

    step_names = ("ce",)

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_steps(self, x: torch.Tensor, y: Targets, generator: torch.Generator) -> Iterator[StepLoss]:
        yield StepLoss("ce", cross_entropy(self(x), y))


class ProgressiveClassifier(nn.Module):
    """PMG's progressive classifier: a ``Hierarchy`` over the backbone's layer2/3/4 maps (levels 1-3), one
    classifier per level's embedding and one on the concat embedding."""

    step_names = ("level1", "level2", "level3", "concat")

    def __init__(
        self,
        backbone: Backbone,
        hierarchy: Hierarchy,
        num_classes: int,
        grids: tuple[int, int, int],
        concat_weight: float = PMG_CONCAT_WEIGHT,
    ) -> None:
        super().__init__()
        if len(grids) != len(LEVELS):
            raise ValueError("the progressive classifier needs three jigsaw grids")
        self.backbone, self.hierarchy = backbone, hierarchy
        self.classifiers = nn.ModuleList(nn.Linear(hierarchy.embed_dim, num_classes) for _ in LEVELS)
        self.concat_classifier = nn.Linear(hierarchy.embed_dim, num_classes)
        self.grids = tuple(grids)
        self.concat_weight = concat_weight

    def level_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of the three levels and the concat head on ``x`` (one pass through the backbone)."""
        hidden = self.hierarchy.hidden(self.backbone, x)
        embeddings = self.hierarchy.embeddings
        logits = [clf(emb(h)) for clf, emb, h in zip(self.classifiers, embeddings, hidden, strict=True)]
        logits.append(self.concat_classifier(self.hierarchy.concat(hidden)))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The prediction PMG makes: the sum of the four heads' logits."""
        return torch.stack(self.level_logits(x)).sum(dim=0)

    def training_steps(self, x: torch.Tensor, y: Targets, generator: torch.Generator) -> Iterator[StepLoss]:
        """Level k on a jigsaw of grid n_k (only the backbone up to stage k runs), then the concat head
        on the unshuffled images; the caller steps the optimizer after each. CutMixed images are cut into
        puzzles after mixing, with the same mixed labels in every step (as the authors do)."""
        for level in LEVELS:
            puzzle = jigsaw(x, self.grids[level - 1], generator=generator)
            hidden = self.hierarchy.level_hidden(self.backbone, level, puzzle)
            logits = self.classifiers[level - 1](self.hierarchy.embeddings[level - 1](hidden))
            yield StepLoss(f"level{level}", cross_entropy(logits, y))
        logits = self.concat_classifier(self.hierarchy.concat(self.hierarchy.hidden(self.backbone, x)))
        yield StepLoss("concat", self.concat_weight * cross_entropy(logits, y))


Classifier = PlainClassifier | ProgressiveClassifier


def build_classifier(
    pretrained: nn.Module, mode: str, num_classes: int, evaluation: EvalConfig, seed: int
) -> Classifier:
    """A classifier on a deep copy of ``pretrained`` (a ``Backbone`` or an ``SSLMethod``).

    Progressive on a method with a hierarchy (FG-SSL) reuses its pretrained blocks and embedding heads;
    on anything else it builds new ones. New modules are initialised from a generator seeded by ``seed``
    alone, so they do not depend on how much randomness pretraining consumed (resumed and uninterrupted
    runs agree).
    """
    if mode not in ("plain", "progressive"):
        raise ValueError(f"unknown fine-tune mode {mode!r}; valid: plain, progressive")
    source = copy.deepcopy(pretrained)
    backbone = source.backbone if isinstance(source, SSLMethod) else source
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + HEAD_SEED_OFFSET)
        if mode == "plain":
            return PlainClassifier(backbone, num_classes)
        hierarchy = source.pretrained_hierarchy() if isinstance(source, SSLMethod) else None
        if hierarchy is None:
            mid, out = evaluation.finetune_block_channels
            hierarchy = Hierarchy(backbone.stage_channels, mid, out, evaluation.finetune_embed_dim)
        # A pretrained hierarchy keeps the concat weight its method trained with (FG-SSL's ``concat_weight``).
        weight = getattr(getattr(source, "config", None), "concat_weight", PMG_CONCAT_WEIGHT)
        return ProgressiveClassifier(backbone, hierarchy, num_classes, evaluation.finetune_grids, weight)


class ClassifierTrainer(EpochLoop):
    """Supervised training of a classifier (fine-tuning, the supervised reference): one
    cross-entropy step per loss the classifier yields, backbone at its own learning-rate scale; with
    ``cutmix``, every batch is CutMixed after its augmentation and the losses take the mixed labels."""

    state_key = "model"
    streams = (DATA_ORDER_STREAM, AUGMENT_STREAM)

    def __init__(
        self,
        model: Classifier,
        split: ImageSplit,
        transform: Transform,
        optim: OptimConfig,
        *,
        epochs: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        backbone_lr_scale: float = 1.0,
        cutmix: CutMix | None = None,
        progress: bool = True,
        name: str = "finetune",
    ) -> None:
        self.model, self.split, self.transform, self.cutmix = model, split, transform, cutmix
        self.labels = torch.as_tensor(np.asarray(split.labels), dtype=torch.long)
        backbone = {id(p) for p in model.backbone.parameters()}
        groups = [
            ParamGroup(list(model.backbone.parameters()), backbone_lr_scale),
            ParamGroup([p for p in model.parameters() if id(p) not in backbone], 1.0),
        ]
        super().__init__(
            model,
            groups,
            optim,
            items=len(split),
            step_names=model.step_names,
            name=name,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=progress,
        )

    def _train_batch(
        self, index: torch.Tensor, generator: torch.Generator, progress: float, sums: dict[str, torch.Tensor]
    ) -> None:
        images = torch.from_numpy(np.ascontiguousarray(self.split.images[index.numpy()])).to(self.device)
        x = self.transform(images, generator)
        y: Targets = self.labels[index].to(self.device)
        if self.cutmix is not None:
            mixed = self.cutmix(x, generator)
            x, y = mixed.images, MixedTargets(y, y[mixed.partner], mixed.own)
        self._step_through(self.model.training_steps(x, y, generator), sums)
        return None


@torch.inference_mode()
def predict_scores(
    model: nn.Module, split: ImageSplit, transform: Transform, device: torch.device, batch_size: int
) -> np.ndarray:
    """Class probabilities ``[N, classes]`` (softmax of the logits; PMG: of the summed logits), eval mode."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    chunks = []
    for start in range(0, len(split), batch_size):
        images = torch.from_numpy(np.array(split.images[start : start + batch_size])).to(device)  # writable copy
        chunks.append(torch.softmax(model(transform(images, generator)).float(), dim=1).cpu())
    return torch.cat(chunks).numpy()


@dataclass
class BestEpoch:
    """Model selection: keeps the first epoch with the highest validation score and a copy of its weights."""

    epoch: int = -1
    score: float = -math.inf
    state: dict[str, torch.Tensor] | None = None
    val_scores: np.ndarray | None = None

    def offer(self, epoch: int, score: float, model: nn.Module, val_scores: np.ndarray) -> bool:
        """Record ``epoch`` if it beats every earlier one (ties keep the earlier); True if it did."""
        if self.state is not None and not score > self.score:
            return False
        self.epoch, self.score, self.val_scores = epoch, score, val_scores
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True


@dataclass(frozen=True)
class EpochReport:
    """What the caller logs after each fine-tune epoch."""

    stats: EpochStats
    val_balanced_accuracy: float


def finetune(
    pretrained: nn.Module,
    dataset: Dataset,
    evaluation: EvalConfig,
    seed: int,
    device: torch.device,
    *,
    class_names: tuple[str, ...],
    ordinal: bool,
    progress: bool = True,
    on_epoch_end: Callable[[EpochReport, Classifier], None] | None = None,
) -> ProtocolResult:
    """Fine-tune a copy of ``pretrained`` for ``eval.finetune_epochs`` (AdamW, cosine), select the
    epoch with the best validation balanced accuracy and score test once with its weights.

    Metrics are ``val.*`` and ``test.*`` at the selected epoch plus ``selected_epoch`` (0-based, the
    step of the per-epoch values ``on_epoch_end`` receives)."""
    model = place(build_classifier(pretrained, evaluation.finetune_mode, dataset.num_classes, evaluation, seed), device)
    optim = OptimConfig(name="adamw", lr=evaluation.finetune_lr, weight_decay=evaluation.finetune_weight_decay)
    trainer = ClassifierTrainer(
        model,
        dataset.train,
        build_finetune_transform(dataset.image_size, augmix=evaluation.finetune_augmix),
        optim,
        epochs=evaluation.finetune_epochs,
        batch_size=evaluation.finetune_batch_size,
        seed=seed,
        device=device,
        backbone_lr_scale=evaluation.finetune_backbone_lr_scale,
        cutmix=CutMix(evaluation.finetune_cutmix_alpha, evaluation.finetune_cutmix_prob)
        if evaluation.finetune_cutmix_alpha > 0
        else None,
        progress=progress,
        name=f"finetune ({evaluation.finetune_mode})",
    )
    transform = build_eval_transform(dataset.image_size)
    best = BestEpoch()
    history = []
    for epoch in range(evaluation.finetune_epochs):
        stats = trainer.run_epoch(epoch)
        val_scores = predict_scores(model, dataset.val, transform, device, evaluation.batch_size)
        val_balanced = classification_metrics(dataset.val.labels, val_scores)["balanced_accuracy"]
        history.append(val_balanced)
        best.offer(epoch, val_balanced, model, val_scores)
        if on_epoch_end is not None:
            on_epoch_end(EpochReport(stats, val_balanced), model)
    selected, val_scores = best.epoch, best.val_scores
    model.load_state_dict(best.state)
    test_scores = predict_scores(model, dataset.test, transform, device, evaluation.batch_size)
    metrics: dict[str, float] = {"selected_epoch": float(selected)}
    for split, scores in (("val", val_scores), ("test", test_scores)):
        labels = getattr(dataset, split).labels
        metrics.update({f"{split}.{k}": v for k, v in classification_metrics(labels, scores, ordinal=ordinal).items()})
    selection = {
        "mode": evaluation.finetune_mode,
        "selected_epoch": selected,
        "epochs": evaluation.finetune_epochs,
        "val_balanced_accuracy_per_epoch": history,
    }
    return ProtocolResult(metrics, confusion_and_per_class(dataset.test.labels, test_scores, class_names), selection)
