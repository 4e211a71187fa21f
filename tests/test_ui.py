"""``bench ui`` serves the harness's store: a real MLflow server on loopback, queried over REST; on any
other address it first warns, loudly, that the UI has no authentication."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import free_port

from bench.cli import main
from bench.ui import compare_url, is_loopback, runs_table_url

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
                with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=synthetic") as reply:
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
        compare = compare_url(f"http://127.0.0.1:{port}", [experiment["experiment_id"]], [runs[0]["info"]["run_id"]])
        assert f"compare its 1 finished run(s): {compare}" in output
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


def test_the_compare_url_is_the_route_and_query_of_the_uis_own_compare_button():
    """mlflow/server/js: ``getCompareRunPageRoute(runs, experiments)`` is
    ``/compare-runs?runs=${JSON.stringify(runs)}&experiments=${JSON.stringify(experiments)}`` under the hash
    router; the page URL-decodes the query and JSON.parses both values."""
    url = compare_url("http://127.0.0.1:5000", ["3", "12"], ["b1a0", "ab03"])
    assert url == (
        "http://127.0.0.1:5000/#/compare-runs?runs=%5B%22b1a0%22%2C%22ab03%22%5D&experiments=%5B%2212%22%2C%223%22%5D"
    )
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url.replace("/#/", "/")).query)
    assert json.loads(query["runs"][0]) == ["b1a0", "ab03"] and json.loads(query["experiments"][0]) == ["12", "3"]
    assert runs_table_url("http://h:1", "7") == "http://h:1/#/experiments/7/runs"


def test_the_route_is_the_one_the_installed_ui_defines():
    """Guard against an MLflow upgrade that moves the page: the route is in the UI's own build."""
    import mlflow

    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    if not build.is_dir():
        pytest.skip("this MLflow install ships no UI build")
    main_js = "".join(path.read_text(errors="ignore") for path in build.glob("main.*.js"))
    assert '"/compare-runs"' in main_js
    assert "?runs=${JSON.stringify(" in main_js and "&experiments=${JSON.stringify(" in main_js


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
