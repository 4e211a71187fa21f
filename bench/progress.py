"""What a run says per training epoch: the metrics it logs and its one line on stderr, with the time
left in the loop estimated from the epochs timed so far."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from bench.trainer import EpochStats


def loss_metrics(prefix: str, losses: Mapping[str, float]) -> dict[str, float]:
    """``prefix`` is the sum of the epoch's step losses. A method with several optimizer steps per batch
    (FG-SSL's levels and concat) also logs each step as ``prefix.<step>``; one with a single step logs
    its loss once, as ``prefix``."""
    values = {f"{prefix}.{name}": value for name, value in losses.items()} if len(losses) > 1 else {}
    values[prefix] = sum(losses.values())
    return values


def epoch_metrics(stats: EpochStats) -> dict[str, float]:
    values = loss_metrics("train.loss", stats.losses)
    values.update(
        {"train.lr": stats.lr, "train.epoch_seconds": stats.seconds, "train.images_per_second": stats.images_per_second}
    )
    if not math.isnan(stats.embedding_spread):
        values["train.embedding_spread"] = stats.embedding_spread
    return values


def without_single_step(values: Mapping[str, float], prefix: str = "train.loss") -> dict[str, float]:
    """Metrics as ``loss_metrics`` names them, from a checkpoint that may predate it: a lone
    ``prefix.<step>`` (a one-step method's loss under its step name) is dropped; ``prefix`` holds it."""
    steps = [key for key in values if key.startswith(prefix + ".")]
    return {k: v for k, v in values.items() if not (len(steps) == 1 and k == steps[0])}


@dataclass
class EpochClock:
    """The time left in a loop of ``epochs`` epochs: the mean of the epochs timed so far in this process
    (a resumed run times its own) times the epochs still to run."""

    epochs: int
    timed: list[float] = field(default_factory=list)

    def left(self, epoch: int, seconds: float) -> float:
        """After epoch ``epoch`` (0-based) took ``seconds``."""
        self.timed.append(seconds)
        return sum(self.timed) / len(self.timed) * max(0, self.epochs - epoch - 1)


def duration(seconds: float) -> str:
    """``22 s``, ``3.5 min``, ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def time_left(seconds: float, what: str) -> str:
    """``; about 22 s of training left`` after an epoch, or nothing after the loop's last."""
    return f"; about {duration(seconds)} of {what} left" if seconds > 0 else ""


def epoch_line(name: str, stats: EpochStats, epochs: int, loss: float, left: float) -> str:
    """``simclr-synthetic-b32-s0 epoch 1/8: loss 5.2, 3.1 s, 200 img/s; about 22 s of training left``."""
    return (
        f"{name} epoch {stats.epoch + 1}/{epochs}: loss {loss:.4g}, {stats.seconds:.1f} s, "
        f"{stats.images_per_second:.0f} img/s{time_left(left, 'training')}"
    )
