"""What each run of a sweep costs on Ray beyond a local run: the task's submission, scheduling on a
node, passing the outcome back and the node tag, per configuration.

Real ``python -m bench run`` sweeps of three one-epoch smoke runs (SimCLR, one torch thread), to one
``mlflow server``: locally and on a one-node, one-CPU Ray cluster (so Ray runs them one after
another, as the local sweep does). What a sweep pays once (process start, joining the cluster, the
Ray worker's imports) is left out: per run, each side costs the span from its first run's start to its
last run's end, as MLflow recorded them, divided by the runs; Ray's fixed cost per run is the
difference (target: at most 1.5 s). A warm-up sweep on each side first builds the dataset cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

from child_runs import ChildRun, bench_command, child_env, run_child

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/servers.py
from servers import mlflow_server, ray_cluster, rest_runs  # noqa: E402

MAX_RAY_SECONDS_PER_RUN = 1.5
TINY = ("run", "--preset", "smoke", "--methods", "simclr", "--epochs", "1", "--no-progress")
ROOT = Path(__file__).resolve().parents[2]


def test_ray_fixed_cost_per_run(ratio_bench, tmp_path) -> None:
    env = child_env(tmp_path, PYTHONPATH=str(ROOT))
    with mlflow_server(tmp_path / "server") as (uri, _), ray_cluster(1, env={"PYTHONPATH": str(ROOT)}) as (address, _):

        def sweep(experiment: str, seeds: tuple[str, ...], *ray: str) -> ChildRun:
            argv = bench_command(*TINY, "--seeds", *seeds, "--tracking-uri", uri, "--experiment", experiment, *ray)
            return run_child(argv, cwd=tmp_path, env=env, timeout=900).check()

        ray = ("--ray", address, "--state-dir", str(tmp_path / "state"))
        sweep("warm-up", ("9",))  # builds the dataset cache and the experiment table, once, outside what is measured
        sweep("warm-up-ray", ("9",), *ray)
        local = sweep("local", ("0", "1", "2"))
        timed: dict[str, ChildRun] = {}  # the Ray sweep, recorded in the benchmark JSON
        ratio_bench.record(lambda: timed.setdefault("ray", sweep("ray", ("0", "1", "2"), *ray)), rounds=1, warmup=0)
        local_per_run, ray_per_run = per_run_seconds(uri, "local"), per_run_seconds(uri, "ray")
    fixed = ray_per_run - local_per_run
    ratio_bench.report_value(
        "Ray fixed cost per run",
        fixed,
        "s",
        f"<= {MAX_RAY_SECONDS_PER_RUN} s",
        f"per run: local {local_per_run:.2f} s, Ray {ray_per_run:.2f} s; whole sweeps of 3 runs: local "
        f"{local.wall:.1f} s, Ray {timed['ray'].wall:.1f} s (process start and joining the cluster included)",
        local_per_run=local_per_run,
        ray_per_run=ray_per_run,
    )
    assert fixed <= MAX_RAY_SECONDS_PER_RUN, f"Ray adds {fixed:.2f} s per run (local {local_per_run:.2f} s per run)"


def per_run_seconds(uri: str, experiment: str) -> float:
    """First start to last end of the experiment's runs, per run (MLflow's own clock, milliseconds)."""
    runs = [r["info"] for r in rest_runs(uri, experiment)]
    assert len(runs) == 3 and all(r["status"] == "FINISHED" for r in runs), runs
    return (max(int(r["end_time"]) for r in runs) - min(int(r["start_time"]) for r in runs)) / 1000 / len(runs)
