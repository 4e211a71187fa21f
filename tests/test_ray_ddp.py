"""``bench run --ray ADDRESS --nproc N``: DDP over N Ray Train workers on a real two-node Ray cluster
(127.0.0.1, one CPU per node, so the two workers of a run sit on different nodes).

Every registered method trained by two workers with half the global batch each gives the loss and
every gradient of one plain process with the whole batch (float64, 1e-5); a run of ``bench run`` ends
FINISHED in a real ``mlflow server``; bad ``--nproc`` values are refused in one line before anything
starts.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from processes import finish
from servers import mlflow_server, ray_cluster, rest_runs
from test_distributed import assert_same_records

from bench.cli import main
from bench.errors import BenchError
from bench.ray_ddp import check_room

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "distributed" / "ray_parity_worker.py"
PYTHONPATH = os.pathsep.join([str(ROOT), str(WORKER.parent)])  # every node imports this checkout and parity
ENV = {
    **os.environ,
    "PYTHONPATH": PYTHONPATH,
    "OMP_NUM_THREADS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}
SMOKE = ["--preset", "smoke", "--no-progress"]
RANK1 = re.compile(r"pid=(\d+)\) world_rank=1")  # Ray Train's line for each worker it starts


def load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ray_parity_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = load_worker()


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(2, env={"PYTHONPATH": PYTHONPATH}) as (address, _):
        yield address


@pytest.fixture(scope="module")
def ray_ranks(cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every method trained by two Ray Train workers; their records, one file per method and rank."""
    out = tmp_path_factory.mktemp("ray-parity")
    command = [sys.executable, str(WORKER), cluster, str(out), str(out / "ray-train")]
    driver = subprocess.Popen(
        command, cwd=out, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    log = finish(driver, timeout=900)
    assert driver.returncode == 0, f"the Ray Train parity run failed (exit {driver.returncode}):\n{log[-4000:]}"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", worker.NAMES)
def test_two_ray_workers_with_half_batches_train_like_one_process(ray_ranks, name):
    reference = worker.parity.run(worker.build(name), batches=worker.batches(name))
    rank0, rank1 = (torch.load(ray_ranks / f"{name}.rank{r}.pt") for r in range(worker.WORLD_SIZE))
    assert len(reference["losses"]) == worker.batches(name) * len(worker.build(name).step_names)
    assert_same_records(rank0, reference)
    assert rank0["losses"] == rank1["losses"]
    for got, other in zip(rank0["grads"], rank1["grads"], strict=True):
        assert {n: None if g is None else worker.parity.digest(g) for n, g in got.items()} == other
    assert {k: worker.parity.digest(v) for k, v in rank0["state"].items()} == rank1["state"]


def _tag(run: dict[str, Any], key: str) -> str | None:
    return next((t["value"] for t in run["data"]["tags"] if t["key"] == key), None)


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_one_finished_run_resumed_from_its_checkpoint(cluster, tmp_path):
    """SIGKILL of rank 1 after the first checkpoint: rank 0's broken collective does not fail the run
    for good; Ray Train restarts both workers and the run resumes in the same MLflow run, which ends
    like any two-worker run (one test for both: a Ray cluster's runs cost minutes here)."""
    state = tmp_path / "state"
    with mlflow_server(tmp_path / "server") as (uri, _):
        args = ["-m", "bench", "run", *SMOKE, "--methods", "simclr", "--epochs", "3", "--ray", cluster, "--nproc", "2"]
        args += ["--tracking-uri", uri, "--experiment", "killed", "--state-dir", str(state)]
        driver = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
        reader.start()
        deadline, rank1 = time.time() + 600, None
        while rank1 is None or not any((state / "checkpoints").glob("*.pt")):
            assert driver.poll() is None and time.time() < deadline, "no checkpoint:\n" + "".join(lines)[-3000:]
            rank1 = rank1 or next((int(m[1]) for line in list(lines) if (m := RANK1.search(line))), None)
            time.sleep(0.2)
        os.kill(rank1, signal.SIGKILL)
        driver.wait(timeout=900)
        reader.join(timeout=30)
        log = "".join(lines)
        assert driver.returncode == 0, log[-3000:]
        runs = rest_runs(uri, "killed")
    assert [r["info"]["status"] for r in runs] == ["FINISHED"], [_tag(r, "failure_reason") for r in runs]
    assert "resumed after epoch" in log, log[-3000:]
    (run,) = runs
    assert _tag(run, "world_size") == "2" and _tag(run, "ray.node_id")
    assert {p["key"]: p["value"] for p in run["data"]["params"]}.get("train.sync_batchnorm") == "True"
    metrics = {m["key"] for m in run["data"]["metrics"]}
    assert {"knn.test.accuracy", "linear.test.accuracy"} <= metrics, sorted(metrics)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nproc", "0"], "bench: error: --nproc must be at least 1, got 0\n"),
        (["--nproc", "3"], "bench: error: batch size 32 does not split evenly over --nproc 3\n"),
        (["--nproc", "2", "--workers", "2"], "bench: error: --nproc and --workers cannot be combined"),
        (["--nproc", "2", "--force"], "bench: error: --ray cannot be combined with --workers or --force yet\n"),
    ],
)
def test_bad_nproc_with_ray_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *SMOKE, "--methods", "simclr", "--ray", "local", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err
    assert not list(tmp_path.iterdir()), "nothing was written"


class FakeRay:
    """``ray.nodes()`` of a cluster with two live nodes of 3 CPUs and one GPU each, and a dead one."""

    @staticmethod
    def nodes() -> list[dict[str, Any]]:
        alive = {"Alive": True, "Resources": {"CPU": 3.0, "GPU": 1.0}}
        return [alive, alive, {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]


@pytest.mark.parametrize(
    ("nproc", "cpus", "gpus", "fits"),
    [
        (2, 3, 1, True),
        (3, 2, 0, False),  # 2 CPUs each: one per node, 4 CPUs left over in pieces of 1
        (4, 1.5, 0, True),
        (3, 1, 1, False),
        (10, 0.5, 0.2, True),
        (11, 0.5, 0.2, False),
        (4, 0.6, 0.5, True),
    ],
)
def test_a_run_s_workers_must_fit_in_the_cluster_at_once(nproc, cpus, gpus, fits):
    if fits:
        check_room(FakeRay, nproc, cpus, gpus)
    else:
        with pytest.raises(BenchError, match=f"--nproc {nproc} needs {nproc} workers"):
            check_room(FakeRay, nproc, cpus, gpus)
