"""Distributed training: W processes with B/W images each must train exactly like one with B.

The parity tests launch real processes (``torchrun``, gloo on 127.0.0.1) running every method inside
DistributedDataParallel with global-batch BatchNorm, and compare each step's loss, every gradient and
the final weights and BatchNorm buffers with one plain process on the whole batch (float64, 1e-5).
A run with the world-size correction removed must fail that comparison, by exactly 1/W.
The other tests check, in this process, that without a process group nothing changes.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from processes import finish
from torch.nn.modules.batchnorm import _BatchNorm

from bench.launch import torchrun_command, torchrun_executable
from bench.process_group import DistributedContext, local_batch_size, rank_slice, wrap
from methods import distributed
from methods.base import SSLBatch, run_training_steps
from methods.jigsaw import jigsaw

ROOT = Path(__file__).resolve().parents[1]
WORKER_DIR = ROOT / "tests" / "distributed"
WORLD_SIZE = 2
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def load_parity() -> ModuleType:
    """The experiment the workers run (loaded by path: ``tests`` is not a package)."""
    spec = importlib.util.spec_from_file_location("parity_experiment", WORKER_DIR / "parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


parity = load_parity()


def launch_workers(out: Path, runs: list[str]) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = torchrun_command(WORLD_SIZE, [str(WORKER_DIR / "parity_worker.py"), str(out), *runs])
    return subprocess.Popen(
        command, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every method (and the uncorrected control) under torchrun, and the single-process references,
    computed here while the workers run."""
    runs = [*parity.METHOD_NAMES, "barlow:uncorrected"]
    out = tmp_path_factory.mktemp("parity")
    for attempt in range(2):  # the free port can be taken between choosing and binding it
        workers = launch_workers(out, runs)
        if attempt == 0:
            references = {name: parity.run(parity.build(name)) for name in parity.METHOD_NAMES}
        log = finish(workers, timeout=600)
        if workers.returncode == 0 or "address already in use" not in log.lower():
            break
    assert workers.returncode == 0, f"torchrun workers failed (exit {workers.returncode}):\n{log[-4000:]}"
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    return {"references": references, "ranks": ranks}


def assert_same_records(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    torch.testing.assert_close(torch.tensor(actual["losses"]), torch.tensor(expected["losses"]), **TOLERANCE)
    for step, (got, want) in enumerate(zip(actual["grads"], expected["grads"], strict=True)):
        for name, grad in want.items():
            assert (got[name] is None) == (grad is None), f"step {step}: {name} has a gradient in one run only"
            if grad is not None:
                torch.testing.assert_close(
                    got[name], grad, **TOLERANCE, msg=lambda m, n=name, s=step: f"step {s} {n}: {m}"
                )
    for key, value in expected["state"].items():
        torch.testing.assert_close(actual["state"][key], value, **TOLERANCE, msg=lambda m, k=key: f"final {k}: {m}")


@pytest.mark.parametrize("name", parity.METHOD_NAMES)
def test_two_processes_with_half_batches_train_like_one_process(parity_runs, name):
    reference = parity_runs["references"][name]
    rank0, rank1 = (records[name] for records in parity_runs["ranks"])
    assert len(reference["losses"]) == parity.BATCHES[name] * len(parity.build(name).step_names)
    assert_same_records(rank0, reference)
    # After DDP's averaging every rank holds the same gradients and reports the same (global) loss.
    assert rank0["losses"] == rank1["losses"]
    for got, other in zip(rank0["grads"], rank1["grads"], strict=True):
        assert {n: None if g is None else parity.digest(g) for n, g in got.items()} == other
    assert {k: parity.digest(v) for k, v in rank0["state"].items()} == rank1["state"]


def test_parity_fails_without_the_world_size_correction(parity_runs):
    """The negative control: a gather whose backward drops the other ranks' share (lightly #1528).
    The forward is right, so the loss still matches; every gradient is 1/W of the true one."""
    reference = parity_runs["references"]["barlow"]
    broken = parity_runs["ranks"][0]["barlow:uncorrected"]
    torch.testing.assert_close(torch.tensor(broken["losses"]), torch.tensor(reference["losses"]), **TOLERANCE)
    with pytest.raises(AssertionError):
        assert_same_records(broken, reference)
    for name, grad in reference["grads"][0].items():
        torch.testing.assert_close(broken["grads"][0][name], grad / WORLD_SIZE, **TOLERANCE)


def small_batch(seed: int = 0, n: int = 6, size: int = 16) -> SSLBatch:
    g = torch.Generator().manual_seed(seed)
    return SSLBatch(
        torch.randn(n, 3, size, size, generator=g),
        torch.randn(n, 3, size, size, generator=g),
        torch.Generator().manual_seed(seed),
    )


def test_without_a_process_group_every_helper_is_the_identity():
    assert distributed.world_size() == 1 and distributed.rank() == 0
    x = torch.randn(4, 3)
    assert distributed.gather(x) is x
    assert distributed.rank_rows(4) == slice(0, 4)
    images = torch.randn(4, 3, 16, 16)
    expected = jigsaw(images, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(distributed.sharded_jigsaw(images, 4, generator=torch.Generator().manual_seed(1)), expected)


@pytest.mark.parametrize("per_sample", [True, False])
def test_each_rank_shuffles_its_rows_as_the_single_process_batch_does(monkeypatch, per_sample):
    world, local, n = 3, 2, 4
    images = torch.randn(world * local, 3, 16, 16)
    single = torch.Generator().manual_seed(7)
    expected = jigsaw(images, n, generator=single, per_sample=per_sample)
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    parts = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        generator = torch.Generator().manual_seed(7)
        rows = distributed.rank_rows(local)
        parts.append(distributed.sharded_jigsaw(images[rows], n, generator=generator, per_sample=per_sample))
        # Every rank leaves the shared generator where the single process left it.
        assert torch.equal(generator.get_state(), single.get_state())
    assert torch.equal(torch.cat(parts), expected)


def make_method(name: str):
    return parity.build(name).float()


def test_sync_batchnorm_conversion_keeps_parameters_checkpoints_and_single_process_numerics():
    plain = make_method("fgssl")
    converted = copy.deepcopy(plain)
    params_before = [id(p) for p in converted.parameters()]
    keys_before = list(converted.state_dict())
    assert distributed.convert_sync_batchnorm(converted) is converted
    bns = [m for m in converted.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(isinstance(m, distributed.GlobalBatchNorm) for m in bns)
    assert [id(p) for p in converted.parameters()] == params_before  # an optimizer built earlier still works
    assert list(converted.state_dict()) == keys_before  # checkpoints load either way
    steps = zip(plain.training_steps(small_batch(size=32)), converted.training_steps(small_batch(size=32)), strict=True)
    for a, b in steps:
        assert torch.equal(a.loss, b.loss)
    for (key, a), b in zip(plain.state_dict().items(), converted.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_run_training_steps_on_a_bare_method_is_training_steps():
    batch = small_batch(size=32)
    direct = [(s.name, s.loss) for s in make_method("fgssl").training_steps(batch)]
    driven = [(s.name, s.loss) for s in run_training_steps(make_method("fgssl"), small_batch(size=32))]
    assert [n for n, _ in driven] == [n for n, _ in direct] == ["level1", "level2", "level3", "concat"]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(direct, driven, strict=True))


def test_one_process_trains_the_bare_method():
    method = make_method("simclr")
    ctx = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    assert wrap(method, ctx) is method and ctx.is_main and not ctx.enabled


def test_the_global_batch_must_split_evenly():
    assert local_batch_size(8, 2) == 4
    ctx = DistributedContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"), backend="gloo")
    assert rank_slice(8, ctx) == slice(4, 8)
    with pytest.raises(ValueError, match="batch size 6 does not split evenly over 4 processes"):
        local_batch_size(6, 4)


def test_torchrun_command_uses_this_environment_and_a_local_rendezvous():
    command = torchrun_command(2, ["-m", "bench", "run"], port=29512)
    assert command[: len(torchrun_executable())] == torchrun_executable()
    assert torchrun_executable() in (
        [str(Path(sys.executable).parent / "torchrun")],
        [sys.executable, "-m", "torch.distributed.run"],
    )
    tail = command[len(torchrun_executable()) :]
    assert tail == [
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        "29512",
        "-m",
        "bench",
        "run",
    ]
    with pytest.raises(ValueError, match="at least 1"):
        torchrun_command(0, ["x.py"])
