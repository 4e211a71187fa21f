"""Named ablations: each belongs to the method that declares it (``SSLMethod.ablations``), e.g. FG-SSL's
hierarchy ablation; a sweep with ``--ablation NAME`` runs that method once per variant."""

from __future__ import annotations

from typing import Any

from bench.errors import BenchError
from methods import METHOD_SETS, get_method
from methods.base import SSLMethod

_OWNERS: dict[str, type[SSLMethod]] = {
    ablation: cls for cls in map(get_method, METHOD_SETS["all"]) for ablation in cls.ablations
}
ABLATIONS: tuple[str, ...] = tuple(sorted(_OWNERS))


def ablation_method(name: str) -> type[SSLMethod]:
    """The method a named ablation varies."""
    if name not in _OWNERS:
        raise BenchError(f"unknown ablation {name!r}; valid: {', '.join(ABLATIONS)}")
    return _OWNERS[name]


def ablation_variants(name: str, image_size: int) -> dict[str, dict[str, Any]]:
    """Variants of a named ablation that apply at ``image_size``."""
    return ablation_method(name).ablation_variants(name, image_size)
