"""``bench run --workers N``: N worker processes over one expanded sweep.

Each configuration is one task; a free worker takes the next one and runs it through the same
``execute`` as a single process, so it still claims the configuration's lock in the ledger first.
Within one ``bench run`` no configuration is handed out twice; across ``bench run`` processes over
the same store the lock (and the FINISHED check under it) keeps every configuration to one run.
Workers are spawned (not forked: no inherited torch or MLflow state) and split the parent's torch
threads between them. Progress bars are off in workers (their output would interleave); each
worker prints its per-epoch lines, prefixed by the run name.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

import torch

from bench.ledger import Ledger
from bench.process_group import DistributedContext
from bench.run import RUNNING_ELSEWHERE, RunOutcome, execute, run_name
from bench.schema import RunConfig
from bench.tracking import Tracker


def run_sweep(
    configs: list[RunConfig],
    tracker: Tracker,
    ledger: Ledger,
    workers: int,
    *,
    force: bool,
    progress: bool,
    ctx: DistributedContext | None = None,
) -> list[RunOutcome]:
    """Every configuration of a sweep, on ``workers`` processes; then the ones another ``bench run``
    held are waited for: finished there (skipped) or, if that process died, resumed here from its
    checkpoint. So a sweep shared by several workers ends with every configuration done once."""
    if workers > 1:
        outcomes = run_parallel(configs, tracker, ledger, workers, force=force)
    else:
        outcomes = [execute(config, tracker, ledger, progress=progress, force=force, ctx=ctx) for config in configs]
    held = [i for i, outcome in enumerate(outcomes) if outcome.note == RUNNING_ELSEWHERE]
    if held:
        print(f"bench: waiting for {len(held)} run(s) held by another process", file=sys.stderr, flush=True)
    for i in held:
        outcomes[i] = execute(configs[i], tracker, ledger, progress=progress, force=False, wait=True, ctx=ctx)
    return outcomes


def threads_per_worker(workers: int, available: int | None = None) -> int:
    """The parent's intra-op thread budget (``OMP_NUM_THREADS`` or the cores) split evenly, at least 1."""
    budget = available if available is not None else torch.get_num_threads()
    return max(1, budget // workers)


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _run_one(config: RunConfig, tracker: Tracker, ledger: Ledger, force: bool) -> RunOutcome:
    return execute(config, tracker, ledger, progress=False, force=force)


def run_parallel(
    configs: list[RunConfig], tracker: Tracker, ledger: Ledger, workers: int, *, force: bool = False
) -> list[RunOutcome]:
    """Run ``configs`` on up to ``workers`` processes; outcomes come back in sweep order.

    Configurations that already FINISHED are skipped here (unless ``force``) without starting a worker
    for them; workers check again under the lock, so a run finished in the meantime is not repeated.
    """
    tracker.experiment_id()  # create the store and the experiment here, once, not in racing workers
    outcomes: list[RunOutcome | None] = [None] * len(configs)
    pending = []
    for index, config in enumerate(configs):
        finished = [] if force else [r for r in tracker.find_runs(config.config_hash()) if r.info.status == "FINISHED"]
        if finished:
            run = finished[0]
            note = "already finished"
            outcomes[index] = RunOutcome(run.info.run_id, run_name(config), "SKIPPED", run.data.metrics, 0.0, note)
        else:
            pending.append(index)
    if pending:
        workers = min(workers, len(pending))
        threads = threads_per_worker(workers)
        print(
            f"bench: {len(pending)} run(s) to do on {workers} worker(s), {threads} torch thread(s) each",
            file=sys.stderr,
            flush=True,
        )
        _run_pending(configs, pending, outcomes, tracker, ledger, workers, threads, force)
    return [o for o in outcomes if o is not None]


def _run_pending(configs, pending, outcomes, tracker, ledger, workers, threads, force) -> None:
    executor = ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads,)
    )
    try:
        futures = {executor.submit(_run_one, configs[i], tracker, ledger, force): i for i in pending}
        for future in as_completed(futures):
            index = futures[future]
            try:
                outcome = future.result()
            except BrokenProcessPool:
                note = "a worker process died (killed or out of memory); rerun to resume"
                outcome = RunOutcome(None, run_name(configs[index]), "FAILED", {}, 0.0, note)
            outcomes[index] = outcome
            print(
                f"bench: {outcome.name} {outcome.status} ({outcome.seconds / 60:.1f} min)", file=sys.stderr, flush=True
            )
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
