"""What each run of a sweep costs on Ray beyond a local run: the task's submission, scheduling on a
node, the worker's imports and the node tag, per configuration.

Four real ``python -m bench run`` sweeps of one-epoch smoke runs (SimCLR, one torch thread), to one
``mlflow server``: locally and on a one-node, one-CPU Ray cluster (so Ray runs them one after
another, as the local sweep does), each with one and with three seeds. A sweep's process start and,
on Ray, joining the cluster are paid once per sweep; the per-run cost is the slope, (three seeds - one
seed) / 2, and Ray's fixed cost per run is its slope minus the local one (target: at most 1.5 s).
The sweeps alternate local and Ray, so a change of machine load hits both sides alike.
"""

from __future__ import annotations

import sys
from pathlib import Path

from child_runs import ChildRun, bench_command, child_env, run_child

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/servers.py
from servers import mlflow_server, ray_cluster  # noqa: E402

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
        sweep("warm-up", ("9",))  # builds the dataset cache and the experiment table, once, outside the slopes
        sweep("warm-up-ray", ("9",), *ray)
        local_one = sweep("local-1", ("0",))
        ray_one = sweep("ray-1", ("0",), *ray)
        local_three = sweep("local-3", ("0", "1", "2"))
        timed: dict[str, ChildRun] = {}  # the Ray sweep of three runs, recorded in the benchmark JSON
        ratio_bench.record(lambda: timed.setdefault("ray", sweep("ray-3", ("0", "1", "2"), *ray)), rounds=1, warmup=0)
        ray_three = timed["ray"]
    local_slope = (local_three.wall - local_one.wall) / 2
    ray_slope = (ray_three.wall - ray_one.wall) / 2
    fixed = ray_slope - local_slope
    ratio_bench.report_value(
        "Ray fixed cost per run",
        fixed,
        "s",
        f"<= {MAX_RAY_SECONDS_PER_RUN} s",
        f"per run: local {local_slope:.2f} s, Ray {ray_slope:.2f} s; sweeps of 1 and 3 runs: local "
        f"{local_one.wall:.1f}/{local_three.wall:.1f} s, Ray {ray_one.wall:.1f}/{ray_three.wall:.1f} s",
        local_per_run=local_slope,
        ray_per_run=ray_slope,
    )
    assert fixed <= MAX_RAY_SECONDS_PER_RUN, f"Ray adds {fixed:.2f} s per run (local {local_slope:.2f} s per run)"
