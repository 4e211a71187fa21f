"""Sweeps with real processes: finished runs are skipped, a SIGKILLed run resumes from its checkpoint
and ends bit-identical to an uninterrupted one, and concurrent workers never run a config twice."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main

pytestmark = pytest.mark.slow
SMOKE = ["--preset", "smoke", "--no-progress"]


def bench_command(uri, *args):
    return [sys.executable, "-m", "bench", "run", *SMOKE, "--tracking-uri", uri, *args]


def finished_hashes(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synthetic")
    runs = client.search_runs([experiment.experiment_id])
    return Counter(r.data.tags["config_hash"] for r in runs if r.info.status == "FINISHED"), runs


def test_sweep_runs_every_combination_once_then_skips_them(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = ["--methods", "simclr", "barlow", "--batch-sizes", "16", "32", "--seeds", "0", "1", "--epochs", "1"]
    assert main(["run", *SMOKE, "--tracking-uri", uri, *sweep]) == 0
    counts, runs = finished_hashes(uri)
    assert len(runs) == 8 and set(counts.values()) == {1}
    capsys.readouterr()
    started = time.perf_counter()
    assert main(["run", *SMOKE, "--tracking-uri", uri, *sweep]) == 0
    assert "8 of 8 run(s) skipped" in capsys.readouterr().out
    assert time.perf_counter() - started < 30
    assert len(finished_hashes(uri)[1]) == 8


def test_sigkill_mid_run_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    args = ["--methods", "fgssl", "--epochs", "4", "--set", "data.synthetic_sizes=[256,64,64]"]
    killed_uri, clean_uri = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    worker = subprocess.Popen(bench_command(killed_uri, *args), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    # The uninterrupted run meanwhile, in its own store and state folder: seeded CPU runs do not depend on timing.
    clean = subprocess.Popen(
        bench_command(clean_uri, *args), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    checkpoints = tmp_path / "a" / "checkpoints"
    deadline = time.time() + 300
    while not any(checkpoints.glob("*.pt")) and time.time() < deadline and worker.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # into the next epoch
    assert worker.poll() is None, "the run ended before it could be killed"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    resumed = subprocess.run(bench_command(killed_uri, *args), cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed after epoch" in resumed.stdout
    _, clean_err = clean.communicate(timeout=900)
    assert clean.returncode == 0, clean_err[-2000:]
    (killed_run,) = finished_hashes(killed_uri)[1]
    (clean_run,) = finished_hashes(clean_uri)[1]
    final = {k: v for k, v in clean_run.data.metrics.items() if k.startswith(("knn.", "linear."))}
    assert final and final == {k: killed_run.data.metrics[k] for k in final}

    def losses(uri, run):
        return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run.info.run_id, "train.loss"))

    assert sorted(set(losses(killed_uri, killed_run))) == losses(clean_uri, clean_run)
    assert not any(checkpoints.glob("*.pt")), "the checkpoint of a finished run is left behind"


def test_two_concurrent_workers_share_a_sweep_without_duplicates(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Create the store first so the two workers do not race to create its tables.
    assert main(["run", *SMOKE, "--tracking-uri", uri, "--methods", "random_init"]) == 0
    sweep = ["--methods", "simclr", "byol", "--seeds", "0", "1", "--epochs", "1"]
    workers = [
        subprocess.Popen(
            bench_command(uri, *sweep), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err[-1500:] for _, err in outputs]
    counts, runs = finished_hashes(uri)
    assert len(counts) == 5 and set(counts.values()) == {1}, counts
    assert len(runs) == 5


def test_hierarchy_ablation_logs_every_variant_with_its_options(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--ablation", "hierarchy", "--epochs", "1", "--set", "data.synthetic_sizes=[64,32,32]"]
    assert main(["run", *SMOKE, "--tracking-uri", uri, *args]) == 0
    _, runs = finished_hashes(uri)
    variants = {r.data.tags["ablation"]: r.data.params for r in runs}
    assert {"full", "levels-1", "levels-12", "joint", "embed-128", "bt-fgssl-code", "grids-16-8-4"} <= set(variants)
    assert variants["levels-1"]["method.levels"] == "1" and variants["levels-1"]["method.concat"] == "False"
    assert variants["joint"]["method.schedule"] == "joint"
    assert variants["grids-16-8-4"]["method.grids"] == "16,8,4"
    assert all(r.info.status == "FINISHED" and r.data.tags["method"] == "fgssl" for r in runs)
