"""Real servers that tests start on 127.0.0.1 and stop: an MLflow tracking server with a database
backend, as a shared sweep uses it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            assert time.time() < deadline and process.poll() is None, f"server behind {url} did not come up"
            time.sleep(0.3)


@contextmanager
def mlflow_server(folder: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow server`` with a SQLite backend and local artifact root; yields (uri, process)."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = (folder / f"server-{port}.log").open("a")
    # Its own process group: `mlflow server` serves from child processes, which must die with it.
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{uri}/health", process)
        yield uri, process
    finally:
        kill_group(process, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal a server and every process it started (a dead server, as a crash leaves it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def rest_runs(uri: str, experiment: str = "synthetic") -> list[dict]:
    """Every run of an experiment through the server's REST API (no client library in between)."""
    base = f"{uri}/api/2.0/mlflow"
    with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name={experiment}") as reply:
        experiment_id = json.load(reply)["experiment"]["experiment_id"]
    body = json.dumps({"experiment_ids": [experiment_id], "max_results": 1000}).encode()
    request = urllib.request.Request(f"{base}/runs/search", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as reply:
        return json.load(reply).get("runs", [])
