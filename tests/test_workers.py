"""``bench run --workers N``: real worker processes over one sweep, every configuration FINISHED once."""

import subprocess
import sys
from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from bench.workers import threads_per_worker

SMOKE = ["--preset", "smoke", "--no-progress"]


def test_threads_are_split_between_workers():
    assert threads_per_worker(2, available=2) == 1
    assert threads_per_worker(2, available=8) == 4
    assert threads_per_worker(4, available=2) == 1


@pytest.mark.slow
def test_two_workers_run_every_configuration_once_and_a_rerun_skips_them(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    sweep = ["--methods", "simclr", "barlow", "random_init", "--seeds", "0", "1", "--epochs", "1"]
    command = [sys.executable, "-m", "bench", "run", *SMOKE, "--tracking-uri", uri, *sweep, "--workers", "2"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6 run(s) to do on 2 worker(s)" in done.stderr and "6 run(s): 6 FINISHED" in done.stdout
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])
    counts = Counter(r.data.tags["config_hash"] for r in runs if r.info.status == "FINISHED")
    assert len(runs) == 6 and len(counts) == 6 and set(counts.values()) == {1}
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "6 run(s): 6 SKIPPED" in again.stdout
    assert len(client.search_runs([client.get_experiment_by_name("synthetic").experiment_id])) == 6
