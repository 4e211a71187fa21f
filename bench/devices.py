"""Device choice and mixed precision: CUDA with float16 autocast where present, plain float32 on the CPU."""

from __future__ import annotations

import contextlib

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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """float16 autocast on CUDA; nothing on the CPU, where float32 keeps runs exactly repeatable."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
