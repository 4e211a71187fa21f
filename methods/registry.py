"""Method names -> classes, and the named sets ``--methods`` expands (``all``, ``paper``).

Adding a method is one module in methods/ and one entry in ``SINGLE_METHODS`` below: everything the
harness needs (views, options, search space, fine-tune defaults, display name) is on the class. Any
one-step method X also exists as ``X+fgssl`` (methods/compose.py); the paper's are registered up front.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from methods.backbones import Backbone
from methods.barlow import BarlowTwins
from methods.base import SSLMethod, build_config
from methods.byol import BYOL
from methods.compose import compose, default_step_names
from methods.fgssl import FGSSL
from methods.rotation import Rotation
from methods.simclr import SimCLR
from methods.simsiam import SimSiam

SINGLE_METHODS: tuple[type[SSLMethod], ...] = (SimCLR, BYOL, BarlowTwins, FGSSL, SimSiam, Rotation)
_SINGLES: dict[str, type[SSLMethod]] = {cls.name: cls for cls in SINGLE_METHODS}
# What FG-SSL can be added to: the single methods that take one step per batch.
COMPOSABLE: tuple[str, ...] = tuple(
    name for name, cls in _SINGLES.items() if cls is not FGSSL and len(default_step_names(cls)) == 1
)
_COMPOSITES = ("rotation", "simsiam", "barlow", "simclr", "byol")
METHODS: dict[str, type[SSLMethod]] = {
    **_SINGLES,
    **{f"{name}+fgssl": compose(_SINGLES[name], FGSSL) for name in _COMPOSITES},
}
# Named sets of method names for ``--methods``: every single method, and the paper's own comparison
# (PAPER.md: Rotation, SimSiam and Barlow Twins, each without and with FG-SSL).
METHOD_SETS: dict[str, tuple[str, ...]] = {
    "all": tuple(_SINGLES),
    "paper": ("rotation", "simsiam", "barlow", "rotation+fgssl", "simsiam+fgssl", "barlow+fgssl"),
}


def get_method(name: str) -> type[SSLMethod]:
    """The class of a registered method, or of ``X+fgssl`` for any one-step single method X."""
    if name in METHODS:
        return METHODS[name]
    first, plus, second = name.partition("+")
    if plus and first in _SINGLES and second == FGSSL.name:
        if first not in COMPOSABLE:
            raise ValueError(
                f"cannot compose {name!r}: FG-SSL can be added only to a one-step method ({', '.join(COMPOSABLE)})"
            )
        return compose(_SINGLES[first], FGSSL)
    raise ValueError(
        f"unknown method {name!r}; valid names: {', '.join(METHODS)} (or X+fgssl, X one of {', '.join(COMPOSABLE)})"
    )


def build_method(name: str, backbone: Backbone, options: Mapping[str, Any] | None = None) -> SSLMethod:
    """Construct a registered method from loose options (e.g. parsed YAML), validated against its config;
    a composite's options are ``{part name: that part's options}``."""
    cls = get_method(name)
    return cls(backbone, build_config(cls.config_class, options or {}, name))
