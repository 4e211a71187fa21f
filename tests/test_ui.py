"""``bench ui`` serves the harness's store: a real MLflow server on loopback, queried over REST."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from servers import free_port

from bench.cli import main

pytestmark = pytest.mark.slow


def test_bench_ui_lists_the_runs_over_rest(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", "--preset", "smoke", "--no-progress", "--tracking-uri", uri, "--methods", "random_init"]) == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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
    finally:
        server.terminate()
        server.wait(timeout=30)
