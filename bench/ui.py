"""``bench ui``: the MLflow UI on the harness's store, as a server that stops with the command.

``mlflow ui`` serves from child processes (the web workers and MLflow's job consumers). Run as a plain
child or exec'd in place, a SIGTERM to ``bench ui`` (a service manager, ``kill``, a closed terminal)
stops only the first of them and leaves the rest serving. So the server runs in its own process group
and ``bench ui`` takes the whole group down on any stop signal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING
from urllib.parse import quote

import mlflow

from bench.tracking import Tracker

if TYPE_CHECKING:
    from bench.run import RunOutcome
    from bench.schema import RunConfig

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_ADDRESS = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"  # where ``bench ui`` serves without --host/--port


def runs_table_url(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table (the UI opens an experiment on another tab otherwise)."""
    return f"{base_url}/#/experiments/{experiment_id}/runs"


def compare_url(base_url: str, experiment_ids: list[str], run_ids: list[str]) -> str:
    """The UI's compare view of the runs: its route ``/compare-runs`` with the query its own "Compare"
    button builds (``?runs=<JSON list>&experiments=<JSON list>``, read back with JSON.parse after
    URL-decoding; mlflow/server/js, ``getCompareRunPageRoute``), percent-encoded so that the URL is one
    unbroken word in a terminal."""
    runs = quote(json.dumps(list(run_ids), separators=(",", ":")), safe="")
    experiments = quote(json.dumps(sorted(experiment_ids), separators=(",", ":")), safe="")
    return f"{base_url}/#/compare-runs?runs={runs}&experiments={experiments}"


def experiment_links(uri: str, base_url: str) -> list[str]:
    """Per experiment in the store with runs: its name, run count and the URL of its runs table, and the
    URL of the compare view of its finished runs (oldest first, as the sweep ran them)."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    lines = []
    for experiment in client.search_experiments():
        runs = client.search_runs([experiment.experiment_id], max_results=50_000, order_by=["start_time ASC"])
        if runs:
            lines.append(
                f"  {experiment.name} ({len(runs)} runs): {runs_table_url(base_url, experiment.experiment_id)}"
            )
            finished = [run.info.run_id for run in runs if run.info.status == "FINISHED"]
            if finished:
                url = compare_url(base_url, [experiment.experiment_id], finished)
                lines.append(f"    compare its {len(finished)} finished run(s): {url}")
    return lines


def compare_lines(configs: list[RunConfig], outcomes: list[RunOutcome], tracker: Tracker) -> list[str]:
    """Per experiment of the sweep, the MLflow UI's compare view of its runs that have results (finished
    now or before), at the address ``bench ui`` serves by default."""
    finished: dict[str, list[str]] = {}
    for config, outcome in zip(configs, outcomes, strict=True):  # one outcome per config, in order
        if outcome.run_id and (outcome.status == "FINISHED" or (outcome.status == "SKIPPED" and outcome.metrics)):
            finished.setdefault(tracker.for_dataset(config.data.name).experiment, []).append(outcome.run_id)
    lines = []
    for experiment, run_ids in finished.items():
        experiment_id = Tracker(tracker.uri, experiment).experiment_id()
        lines.append(
            f"Compare the {len(run_ids)} run(s) of experiment {experiment!r} (with bench ui at {DEFAULT_ADDRESS}): "
            + compare_url(DEFAULT_ADDRESS, [experiment_id], run_ids)
        )
    return lines


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server on ``host``: every address it resolves to is a
    loopback one (``0.0.0.0`` and ``::`` are every interface; a name that does not resolve is not)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def serve_ui(uri: str, host: str, port: int) -> int:
    """Serve until the server exits or a stop signal arrives; either way nothing of it is left running."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    server = subprocess.Popen(command, start_new_session=True)
    stopped = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopped
        stopped = True
        _signal_group(server, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    try:
        code = server.wait()
    finally:
        _signal_group(server, signal.SIGTERM)  # workers the server left behind, if it died on its own
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopped else code


def _signal_group(server: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, sig)
