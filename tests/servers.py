"""Real servers that tests start on 127.0.0.1 and stop: an MLflow tracking server with a database
backend, as a shared sweep uses it, and a PostgreSQL server for that backend and Optuna's storage."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


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
def mlflow_server(
    folder: Path, port: int | None = None, backend: str | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlflow server`` with a database backend (SQLite by default) and local artifact root; yields (uri, process)."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend or f"sqlite:///{folder / 'mlflow.db'}",
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


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else where Debian's ``postgresql`` installs it."""
    installed = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return shutil.which(name) or (installed[0] if installed else None)


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root (CI runs as root): there it runs as ``nobody``."""
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server(databases: tuple[str, ...] = ("bench",)) -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (no Unix socket, trust auth for its one user) on a free
    port, with the given databases created; yields ``{name: url}`` and stops and deletes it afterwards.
    Its folder is a fresh one under the system temp dir, owned by the server's user (pytest's tmp_path
    is private to root)."""
    initdb, pg_ctl, createdb = (postgres_bin(name) for name in ("initdb", "pg_ctl", "createdb"))
    if not (initdb and pg_ctl and createdb):
        pytest.skip("PostgreSQL server programs not installed (.ci/run installs Debian's postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody", "nogroup")
    data, port = folder / "data", free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    subprocess.run(
        _as_server_user([initdb, "-D", str(data), "-U", "bench", "--auth=trust", "--no-sync"]), check=True, **quiet
    )
    options = f"-h 127.0.0.1 -p {port} -k '' -c fsync=off -c max_connections=200"
    start = [pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "-o", options, "start"]
    subprocess.run(_as_server_user(start), check=True, **quiet)
    try:
        for name in databases:
            subprocess.run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "bench", name], check=True, **quiet)
        yield {name: f"postgresql://bench@127.0.0.1:{port}/{name}" for name in databases}
    finally:
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]), **quiet)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def ray_cluster(nodes: int = 2, env: dict[str, str] | None = None) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A real Ray cluster of ``nodes`` one-CPU nodes on 127.0.0.1 (``ray start --block``, each in its own
    process group, so a test can kill one node whole); yields (head address, node processes). Afterwards
    every node's group is killed and no process of the cluster's temp folder may be left."""
    ray = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="bray", dir="/tmp")  # short: Ray's Unix sockets live under it
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Token auth off: Ray 2.60 turns it on for every later `ray start` once any local `ray.init()` wrote
    # ~/.ray/auth_token, and then `ray status` and drivers connecting by address are refused.
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "RAY_AUTH_MODE": "disabled",
        **(env or {}),
    }
    processes: list[subprocess.Popen] = []
    try:
        for n in range(nodes):
            role = ["--head", "--port", str(port), "--include-dashboard", "false"] if n == 0 else ["--address", address]
            ports = [
                "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
            ]  # fmt: skip
            command = [ray, "start", *role, "--node-ip-address", "127.0.0.1", "--num-cpus", "1", *ports]
            log = open(Path(temp) / f"node{n}.log", "a")  # noqa: SIM115 - closed with the process
            processes.append(
                subprocess.Popen(
                    [*command, "--temp-dir", temp, "--block", "--disable-usage-stats"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
            wait_for_nodes(ray, address, n + 1, processes, env)
        yield address, processes
    finally:
        for process in processes:
            kill_group(process, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(process)
        time.sleep(1.0)
        left = subprocess.run(["pgrep", "-f", temp], capture_output=True, text=True).stdout.split()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes outlived the cluster: {left}"


def wait_for_nodes(ray: str, address: str, count: int, processes: list, env: dict, timeout: float = 180.0) -> None:
    """Until ``ray status`` counts ``count`` CPUs (one per node)."""
    deadline = time.time() + timeout
    while True:
        status = subprocess.run([ray, "status", "--address", address], capture_output=True, text=True, env=env)
        if f"/{count}.0 CPU" in status.stdout:
            return
        assert all(p.poll() is None for p in processes), "a Ray node exited while starting"
        assert time.time() < deadline, (
            f"the Ray cluster did not reach {count} nodes:\n{(status.stdout + status.stderr)[-1500:]}"
        )
        time.sleep(1.0)
