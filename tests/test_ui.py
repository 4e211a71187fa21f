"""``bench ui`` serves the harness's store: a real MLflow server on loopback, queried over REST; on any
other address it first warns, loudly, that the UI has no authentication."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient
from servers import free_port

from bench.cli import main
from bench.ui import is_loopback

WARNING = "bench: WARNING: the MLflow UI has no authentication"


@pytest.mark.slow
def test_bench_ui_lists_the_runs_over_rest(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", "--preset", "smoke", "--no-progress", "--tracking-uri", uri, "--methods", "random_init"]) == 0
    port = free_port()
    server = start_ui(uri, port)
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=fgssl-bench") as reply:
                    experiment = json.load(reply)["experiment"]
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "MLflow UI did not come up"
                time.sleep(0.5)
        body = json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode()
        request = urllib.request.Request(f"{base}/runs/search", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as reply:
            runs = json.load(reply)["runs"]
        assert len(runs) == 1 and runs[0]["info"]["status"] == "FINISHED"
        assert any(tag["key"] == "method" and tag["value"] == "random_init" for tag in runs[0]["data"]["tags"])
        server_group = _children(server.pid)[0]  # mlflow ui, in a process group of its own
        server.send_signal(signal.SIGTERM)  # as a service manager or `kill` stops it, not a terminal's Ctrl-C
        output, _ = server.communicate(timeout=60)
        assert server.returncode == 0
        assert f"/#/experiments/{experiment['experiment_id']}/runs" in output  # the runs table's URL is printed
        assert WARNING not in output  # loopback: only this machine can reach it
        assert _group_gone(server_group, timeout=30), "mlflow ui processes kept running after bench ui stopped"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def start_ui(uri: str, port: int, *host: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "ui", "--tracking-uri", uri, "--port", str(port), *host],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so the test can see what is left of the whole tree afterwards
    )


def test_only_loopback_addresses_count_as_private():
    assert all(is_loopback(host) for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "192.0.2.1", "no-such-host.invalid"))


@pytest.mark.slow
def test_bench_ui_on_every_interface_warns_that_anyone_can_delete_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("empty")  # a store to serve
    port = free_port()
    server = start_ui(uri, port, "--host", "0.0.0.0")
    try:
        first = server.stdout.readline()
        assert first.startswith(WARNING) and "can read, change and delete runs" in first, first
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health"):
                    break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "MLflow UI did not come up"
                time.sleep(0.5)
        server_group = _children(server.pid)[0]
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
        assert _group_gone(server_group, timeout=30)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def _children(pid: int) -> list[int]:
    return [int(child) for child in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def _group_gone(group: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
