"""Faults of processes and files around a sweep, injected for real: ``bench run`` processes signalled
with SIGKILL and SIGTERM (with and without ``--workers``), checkpoint files planted, truncated or
filled with random bytes, a run that fails midway, two processes opening one fresh store at once, and
file systems that fill up or turn read-only. No part of training is mocked."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.ledger import Ledger
from bench.resolve import resolve_tree
from bench.run import execute
from bench.sweep import expand
from bench.tracking import Tracker, TrackingUnavailable
from bench.workers import Terminated, stop_signals

SMOKE = ["--preset", "smoke", "--no-progress"]
SLOW_EPOCHS = ["--set", "data.synthetic_sizes=[256,64,64]"]  # a few seconds per epoch


def bench_command(uri: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench", "run", *SMOKE, "--tracking-uri", uri, *args]


def start(uri: str, cwd: Path, *args: str, threads: int = 1) -> subprocess.Popen:
    """``bench run`` in a session of its own, so that whatever it leaves behind can be found and killed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen(
        bench_command(uri, *args),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    """Its output once it and every process holding its pipes have exited; on a hang, kill them all."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"bench run or a process it started was still running after {timeout} s:\n{err[-3000:]}")


def wait_for(predicate: Callable[[], bool], process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, f"the run ended early: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def store(tmp_path: Path, name: str = "store") -> tuple[str, Path]:
    """A local store's URI and its folder (where the checkpoints live too)."""
    return f"sqlite:///{tmp_path / name / 'mlflow.db'}", tmp_path / name


def checkpoints(folder: Path) -> list[Path]:
    return sorted((folder / "checkpoints").glob("*.pt"))


def runs(uri: str, experiment: str = "synthetic") -> list:
    """The runs of one experiment (without --experiment, bench logs a dataset's runs to its own; a
    --config study's to the file's name)."""
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def run_rows(folder: Path) -> int:
    """How many runs the store holds, read without MLflow (which would create or migrate the store)."""
    try:
        with sqlite3.connect(f"file:{folder / 'mlflow.db'}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


class Payload:
    """What a planted checkpoint holds: unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_planted_checkpoint_never_runs_and_its_run_restarts_in_place(tmp_path):
    uri, folder = store(tmp_path)
    args = ["--methods", "simclr", "--epochs", "2", *SLOW_EPOCHS]
    killed = start(uri, tmp_path, *args)
    wait_for(lambda: bool(checkpoints(folder)), killed)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    (path,) = checkpoints(folder)
    (interrupted,) = runs(uri)
    marker = tmp_path / "payload-ran"
    torch.save({"trainer": Payload(marker), "epoch": 0}, path)  # where the rerun looks for its checkpoint
    out, err = finish(start(uri, tmp_path, *args))
    assert not marker.exists(), "the planted checkpoint's payload ran"
    assert "restarted from epoch 0" in out, err[-2000:]
    lines = [line for line in err.splitlines() if "cannot be loaded" in line]
    assert len(lines) == 1 and "posix.system" in lines[0] and "set aside as" in lines[0], err[-2000:]
    (aside,) = path.parent.glob(f"{path.name}.corrupt-*")
    assert aside.read_bytes()[:2] == b"PK" and not path.exists()
    (finished,) = runs(uri)
    assert finished.info.run_id == interrupted.info.run_id and finished.info.status == "FINISHED"


def test_a_checkpoint_holds_only_what_loads_without_unpickling_code(tmp_path):
    """What the trainer saves (state dicts with int keys, tuples such as AdamW's betas) loads back with
    weights_only; a numpy scalar, which would not, is refused when written rather than at the resume."""
    ledger, identity = Ledger(tmp_path), {"train": {"epochs": 2}}
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    state = {"trainer": {"method": model.state_dict(), "optimizer": optimizer.state_dict()}, "config": identity}
    ledger.save("a", {**state, "epoch": 0, "run_id": "r", "threads": 1})
    loaded = ledger.load("a", identity)
    assert loaded["trainer"]["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    with pytest.raises(TypeError, match=r"checkpoint\['seconds'\] is a float64"):
        ledger.save("b", {**state, "epoch": 0, "run_id": "r", "seconds": np.float64(1.5)})


def smoke_config(**sweep):
    (config,) = expand(resolve_tree("smoke", None, {"methods": ["simclr"], **sweep}))
    return config


@pytest.mark.slow
def test_truncated_and_random_checkpoints_are_set_aside_and_their_runs_restart(tmp_path, capsys):
    uri, folder = store(tmp_path)
    tracker, ledger = Tracker(uri, "synthetic"), Ledger(folder)

    def interrupt(epoch, model):
        raise KeyboardInterrupt  # Ctrl-C after the first epoch's checkpoint

    truncated = smoke_config(seeds=[0])
    with pytest.raises(KeyboardInterrupt):
        execute(truncated, tracker, ledger, progress=False, epoch_hook=interrupt)
    path = ledger.checkpoint_path(truncated.config_hash())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    random = smoke_config(seeds=[1])
    ledger.checkpoint_path(random.config_hash()).write_bytes(os.urandom(4096))
    capsys.readouterr()
    assert main(["run", *SMOKE, "--tracking-uri", uri, "--methods", "simclr", "--seeds", "0", "1"]) == 0
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "set aside as" in line]) == 2, err
    assert len(list((folder / "checkpoints").glob("*.pt.corrupt-*"))) == 2 and not checkpoints(folder)
    assert sorted(r.info.status for r in runs(uri)) == ["FINISHED", "FINISHED"]


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_restarts_the_run_in_place(tmp_path):
    uri, folder = store(tmp_path)
    args = [
        "--methods",
        "simclr",
        "--epochs",
        "1",
        "--set",
        "data.synthetic_sizes=[768,64,64]",
        "--set",
        "data.train_limit=null",
    ]
    killed = start(uri, tmp_path, *args)
    wait_for(lambda: run_rows(folder) == 1, killed)
    time.sleep(1.0)  # into the first epoch, which takes several seconds
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not checkpoints(folder), "killed too late: the first checkpoint was already written"
    (stranded,) = runs(uri)
    assert stranded.info.status == "RUNNING"
    out, err = finish(start(uri, tmp_path, *args))
    assert "restarted from epoch 0" in out, err[-2000:]
    (run,) = runs(uri)
    assert run.info.run_id == stranded.info.run_id and run.info.status == "FINISHED"


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (workers, multiprocessing's resource tracker), from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        for child in children:
            found |= {int(child), *descendants(int(child))}
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def assert_stopped_by_sigterm(process: subprocess.Popen, children: set[int]) -> str:
    """Exit 143 within a minute, one line of its own on stderr, and no process of it left behind."""
    started = time.time()
    out, err = finish(process, timeout=90)  # workers holding the pipes count too
    assert time.time() - started < 60, "SIGTERM did not stop bench run in time"
    assert process.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("bench: stopped by SIGTERM;"), err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    deadline = time.time() + 30
    while any(alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)], "worker processes outlived bench run"
    return out


@pytest.mark.slow
def test_sigterm_stops_a_run_as_ctrl_c_does_and_the_rerun_resumes_at_its_thread_count(tmp_path):
    """Also: a rerun with another OMP_NUM_THREADS resumes at the count the run started with, so it ends
    as an uninterrupted run at that count does."""
    uri, folder = store(tmp_path)
    args = ["--methods", "simclr", "--epochs", "3", *SLOW_EPOCHS]
    stopped = start(uri, tmp_path, *args)
    wait_for(lambda: bool(checkpoints(folder)), stopped)
    stopped.send_signal(signal.SIGTERM)
    assert_stopped_by_sigterm(stopped, set())
    (run,) = runs(uri)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"] == "interrupted (SIGTERM)"
    assert checkpoints(folder), "the checkpoint was not kept"
    out, err = finish(start(uri, tmp_path, *args, threads=2))
    assert "resumed after epoch" in out, err[-2000:]
    assert "resuming with 1 torch thread(s) as it started (this process has 2)" in err
    clean_uri, _ = store(tmp_path, "clean")
    finish(start(clean_uri, tmp_path, *args))
    (resumed,), (clean,) = runs(uri), runs(clean_uri)
    assert resumed.info.status == clean.info.status == "FINISHED"
    final = {k: v for k, v in clean.data.metrics.items() if k.startswith(("knn.", "linear."))}
    assert final and final == {k: resumed.data.metrics[k] for k in final}


@pytest.mark.slow
def test_sigterm_stops_every_worker_marks_their_runs_killed_and_the_rerun_resumes_them(tmp_path):
    uri, folder = store(tmp_path)
    args = ["--methods", "simclr", "--seeds", "0", "1", "--epochs", "3", "--workers", "2", *SLOW_EPOCHS]
    stopped = start(uri, tmp_path, *args)
    wait_for(lambda: len(checkpoints(folder)) == 2, stopped)  # both workers are training
    children = descendants(stopped.pid)
    assert len(children) >= 2
    stopped.send_signal(signal.SIGTERM)
    assert_stopped_by_sigterm(stopped, children)
    stopped_runs = runs(uri)
    assert [r.info.status for r in stopped_runs] == ["KILLED", "KILLED"]
    assert len(checkpoints(folder)) == 2
    out, err = finish(start(uri, tmp_path, *args))
    assert out.count("resumed after epoch") == 2, out + err[-2000:]
    assert {r.info.run_id: r.info.status for r in runs(uri)} == {r.info.run_id: "FINISHED" for r in stopped_runs}


def test_a_stop_signal_during_a_store_call_is_held_until_the_call_returns(tmp_path):
    """Raised inside SQLAlchemy, a stop can leave SQLite locked for the rest of the process, and the run
    then cannot be marked KILLED ("database is locked"): a real SIGTERM sent during a write waits for it."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "x")
    run_id = tracker.start_run("r", {}, {})
    with stop_signals(), pytest.raises(Terminated):
        with tracker.writing("log metrics"):
            os.kill(os.getpid(), signal.SIGTERM)
            tracker.client.log_batch(run_id, metrics=[Metric("m", 1.0, 0, 0)])
        pytest.fail("the stop was not raised when the store call returned")
    tracker.finish(run_id, "KILLED")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.metrics == {"m": 1.0}


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_create_one_fresh_store_together(tmp_path, attempt):
    uri, _ = store(tmp_path)
    both = [start(uri, tmp_path, "--methods", "random_init", "--seeds", str(seed)) for seed in (0, 1)]
    results = [finish(process) for process in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in results]
    assert sorted(r.info.status for r in runs(uri)) == ["FINISHED", "FINISHED"]


@pytest.mark.slow
def test_a_run_that_fails_midway_is_failed_and_the_sweep_goes_on(tmp_path):
    """The weights file of the sweep's second run disappears after the sweep was validated: that run
    fails (FAILED, with the reason), the third runs, and the command exits 1 with the summary."""
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    study = {
        "train": {"epochs": 3},
        "parts": [
            {"methods": ["simclr"]},
            {"methods": ["barlow"], "model": {"weights": str(weights)}},
            {"methods": ["random_init"]},
        ],
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    uri, folder = store(tmp_path)
    sweep = start(uri, tmp_path, "--config", str(tmp_path / "study.yaml"), *SLOW_EPOCHS)
    wait_for(lambda: bool(checkpoints(folder)), sweep)  # the first run is training
    weights.unlink()
    out, err = finish(sweep)
    assert sweep.returncode == 1, err[-2000:]
    assert "3 run(s): 1 FAILED, 2 FINISHED" in out
    logged = runs(uri, "study")  # the study file's name
    status = {r.data.tags["method"]: (r.info.status, r.data.tags.get("failure_reason", "")) for r in logged}
    assert status["simclr"][0] == status["random_init"][0] == "FINISHED"
    assert status["barlow"][0] == "FAILED" and "No such file or directory" in status["barlow"][1], status
    assert not checkpoints(folder)


@pytest.mark.slow
def test_an_error_after_a_checkpoint_fails_the_run_and_discards_its_checkpoint(tmp_path):
    uri, folder = store(tmp_path)
    tracker, ledger = Tracker(uri, "synthetic"), Ledger(folder)

    def broken_hook(epoch, model):
        raise RuntimeError("the epoch hook broke")

    outcome = execute(smoke_config(), tracker, ledger, progress=False, epoch_hook=broken_hook)
    assert outcome.status == "FAILED" and not checkpoints(folder)
    run = tracker.client.get_run(outcome.run_id)
    assert run.info.status == "FAILED"
    reason = run.data.tags["failure_reason"]
    assert reason.startswith("RuntimeError: the epoch hook broke (test_process_faults.py:"), reason
    assert execute(smoke_config(seeds=[1]), tracker, ledger, progress=False).status == "FINISHED"


@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_store_is_refused(uri, capsys):
    assert main(["run", *SMOKE, "--tracking-uri", uri, "--methods", "random_init"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in-memory store whose runs vanish when bench exits" in err[0]


@pytest.fixture
def mount(tmp_path):
    """Mount a real tmpfs of the given size (MB) at a folder; needs root (skips otherwise)."""
    mounted: list[Path] = []

    def make(folder: Path, megabytes: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder: Path, options: str) -> None:
    """``mount -o remount,<options>``, retried while a checkpoint is being written (the mount is busy)."""
    deadline = time.time() + 60
    while subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], capture_output=True).returncode:
        assert time.time() < deadline, f"cannot remount {folder} {options}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_full_store_is_reported_by_its_root_cause_and_the_run_resumes(tmp_path, mount):
    """The SQLite store fills up while the checkpoints (on a disk of their own) still have room."""
    folder = mount(tmp_path / "store", 256)  # once emptied, room for the run's artifacts
    mount(folder / "checkpoints", 1024)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    args = ["--methods", "simclr", "--epochs", "3", *SLOW_EPOCHS]
    filled = start(uri, tmp_path, *args)
    wait_for(lambda: bool(checkpoints(folder)), filled)
    filler = folder / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    out, err = finish(filled)
    assert filled.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("bench: error: cannot log metrics in the tracking store") and last.endswith(
        "database or disk is full"
    ), last
    assert "autoflush" not in err and "Traceback" not in err, err[-3000:]
    filler.unlink()
    out, err = finish(start(uri, tmp_path, *args))
    assert "resumed after epoch" in out, err[-2000:]
    assert [r.info.status for r in runs(uri)] == ["FINISHED"]


@pytest.mark.slow
def test_a_read_only_checkpoint_folder_is_not_told_to_free_space(tmp_path, mount):
    uri, folder = store(tmp_path)
    disk = mount(folder / "checkpoints", 1024)
    args = ["--methods", "simclr", "--epochs", "3", *SLOW_EPOCHS]
    blocked = start(uri, tmp_path, *args)
    wait_for(lambda: bool(checkpoints(folder)), blocked)
    remount(disk, "ro")
    out, err = finish(blocked)
    assert blocked.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "Read-only file system" in last and f"make {disk} writable" in last and "free space" not in last, last
    remount(disk, "rw")
    out, err = finish(start(uri, tmp_path, *args))
    assert "resumed after epoch" in out, err[-2000:]


@pytest.mark.slow
def test_a_read_only_store_is_reported_by_its_root_cause(tmp_path, mount):
    folder = mount(tmp_path / "store", 16)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    create = f"from bench.tracking import Tracker; print(Tracker({uri!r}, 'x').start_run('r', {{}}, {{}}))"
    run_id = subprocess.run([sys.executable, "-c", create], capture_output=True, text=True, check=True).stdout
    remount(folder, "ro")
    with pytest.raises(TrackingUnavailable) as failure:
        Tracker(uri, "x").log_metrics(run_id.strip(), {"train.loss": 1.0}, step=0)  # fails in an autoflush
    message = str(failure.value)
    assert message.endswith("attempt to write a readonly database") and "free space" not in message, message
