"""Method names -> classes, and the named sets ``--methods`` expands (``all``).

Adding a method is one module in methods/ and one entry in ``SINGLE_METHODS`` below: everything the
harness needs (views, options, search space, fine-tune defaults, display name) is on the class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from methods.backbones import Backbone
from methods.barlow import BarlowTwins
from methods.base import SSLMethod, build_config
from methods.byol import BYOL
from methods.fgssl import FGSSL
from methods.simclr import SimCLR

SINGLE_METHODS: tuple[type[SSLMethod], ...] = (SimCLR, BYOL, BarlowTwins, FGSSL)
METHODS: dict[str, type[SSLMethod]] = {cls.name: cls for cls in SINGLE_METHODS}
# Named sets of method names for ``--methods``: every single method.
METHOD_SETS: dict[str, tuple[str, ...]] = {"all": tuple(METHODS)}


def get_method(name: str) -> type[SSLMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid names: {', '.join(METHODS)}") from None


def build_method(name: str, backbone: Backbone, options: Mapping[str, Any] | None = None) -> SSLMethod:
    """Construct a registered method from loose options (e.g. parsed YAML), validated against its config."""
    cls = get_method(name)
    return cls(backbone, build_config(cls.config_class, options or {}, name))
