"""``bench run --ray ADDRESS``: the sweep's configurations as Ray tasks on a cluster.

The driver (this ``bench run``) is the sweep's only coordinator: it skips what already FINISHED in the
MLflow store and submits every other configuration once, as a task that reserves ``--cpus-per-run``
and ``--gpus-per-run`` and calls the same ``execute`` as a local run. So tasks take no lock: nothing
depends on ``flock`` over a network filesystem, where it is not to be trusted. A task whose worker or
node dies is retried by Ray (at most ``RETRIES`` times, on any node that fits); the retry finds the
run's checkpoint in the shared ``--state-dir`` and its run RUNNING in the store, and resumes it there.
A driver that dies takes its tasks with it (Ray ends the tasks of a dead owner); rerunning it submits
what has not FINISHED, and those runs resume from their checkpoints.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from bench.cluster import check_fits, connect
from bench.ledger import Ledger
from bench.ray_progress import Progress
from bench.run import RunOutcome, execute, run_name
from bench.schema import RunConfig
from bench.tracking import Tracker
from bench.workers import finished_and_pending

RETRIES = 3  # attempts after the first, when a task's worker or node dies (not when the run fails)
NODE_TAG = "ray.node_id"
POLL_SECONDS = 2.0


class DriverLedger(Ledger):
    """Checkpoints in the shared state folder, without the per-configuration lock: the driver hands
    each configuration to one task at a time, and Ray retries a task only once its attempt is dead."""

    @contextlib.contextmanager
    def claim(self, config_hash: str, *, wait: bool = False) -> Iterator[bool]:
        yield True


@dataclass(frozen=True)
class Ddp:
    """A run trained by ``nproc`` Ray Train workers, each reserving ``cpus`` CPUs and ``gpus`` GPUs."""

    nproc: int
    cpus: float
    gpus: float


def run_task(
    index: int, config: RunConfig, tracker: Tracker, state_dir: str, threads: int, progress, ddp: Ddp | None = None
) -> RunOutcome:
    """One configuration on whichever node Ray chose: tagged with that node, first or resumed attempt;
    with ``ddp``, trained by that many Ray Train workers (bench/ray_ddp.py), which this task waits for."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    ledger = DriverLedger(Path(state_dir))
    if ddp is not None:  # placed, but running only once its workers have their resources: they say so
        from bench.ray_ddp import train_together

        return train_together(config, tracker, ledger, ddp, started=(progress, index))
    progress.started.remote(index, node)
    torch.set_num_threads(threads)
    outcome = execute(config, tracker, ledger, progress=False, extra_tags={NODE_TAG: node})
    if outcome.run_id is not None and outcome.status != "SKIPPED":
        tracker.set_tags(outcome.run_id, {NODE_TAG: node})  # a resumed run: the node that finished it
    return outcome


def run_on_ray(
    configs: list[RunConfig], tracker: Tracker, state_dir: Path, address: str, cpus: float, gpus: float, nproc: int = 1
) -> list[RunOutcome]:
    """Every configuration of the sweep once, on the cluster; outcomes in sweep order. With ``nproc`` > 1
    each run is trained by ``nproc`` workers that each reserve ``cpus`` and ``gpus``."""
    ray = connect(address)
    try:
        check_fits(ray, cpus, gpus)
        if nproc > 1:
            from bench.ray_ddp import check_room

            check_room(ray, nproc, cpus, gpus)
        trackers = {c.data.name: tracker.for_dataset(c.data.name) for c in configs}
        experiments = ", ".join(repr(t.experiment) for t in trackers.values())
        print(
            f"bench: {len(configs)} run(s) -> experiment(s) {experiments} at {tracker.uri} on Ray {address}",
            file=sys.stderr,
            flush=True,
        )
        outcomes, pending = finished_and_pending(configs, tracker)
        if pending:
            ddp = Ddp(nproc, cpus, gpus) if nproc > 1 else None
            _submit_and_wait(ray, configs, pending, outcomes, tracker, state_dir, cpus, gpus, ddp)
        return [o for o in outcomes if o is not None]
    finally:
        ray.shutdown()


def _submit_and_wait(
    ray: ModuleType, configs, pending, outcomes, tracker, state_dir, cpus, gpus, ddp: Ddp | None = None
) -> None:
    # On the driver's own node: on another one, that node's death would end the sweep with the actor.
    driver_node = ray.get_runtime_context().get_node_id()
    here = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(driver_node, soft=False)
    progress = ray.remote(num_cpus=0)(Progress).options(scheduling_strategy=here).remote()
    reserved = (0, 0) if ddp is not None else (cpus, gpus)  # a DDP run's workers reserve its resources
    task = ray.remote(run_task).options(
        num_cpus=reserved[0],
        num_gpus=reserved[1],
        max_retries=RETRIES,
        retry_exceptions=False,
        scheduling_strategy="SPREAD",
    )
    threads = max(1, int(cpus))
    refs = {task.remote(i, configs[i], tracker, str(state_dir), threads, progress, ddp): i for i in pending}
    print(f"bench: {len(refs)} run(s) submitted to the Ray cluster", file=sys.stderr, flush=True)
    shown, failed = "", 0
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                index = refs.pop(ref)
                outcomes[index] = _result(ray, ref, configs[index])
                failed += outcomes[index].status not in ("FINISHED", "SKIPPED")
                print(f"bench: {outcomes[index].name} {outcomes[index].status}", file=sys.stderr, flush=True)
            started = set(ray.get(progress.snapshot.remote()))
            running = sum(i in started for i in refs.values())
            line = (
                f"bench: ray: {len(refs) - running} queued, {running} running, "
                f"{len(pending) - len(refs) - failed} finished, {failed} failed"
            )
            if line != shown:
                print(line, file=sys.stderr, flush=True)
                shown = line
    except BaseException:  # Ctrl-C or SIGTERM: no task may train on without its driver
        for ref in refs:
            ray.cancel(ref, force=True)
        raise


def _result(ray: ModuleType, ref, config: RunConfig) -> RunOutcome:
    """The task's outcome, or FAILED with the first line of why (its node died once too often, ...)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None) or exc
        first = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(exc).__name__)
        return RunOutcome(None, run_name(config), "FAILED", {}, 0.0, f"{type(exc).__name__}: {first[:300]}")
