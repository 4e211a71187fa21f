"""Device choice and mixed precision: CUDA with bfloat16 (else float16) autocast, plain float32 on the CPU."""

from __future__ import annotations

import contextlib
import functools

import torch

from bench.errors import BenchError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was requested but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def place(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move a network to ``device`` in channels_last layout, the layout ``BatchAugment`` hands it images in:
    oneDNN's fast kernels on the CPU (NCHW max pooling alone is about 10x slower) and tensor cores on CUDA."""
    return module.to(device, memory_format=torch.channels_last)


def autocast_dtype(device_type: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype for a device, from what it supports: bfloat16 on a GPU that has it natively
    (float32's exponent range, so no loss scaling), else float16 (with a GradScaler); None on the CPU,
    where float32 keeps runs exactly repeatable."""
    if device_type != "cuda":
        return None
    return torch.bfloat16 if bf16_supported else torch.float16


@functools.lru_cache(maxsize=8)
def mixed_precision(device: torch.device) -> torch.dtype | None:
    """``autocast_dtype`` for this machine's ``device`` (asked once: autocast is entered every step).
    Emulated bfloat16 (pre-Ampere GPUs) counts as unsupported: it is slower than float16 there."""
    native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return autocast_dtype(device.type, native)


def needs_loss_scaling(dtype: torch.dtype | None) -> bool:
    """float16 gradients underflow without a GradScaler; bfloat16 and float32 ones do not."""
    return dtype == torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = mixed_precision(device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Enabled only under float16 autocast; a disabled scaler passes the loss and the step through."""
    return torch.amp.GradScaler(device.type, enabled=needs_loss_scaling(mixed_precision(device)))
