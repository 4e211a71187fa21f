"""Mixed precision by device capability, checked on the CPU: the choice is a pure function of the flags,
and the CPU itself trains in plain float32 with no loss scaling, so its runs repeat exactly."""

import pytest
import torch

from bench.devices import autocast, autocast_dtype, grad_scaler, mixed_precision, needs_loss_scaling


@pytest.mark.parametrize(
    "device_type,bf16,expected",
    [
        ("cuda", True, torch.bfloat16),  # Ampere and later
        ("cuda", False, torch.float16),  # older GPUs: float16 and a GradScaler
        ("cpu", True, None),
        ("cpu", False, None),
    ],
)
def test_autocast_dtype_follows_the_devices_capability(device_type, bf16, expected):
    dtype = autocast_dtype(device_type, bf16)
    assert dtype == expected
    assert needs_loss_scaling(dtype) == (expected == torch.float16)  # only float16 needs the GradScaler


def test_the_cpu_trains_in_float32_exactly_repeatably_and_unscaled():
    cpu = torch.device("cpu")
    assert mixed_precision(cpu) is None and not grad_scaler(cpu).is_enabled()
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    with autocast(cpu):
        inside = layer(x)
    assert inside.dtype == torch.float32 and torch.equal(inside, layer(x))
    loss = inside.square().sum()
    assert grad_scaler(cpu).scale(loss) is loss  # a disabled scaler hands the loss through untouched
