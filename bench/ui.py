"""``bench ui``: the MLflow UI on the harness's store, as a server that stops with the command.

``mlflow ui`` serves from child processes (the web workers and MLflow's job consumers). Run as a plain
child or exec'd in place, a SIGTERM to ``bench ui`` (a service manager, ``kill``, a closed terminal)
stops only the first of them and leaves the rest serving. So the server runs in its own process group
and ``bench ui`` takes the whole group down on any stop signal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys

import mlflow

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def experiment_links(uri: str, base_url: str) -> list[str]:
    """One line per experiment in the store: its name, run count and the URL of its runs table (the UI
    opens an experiment on another tab otherwise)."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    lines = []
    for experiment in client.search_experiments():
        runs = client.search_runs([experiment.experiment_id], max_results=50_000)
        if runs:
            url = f"{base_url}/#/experiments/{experiment.experiment_id}/runs"
            lines.append(f"  {experiment.name} ({len(runs)} runs): {url}")
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
