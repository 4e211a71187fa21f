"""Names a user types (methods, datasets): matched without regard to case, and a near miss answered
with the name that was probably meant, so ``ISIC2017`` runs and a hyphenated method name gets "did you mean"."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from bench.errors import BenchError


def match_name(given: str, valid: Iterable[str], what: str) -> str:
    """The valid name ``given`` stands for (exact, else the one equal to it ignoring case), or a BenchError
    that lists the valid names and, for a near miss, the closest one."""
    names = list(valid)
    if given in names:
        return given
    by_case = {name.lower(): name for name in names}
    if given.lower() in by_case:
        return by_case[given.lower()]
    folded = {_fold(name): name for name in names}
    close = difflib.get_close_matches(_fold(given), list(folded), n=1, cutoff=0.6)
    hint = f" (did you mean {folded[close[0]]!r}?)" if close else ""
    raise BenchError(f"unknown {what} {given!r}{hint}; valid names: {', '.join(names)}")


def _fold(name: str) -> str:
    """Case, hyphens, underscores and spaces do not tell names apart here."""
    return "".join(c for c in name.lower() if c not in "-_ ")
