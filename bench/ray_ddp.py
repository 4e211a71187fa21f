"""``bench run --ray ADDRESS --nproc N``: one configuration trained with DDP over N Ray workers.

Ray Train's ``TorchTrainer`` schedules the N workers (each reserving ``--cpus-per-run`` CPUs and
``--gpus-per-run`` GPUs, on any nodes), gives them their ranks and joins them in a torch process group;
so no rendezvous is made by hand. Each worker then does what a ``bench run --nproc`` rank does for one
configuration (bench/process_group.py): rank 0 runs ``execute`` as a single process would, alone
talking to MLflow and writing the checkpoint in the shared state folder, and hands the other ranks the
configuration and the state to resume from; they train with it, each on its share of the global
batch, and do nothing else. When a worker or its node dies, Ray Train restarts the whole group (at
most ``RETRIES`` times, the bound on a task's retries) and the new rank 0 takes the run up as a retried
task would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.ledger import Ledger
from bench.process_group import COMMAND_LINE_TIMEOUT, end_followers, init_from_env
from bench.ray_sweep import NODE_TAG, RETRIES, Ddp, DriverLedger
from bench.run import RunOutcome, execute, follow_rank_zero
from bench.schema import RunConfig
from bench.tracking import Tracker

TRAIN_FOLDER = "ray-train"  # under the state folder: Ray Train's own records of each configuration's trainer


def train_together(
    config: RunConfig, tracker: Tracker, ledger: Ledger, ddp: Ddp, started: tuple[Any, int] | None = None
) -> RunOutcome:
    """Run ``config`` on ``ddp.nproc`` Ray Train workers; its outcome as rank 0 saw it. ``ledger`` must
    live on storage every node reaches: the worker that resumes the run may be on another node.
    ``started`` (the sweep's Progress actor, the run's index) is told when rank 0 begins."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": ddp.cpus, **({"GPU": ddp.gpus} if ddp.gpus else {})}
    settings = {"config": config, "tracker": tracker, "ledger": ledger, "threads": max(1, int(ddp.cpus))}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={**settings, "started": started},
        # Followers wait in a collective while rank 0 evaluates the run, far beyond torch's 30 minutes.
        torch_config=TorchConfig(timeout_s=int(COMMAND_LINE_TIMEOUT.total_seconds())),
        scaling_config=ray.train.ScalingConfig(
            num_workers=ddp.nproc, use_gpu=ddp.gpus > 0, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=config.config_hash(),
            storage_path=str(Path(ledger.root, TRAIN_FOLDER).resolve()),
            failure_config=ray.train.FailureConfig(max_failures=RETRIES),
        ),
    )
    return trainer.fit().return_value


@dataclass(frozen=True)
class HeldLedger(DriverLedger):
    """Rank 0's ledger: a checkpoint that ``execute`` discards stays on disk until ``release``. A worker
    that dies breaks rank 0's next collective, which ``execute`` records as the run failing; the
    checkpoint must survive that, for the restarted group to resume the run."""

    held: list[str] = field(default_factory=list)

    def discard(self, config_hash: str) -> None:
        self.held.append(config_hash)

    def release(self) -> None:
        for config_hash in self.held:
            super().discard(config_hash)


def _worker(settings: dict[str, Any]) -> RunOutcome | None:
    """One rank, in the process group Ray Train set up: rank 0 runs the configuration, the others follow."""
    import ray

    from bench.devices import resolve_device

    config: RunConfig = settings["config"]
    torch.set_num_threads(settings["threads"])
    ctx = init_from_env(resolve_device(config.device))
    if not ctx.is_main:
        follow_rank_zero(ctx)
        return None
    node = ray.get_runtime_context().get_node_id()
    if settings["started"] is not None:
        progress, index = settings["started"]
        progress.started.remote(index, node)
    tracker: Tracker = settings["tracker"]
    ledger = HeldLedger(settings["ledger"].root)
    outcome = execute(config, tracker, ledger, progress=False, extra_tags={NODE_TAG: node}, ctx=ctx)
    if outcome.run_id is not None and outcome.status != "SKIPPED":
        tracker.set_tags(outcome.run_id, {NODE_TAG: node})  # a resumed run: the node of the rank 0 that finished it
    try:
        end_followers(ctx)
    except RuntimeError as exc:  # the group broke: another worker died
        if outcome.status == "FAILED" and outcome.run_id is not None:
            tracker.set_tags(outcome.run_id, {"failure_reason": f"interrupted: a worker died ({str(exc)[:300]})"})
            tracker.finish(outcome.run_id, "KILLED")
            raise  # Ray Train restarts the group, which resumes the run from the checkpoint kept
    ledger.release()
    return outcome


def check_room(ray: Any, nproc: int, cpus: float, gpus: float) -> None:
    """The N workers of one run must fit in the cluster at once, each within one node: Ray Train would
    otherwise wait for them forever."""
    room = 0
    for node in (node["Resources"] for node in ray.nodes() if node.get("Alive")):
        shares = [node.get("CPU", 0) / cpus] + ([node.get("GPU", 0) / gpus] if gpus else [])
        room += math.floor(min(shares) + 1e-9)  # 0.6 CPU / 0.2 is 2.999...
    if room < nproc:
        raise BenchError(
            f"--nproc {nproc} needs {nproc} workers of {cpus:g} CPU(s) and {gpus:g} GPU(s) at once; "
            f"the Ray cluster has room for {room}"
        )
