"""Faults injected into real runs: the tracking server dies, the disk fills up, the loss turns NaN.
Each must fail fast with one clear line, lose nothing but the interrupted epoch, and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import free_port, kill_group, mlflow_server

from bench.cli import main

pytestmark = pytest.mark.slow
SMOKE = ["--preset", "smoke", "--no-progress"]


def bench_run(uri: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench", "run", *SMOKE, "--tracking-uri", uri, *args]


def wait_for(predicate, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, f"the run ended early: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def statuses(uri: str) -> Counter:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synthetic")
    return Counter(r.info.status for r in client.search_runs([experiment.experiment_id]))


def test_tracking_server_dies_mid_run_then_the_run_resumes_with_every_epoch_logged(tmp_path):
    port = free_port()
    args = ["--methods", "simclr", "--epochs", "6", "--set", "data.synthetic_sizes=[256,64,64]"]
    with mlflow_server(tmp_path / "server", port) as (uri, server):
        run = subprocess.Popen(
            bench_run(uri, *args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_for(lambda: any((tmp_path / ".bench-state" / "checkpoints").glob("*.pt")), run)
        kill_group(server)
        started = time.time()
        out, err = run.communicate(timeout=120)
        assert run.returncode == 2, err[-2000:]
        assert time.time() - started < 60, "a dead server must fail the run in seconds"
        last = err.strip().splitlines()[-1]
        assert last.startswith("bench: error: cannot log metrics in the tracking store") or "not reachable" in last
        assert any((tmp_path / ".bench-state" / "checkpoints").glob("*.pt")), "the checkpoint was lost"
    with mlflow_server(tmp_path / "server", port) as (uri, _):
        rerun = subprocess.run(bench_run(uri, *args), cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert "resumed after epoch" in rerun.stdout
        assert statuses(uri) == Counter({"FINISHED": 1})
        client = MlflowClient(uri)
        (finished,) = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
        steps = sorted({m.step for m in client.get_metric_history(finished.info.run_id, "train.loss")})
        assert steps == list(range(6)), "an epoch's metrics were lost"


@pytest.fixture
def tiny_disk(tmp_path):
    """A real tmpfs just big enough for one checkpoint; needs root (skips otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def resize(mount: Path, megabytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={megabytes}m", str(mount)], check=True)


def test_full_disk_stops_the_run_keeps_the_last_checkpoint_and_resumes(tmp_path, tiny_disk, capsys):
    """Store and checkpoints on a disk with room for one checkpoint: the second epoch's checkpoint
    cannot be written, the first survives, and once there is room again the run resumes after it."""
    resize(tiny_disk, int(1.5 * _checkpoint_size(tmp_path)) // 2**20 + 8)
    uri = f"sqlite:///{tiny_disk / 'mlflow.db'}"
    args = ["run", *SMOKE, "--tracking-uri", uri, "--methods", "simclr", "--epochs", "3"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in err and "the last checkpoint is kept" in err
    folder = tiny_disk / "checkpoints"
    assert len(list(folder.glob("*.pt"))) == 1 and not list(folder.glob(".*.tmp")), "a partial file was left"
    resize(tiny_disk, 1024)
    assert main(args) == 0
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert statuses(uri) == Counter({"FINISHED": 1})


def _checkpoint_size(tmp_path: Path) -> int:
    """The size of a smoke SimCLR checkpoint, measured by writing one on the normal disk."""
    uri = f"sqlite:///{tmp_path / 'measure' / 'mlflow.db'}"
    worker = subprocess.Popen(
        bench_run(uri, "--methods", "simclr", "--epochs", "50"), cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    folder = tmp_path / "measure" / "checkpoints"
    try:
        wait_for(lambda: any(folder.glob("*.pt")), worker)
        time.sleep(0.5)
        return max(p.stat().st_size for p in folder.glob("*.pt"))
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()


def test_nan_loss_and_collapse_fail_their_run_and_the_sweep_goes_on(tmp_path):
    """Exit code 1: the sweep ran every configuration, and some failed. The NaN comes from a value the
    checks let through: a SimCLR temperature of 1e-40 overflows its logits to inf (a learning rate
    large enough to diverge is refused up front)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ["run", *SMOKE, "--tracking-uri", uri, "--epochs", "2"]
    nan = ["--set", "method_options.simclr.temperature=1e-40"]
    assert main([*base, "--methods", "simclr", "barlow", *nan, "--set", "train.collapse_threshold=0.999"]) == 1
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    reasons = {r.data.tags["method"]: r.data.tags.get("failure_reason", "") for r in runs}
    assert {r.info.status for r in runs} == {"FAILED"} and len(runs) == 2
    assert "non-finite" in reasons["simclr"]
    assert "collapsed" in reasons["barlow"]
