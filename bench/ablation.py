"""Named sets of FG-SSL variants: the hierarchy ablations PAPER.md implies, as data."""

from __future__ import annotations

from typing import Any

from bench.errors import BenchError

GRID_SETS: tuple[tuple[int, int, int], ...] = ((32, 16, 8), (16, 8, 4), (8, 4, 2))

# name -> FG-SSL options that differ from the full method (levels 1-3 + concat, progressive).
HIERARCHY: dict[str, dict[str, Any]] = {
    "full": {},
    "levels-1": {"levels": [1], "concat": False},
    "levels-12": {"levels": [1, 2], "concat": False},
    "levels-123": {"levels": [1, 2, 3], "concat": False},
    "joint": {"schedule": "joint"},
    "embed-128": {"embed_dim": 128},
    "bt-fgssl-code": {"bt_variant": "fgssl_code"},
    "per-batch-permutation": {"per_batch_permutation": True},
}

ABLATIONS = ("hierarchy",)


def ablation_variants(name: str, image_size: int) -> dict[str, dict[str, Any]]:
    """Variants of a named ablation; grid sets are included where they divide the image size."""
    if name not in ABLATIONS:
        raise BenchError(f"unknown ablation {name!r}; valid: {', '.join(ABLATIONS)}")
    variants = dict(HIERARCHY)
    for grids in GRID_SETS:
        if all(image_size % n == 0 and image_size // n >= 2 for n in grids):
            variants["grids-" + "-".join(map(str, grids))] = {"grids": list(grids)}
    return variants
