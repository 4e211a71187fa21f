"""Waiting on process groups that tests launch (torchrun and its workers)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def finish(process: subprocess.Popen, timeout: float) -> str:
    """The launcher's output once it exits; on a hang, kill its process group (torchrun and workers)."""
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log = process.communicate()[0]
        pytest.fail(f"torchrun workers did not finish within {timeout} s:\n{log[-4000:]}")
