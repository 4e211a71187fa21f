"""``bench run --workers N``: N worker processes over one expanded sweep.

Each configuration is one task; a free worker takes the next one and runs it through the same
``execute`` as a single process, so it still claims the configuration's lock in the ledger first.
Within one ``bench run`` no configuration is handed out twice; across ``bench run`` processes over
the same store the lock (and the FINISHED check under it) keeps every configuration to one run.
Workers are spawned (not forked: no inherited torch or MLflow state) and split the parent's torch
threads between them. Progress bars are off in workers (their output would interleave); each
worker prints its per-epoch lines, prefixed by the run name.

SIGTERM stops ``bench run`` as Ctrl-C does (``Terminated`` is a ``KeyboardInterrupt``): the run in
progress is marked KILLED and keeps its checkpoint. The parent passes the stop on to its workers, which
do the same with their runs, and kills any worker that has not exited within ``STOP_SECONDS``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from multiprocessing.process import BaseProcess

import torch

from bench.ledger import Ledger
from bench.process_group import DistributedContext
from bench.run import RUNNING_ELSEWHERE, RunOutcome, execute, run_name
from bench.schema import RunConfig
from bench.tracking import Tracker, stop_or_hold

STOP_SECONDS = 60.0  # for a stopped worker to mark its run KILLED and exit before it is killed


class Terminated(KeyboardInterrupt):
    """A stop signal, handled as Ctrl-C is; its message is the signal's name (SIGTERM, or SIGINT when
    only the workers were interrupted)."""


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``Terminated`` and Ctrl-C ``KeyboardInterrupt``, either
    after the call into the store in progress, if any (``stop_or_hold``). SIGTERM does so once: a second
    one (a service manager signals every process of the group) must not cut the clean-up short; its
    handler stays installed and does nothing, since CPython turns a signal that arrives as a handler is
    swapped for SIG_IGN into an OSError ("ignored due to race condition") in whatever code runs."""
    terminated = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal terminated
        if not terminated:
            terminated = True
            stop_or_hold(Terminated("SIGTERM"))

    def on_sigint(signum: int, frame: object) -> None:
        stop_or_hold(KeyboardInterrupt())

    handlers = {signal.SIGTERM: on_sigterm}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored (nohup, &)
        handlers[signal.SIGINT] = on_sigint
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


_busy = False  # a worker is inside a run: a stop signal interrupts it there
_stopped_by: str | None = None  # the stop signal's name, once one came: the worker starts no further run


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_worker)


def _stop_worker(signum: int, frame: object) -> None:
    """The first stop signal ends the worker's run as Ctrl-C would (KILLED, checkpoint kept); later ones
    do nothing, since Ctrl-C reaches a worker from the terminal and again from the parent. Between runs
    it only stops the worker from starting another, and the pool's shutdown ends it."""
    global _stopped_by
    if _stopped_by is None:
        _stopped_by = signal.Signals(signum).name
        if _busy:
            stop_or_hold(Terminated(_stopped_by))


def _run_one(config: RunConfig, tracker: Tracker, ledger: Ledger, force: bool) -> RunOutcome:
    global _busy
    _busy = True
    try:
        if _stopped_by is not None:
            raise Terminated(_stopped_by)
        return execute(config, tracker, ledger, progress=False, force=force)
    finally:
        _busy = False


def finished_and_pending(
    configs: list[RunConfig], tracker: Tracker, force: bool = False
) -> tuple[list[RunOutcome | None], list[int]]:
    """What a coordinator does first, alone: create each experiment once (not in racing workers or
    tasks), mark the configurations that FINISHED already as SKIPPED, and list the indices left to run."""
    trackers = [tracker.for_dataset(config.data.name) for config in configs]
    for experiment in {t.experiment: t for t in trackers}.values():
        experiment.experiment_id()
    outcomes: list[RunOutcome | None] = [None] * len(configs)
    pending = []
    for index, config in enumerate(configs):
        runs = [] if force else trackers[index].find_runs(config.config_hash())
        finished = [r for r in runs if r.info.status == "FINISHED"]
        if finished:
            run = finished[0]
            note = "already finished"
            outcomes[index] = RunOutcome(run.info.run_id, run_name(config), "SKIPPED", run.data.metrics, 0.0, note)
        else:
            pending.append(index)
    return outcomes, pending


def run_parallel(
    configs: list[RunConfig], tracker: Tracker, ledger: Ledger, workers: int, *, force: bool = False
) -> list[RunOutcome]:
    """Run ``configs`` on up to ``workers`` processes; outcomes come back in sweep order.

    Configurations that already FINISHED are skipped here (unless ``force``) without starting a worker
    for them; workers check again under the lock, so a run finished in the meantime is not repeated.
    """
    outcomes, pending = finished_and_pending(configs, tracker, force)
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
    except BaseException:  # Ctrl-C, SIGTERM, or the parent failing: no worker may train on alone
        _stop_workers(executor)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """Signal every worker to stop, cancel what none has started, and wait for them to exit; a worker
    still there after ``STOP_SECONDS`` is killed (its run stays RUNNING and a rerun takes it up again)."""
    processes: list[BaseProcess] = list((executor._processes or {}).values())  # the pool names no public way
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    watchdog = threading.Timer(STOP_SECONDS, _kill_remaining, [processes])
    watchdog.start()
    try:
        executor.shutdown(wait=True, cancel_futures=True)
    finally:
        watchdog.cancel()


def _kill_remaining(processes: list[BaseProcess]) -> None:
    """The watchdog's last resort: a worker stuck in its clean-up must not outlive ``bench run``."""
    for process in processes:
        if process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
