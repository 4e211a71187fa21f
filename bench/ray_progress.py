"""The driver's view of which runs a Ray sweep has started, and on which node.

A module of its own, importing nothing heavy: Ray starts a worker process for the actor, and that
process imports only this module, not torch and the rest of the harness (seconds of CPU that would be
taken from the runs training on the driver's node).
"""

from __future__ import annotations


class Progress:
    """A Ray actor (no CPU) that runs tell when they start and where, for the driver's counts. A DDP
    run tells it when its workers got their resources and rank 0 starts, not when its task was placed."""

    def __init__(self) -> None:
        self.running: dict[int, str] = {}

    def started(self, index: int, node: str) -> None:
        self.running[index] = node

    def snapshot(self) -> dict[int, str]:
        return dict(self.running)
