"""The Trainer under torchrun: W processes with B/W images each train exactly like one with B.

The parity test launches real processes (``torchrun --nproc-per-node 2``, gloo on 127.0.0.1) that
train every method for two epochs on the synthetic data with ``bench.trainer.Trainer`` (DDP,
global-batch BatchNorm), and compares the per-epoch losses and the final weights and buffers with the
single-process Trainer on the same global batch (float64, 1e-5; see tests/distributed/trainer_parity.py).
The same workers show that rank 0's decisions reach the other ranks. The remaining tests check, in
this process, that one process trains exactly as before and that the launcher is put together right.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from processes import finish

import bench.launch as bench_launch
import bench.process_group as bench_distributed
from bench.launch import launch, torchrun_command, without_option
from bench.process_group import DistributedContext, broadcast_from_main, on_main_then_agree
from bench.trainer import TrainingFailed

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "tests" / "distributed" / "trainer_parity.py"
WORLD_SIZE = 2
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
CPU = torch.device("cpu")


def load_experiment() -> ModuleType:
    """The experiment the workers run (loaded by path: ``tests`` is not a package)."""
    spec = importlib.util.spec_from_file_location("trainer_parity", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


experiment = load_experiment()


def worker_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


@pytest.fixture(scope="module")
def trainer_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every method trained under torchrun, and by one process (computed here while the workers run)."""
    out = tmp_path_factory.mktemp("trainer_parity")
    references: dict[str, Any] = {}
    for attempt in range(2):  # the free port can be taken between choosing and binding it
        workers = subprocess.Popen(
            torchrun_command(WORLD_SIZE, [str(EXPERIMENT), str(out), "float64"]),
            cwd=out,
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        if attempt == 0:
            references = {name: experiment.train(name) for name in experiment.METHOD_NAMES}
        log = finish(workers, timeout=600)
        if workers.returncode == 0 or "address already in use" not in log.lower():
            break
    assert workers.returncode == 0, f"torchrun workers failed (exit {workers.returncode}):\n{log[-4000:]}"
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    return {"references": references, "ranks": ranks}


@pytest.mark.parametrize("name", experiment.METHOD_NAMES)
def test_trainer_on_two_processes_with_half_batches_trains_like_one_process(trainer_runs, name):
    reference = trainer_runs["references"][name]
    rank0, rank1 = (records[name] for records in trainer_runs["ranks"])
    assert len(reference["losses"]) == experiment.EPOCHS
    for epoch, (got, want) in enumerate(zip(rank0["losses"], reference["losses"], strict=True)):
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=TOLERANCE["rtol"], abs=TOLERANCE["atol"]), (epoch, key)
    assert rank0["state"].keys() == reference["state"].keys()
    for key, value in reference["state"].items():
        torch.testing.assert_close(rank0["state"][key], value, **TOLERANCE, msg=lambda m, k=key: f"final {k}: {m}")
    # Every rank reports the global batch's losses and ends with the same weights.
    assert rank1["losses"] == rank0["losses"]
    assert rank1["state"] == {k: experiment.digest(v) for k, v in rank0["state"].items()}


def test_rank_zero_decides_for_every_rank(trainer_runs):
    for records in trainer_runs["ranks"]:
        assert records["broadcast"] == {"sender": 0}


def test_a_failure_on_rank_zero_after_an_epoch_stops_every_rank_there(trainer_runs):
    rank0, rank1 = (records["stop"] for records in trainer_runs["ranks"])
    assert rank0 == {"error": experiment.STOP_MESSAGE, "callback_calls": [0], "epochs": [0]}
    assert rank1 == {"error": experiment.STOP_MESSAGE, "callback_calls": [], "epochs": [0]}  # never logged


def fingerprint(trainer) -> tuple[list[dict[str, float]], list[tuple[str, bytes]]]:
    history = trainer.fit()
    state = [(k, v.numpy().tobytes()) for k, v in trainer.method.state_dict().items()]
    return [stats.losses for stats in history], state


def test_one_process_trains_the_bare_method_and_sync_batchnorm_changes_nothing():
    plain = experiment.make_trainer("barlow", dtype=torch.float32)
    synced = experiment.make_trainer("barlow", dtype=torch.float32, sync_batchnorm=True)
    assert plain.model is plain.method and synced.model is synced.method
    assert not plain.context.enabled and plain.rows == slice(0, experiment.GLOBAL_BATCH)
    assert fingerprint(plain) == fingerprint(synced)  # bit for bit


def test_trainer_refuses_a_global_batch_that_does_not_split_over_the_processes():
    three = DistributedContext(rank=0, world_size=3, local_rank=0, device=CPU, backend="gloo")
    with pytest.raises(ValueError, match="batch size 16 does not split evenly over 3 processes"):
        experiment.make_trainer("barlow", three)


def test_trainer_refuses_a_device_other_than_the_process_groups():
    elsewhere = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("meta"), backend=None)
    with pytest.raises(ValueError, match="not the process group's device"):
        experiment.make_trainer("barlow", elsewhere)


def test_without_a_process_group_rank_zero_is_everyone():
    single = DistributedContext(rank=0, world_size=1, local_rank=0, device=CPU, backend=None)
    value = {"run_id": "abc"}
    assert broadcast_from_main(value, single) is value
    calls: list[int] = []
    on_main_then_agree(single, calls.append)(7)
    assert calls == [7]
    with pytest.raises(TrainingFailed, match="collapsed"):
        on_main_then_agree(single, lambda _: (_ for _ in ()).throw(TrainingFailed("collapsed")))(0)


class Unpicklable(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


def test_an_exception_that_cannot_cross_processes_is_named_instead():
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(Unpicklable(503, "server down")))
    stand_in = bench_distributed._portable(Unpicklable(503, "server down"))
    assert isinstance(stand_in, RuntimeError)
    assert str(stand_in) == "rank 0 failed: Unpicklable: 503: server down"
    failed = TrainingFailed("loss became non-finite")
    assert bench_distributed._portable(failed) is failed


def test_the_launched_processes_do_not_launch_again():
    argv = ["run", "--nproc", "2", "--methods", "simclr", "--nproc=4", "--preset", "smoke"]
    assert without_option(argv, "--nproc") == ["run", "--methods", "simclr", "--preset", "smoke"]


def test_launch_runs_bench_under_torchrun_with_the_threads_split(monkeypatch):
    seen: dict[str, Any] = {}

    class FakeTorchrun:
        def __init__(self, command: list[str], env: dict[str, str]) -> None:
            seen.update(command=command, env=env)

        def wait(self) -> int:
            return 3

    monkeypatch.setattr(bench_launch.subprocess, "Popen", FakeTorchrun)
    assert launch(2, ["run", "--preset", "smoke"], threads=5) == 3
    command = seen["command"]
    assert command[command.index("--nproc-per-node") + 1] == "2"
    assert command[-5:] == ["-m", "bench", "run", "--preset", "smoke"]
    assert seen["env"]["OMP_NUM_THREADS"] == "2"


@pytest.mark.slow
def test_launch_runs_every_rank_and_returns_failure_when_they_fail():
    code = "import sys; from bench.launch import launch; sys.exit(launch(2, ['no-such-command'], threads=2))"
    result = subprocess.run([sys.executable, "-c", code], env=worker_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]  # torchrun's exit code when a rank failed
    assert result.stderr.count("invalid choice: 'no-such-command'") == WORLD_SIZE, result.stderr[-2000:]
