"""``bench run --ray``: a sweep on a real two-node Ray cluster on 127.0.0.1 (one CPU per node), logged
to a real ``mlflow server``; and the one-line refusals (Ray missing, no cluster, a GPU nobody has)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from servers import free_port, mlflow_server, postgres_server, ray_cluster, rest_runs

from bench.cli import main
from bench.cluster_commands import absolute_data_paths
from bench.resolve import build_run_config, deep_merge, load_preset

ROOT = Path(__file__).resolve().parent.parent
# Every node imports this checkout. Token auth off explicitly: `ray start --head` turns it on whenever any
# earlier local ray.init() left ~/.ray/auth_token, and then `ray status` and the drivers are refused. A
# health check every second (not 3): a killed node is declared dead after 5 s, its tasks retried elsewhere.
RAY_ENV = {"PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_health_check_period_ms": "1000"}
ENV = {**os.environ, **RAY_ENV, "OMP_NUM_THREADS": "1"}
SMOKE = ["--preset", "smoke", "--no-progress"]
SWEEP = ["--methods", "simclr", "byol", "--seeds", "0", "1"]
EPOCHS = 3  # of each run in the node-kill test


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, env=ENV)


def _tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["data"]["tags"] if t["key"] == key), None)


def _runs_per_config(uri: str, experiment: str) -> Counter:
    return Counter(_tag(r, "config_hash") for r in rest_runs(uri, experiment))


@pytest.fixture(scope="module")
def cluster():
    with ray_cluster(2, env=RAY_ENV) as (address, nodes):
        yield address, nodes


@pytest.fixture
def server(tmp_path):
    with mlflow_server(tmp_path / "server") as (uri, _):
        yield uri


@pytest.mark.slow
def test_four_configurations_finish_once_each_on_both_nodes(cluster, server, tmp_path):
    address, _ = cluster
    args = ["run", *SMOKE, *SWEEP, "--epochs", "1", "--ray", address, "--tracking-uri", server]
    done = _bench(*args, "--experiment", "four", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = rest_runs(server, "four")
    assert Counter(r["info"]["status"] for r in runs) == {"FINISHED": 4}
    assert len({_tag(r, "config_hash") for r in runs}) == 4
    assert len({_tag(r, "ray.node_id") for r in runs}) == 2, "the runs were spread over both nodes"
    assert "bench: ray: 0 queued, 0 running, 4 finished, 0 failed" in done.stderr
    again = _bench(*args, "--experiment", "four", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert again.returncode == 0 and len(rest_runs(server, "four")) == 4, "a rerun submits nothing finished"
    gpu = _bench(*args, "--gpus-per-run", "1", cwd=tmp_path)
    assert gpu.returncode == 2 and gpu.stderr.count("\n") == 1 and "no node of the Ray cluster has a GPU" in gpu.stderr


@pytest.mark.slow
def test_a_driver_killed_mid_sweep_and_rerun_runs_no_configuration_twice(cluster, server, tmp_path):
    address, _ = cluster
    state = tmp_path / "state"
    args = ["-m", "bench", "run", *SMOKE, *SWEEP, "--epochs", "3", "--ray", address, "--tracking-uri", server]
    args += ["--experiment", "killed", "--state-dir", str(state)]
    driver = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 400
    while not any((state / "checkpoints").glob("*.pt")):
        assert driver.poll() is None and time.time() < deadline, "no run checkpointed"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    done = _bench(*args[2:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed after epoch" in done.stdout, done.stdout
    runs = rest_runs(server, "killed")
    assert Counter(r["info"]["status"] for r in runs) == {"FINISHED": 4}
    assert set(_runs_per_config(server, "killed").values()) == {1}, "every configuration has one run"


def test_without_ray_installed_ray_is_refused_with_the_install_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    assert main(["run", *SMOKE, "--methods", "simclr", "--ray", "auto"]) == 2
    assert capsys.readouterr().err == "bench: error: --ray needs Ray, which is not installed: pip install -e '.[ray]'\n"


def test_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *SMOKE, "--methods", "simclr", "--ray", f"127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Ray cluster 127.0.0.1:" in err and "unreachable" in err, err
    assert not (tmp_path / "mlruns").exists(), "nothing was written"


@pytest.mark.slow
def test_two_trial_tasks_on_one_postgresql_study_give_two_trials_and_two_runs(cluster, tmp_path):
    address, _ = cluster
    with (
        postgres_server(("mlflow", "optuna")) as urls,
        mlflow_server(tmp_path / "server", backend=urls["mlflow"]) as (uri, _),
    ):
        args = ["tune", "--method", "simclr", "--trials", "2", "--epochs", "2", *SMOKE, "--study", "shared"]
        args += ["--storage", urls["optuna"], "--tracking-uri", uri, "--ray", address]
        done = _bench(*args, "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        trials = optuna.load_study(study_name="shared", storage=urls["optuna"]).trials
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        assert len(trials) == 2 and all(t.state in finished for t in trials), [t.state for t in trials]
        logged = [r for r in rest_runs(uri) if _tag(r, "optuna.study") == "shared"]
        assert sorted(int(_tag(r, "optuna.trial")) for r in logged) == [0, 1]
        assert all(_tag(r, "ray.node_id") for r in logged), "each trial's run names its node"


IDLE_HEAD = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.time() + float(sys.argv[2])
while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
    assert time.time() < deadline, f"CPUs still taken: {ray.available_resources()}"
    time.sleep(0.5)
print(next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"]))
"""


def _idle_head_node_id(address: str, timeout: float = 300.0) -> str:
    """The head node's ID, once every CPU of the cluster is free (an earlier test's tasks may still hold
    one): with both nodes free, SPREAD puts one of the two runs on each."""
    command = [sys.executable, "-c", IDLE_HEAD, address, str(timeout)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, check=True).stdout.split()[-1]


def _test_metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"]["metrics"] if ".test." in m["key"]}


@pytest.mark.slow
def test_a_killed_node_s_run_resumes_on_the_other_node_as_if_uninterrupted(cluster, server, tmp_path):
    """Last in this file: it kills the cluster's second node."""
    address, nodes = cluster
    head = _idle_head_node_id(address)
    state = tmp_path / "state"
    sweep = ["-m", "bench", "run", *SMOKE, "--methods", "simclr", "--seeds", "0", "1", "--epochs", str(EPOCHS)]
    sweep += ["--tracking-uri", server]
    args = [*sweep, "--experiment", "node", "--ray", address, "--state-dir", str(state)]
    with (
        _reaped([sys.executable, *sweep, "--experiment", "reference"], cwd=tmp_path, env=ENV) as reference,
        _reaped([sys.executable, *args], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, text=True) as driver,
    ):
        deadline = time.time() + 600
        doomed = None
        while doomed is None:
            assert driver.poll() is None and time.time() < deadline, "no run checkpointed on the second node"
            for run in _runs_so_far(server, "node"):
                epoch = _checkpointed_epoch(state / "checkpoints" / f"{_tag(run, 'config_hash')}.pt")
                if _tag(run, "ray.node_id") != head and epoch is not None and epoch < EPOCHS - 1:
                    doomed = run  # still an epoch to train: the kill lands mid-run, not after it finished
            time.sleep(0.5)
        os.killpg(nodes[1].pid, signal.SIGKILL)  # the node whole: its raylet, workers and the run's process
        out, _ = driver.communicate(timeout=900)
        assert driver.returncode == 0 and "resumed after epoch" in out, out
        assert reference.wait(timeout=900) == 0
    runs = {_tag(r, "config_hash"): r for r in rest_runs(server, "node")}
    assert len(rest_runs(server, "node")) == 2 and {r["info"]["status"] for r in runs.values()} == {"FINISHED"}
    resumed = runs[_tag(doomed, "config_hash")]
    assert resumed["info"]["run_id"] == doomed["info"]["run_id"], "resumed in the same MLflow run"
    assert _tag(resumed, "ray.node_id") == head, "finished on the surviving node"
    uninterrupted = {_tag(r, "config_hash"): r for r in rest_runs(server, "reference")}[_tag(doomed, "config_hash")]
    assert _test_metrics(resumed) and _test_metrics(resumed) == _test_metrics(uninterrupted)


@contextlib.contextmanager
def _reaped(command: list[str], **popen) -> Iterator[subprocess.Popen]:
    """A process that is killed if the test fails before it ended: no driver outlives its test."""
    process = subprocess.Popen(command, **popen)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _checkpointed_epoch(path: Path) -> int | None:
    """The last epoch a run checkpointed, None before its first checkpoint and after it finished."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]
    except FileNotFoundError:
        return None


def _runs_so_far(uri: str, experiment: str) -> list[dict]:
    """The experiment's runs, none while the driver has not created it yet."""
    try:
        return rest_runs(uri, experiment)
    except OSError:
        return []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "2"], "--ray cannot be combined with --workers or --force yet"),
        (["--cpus-per-run", "0"], "--cpus-per-run must be positive, got 0.0"),
        (["--gpus-per-run", "-1"], "--gpus-per-run must be 0 or more, got -1.0"),
        ([], "needs a tracking store every node reaches"),  # the default SQLite file: locks over the network
    ],
)
def test_cluster_requests_refused_before_anything_is_written(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as head:  # something listens: the address itself is fine
        address = f"127.0.0.1:{head.getsockname()[1]}"
        assert main(["run", *SMOKE, "--methods", "simclr", "--ray", address, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.iterdir()), "nothing was written"


def test_state_dir_without_ray_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *SMOKE, "--methods", "simclr", "--state-dir", str(tmp_path / "state")]) == 2
    assert "--state-dir is for --ray" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_data_paths_are_made_absolute_for_the_nodes_without_changing_the_config_hash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = deep_merge(load_preset("smoke"), {"data": {"root": "data/here", "cache_dir": "cache"}})
    config = build_run_config(tree, "simclr", "synthetic", 32, 0)
    moved = absolute_data_paths(config)
    assert (moved.data.root, moved.data.cache_dir) == (str(tmp_path / "data/here"), str(tmp_path / "cache"))
    assert moved.config_hash() == config.config_hash()
