"""Recognising a dataset's folder, so a wrong data root fails at once with the remedy in one line.

A data root that is the PARENT (or a subfolder) of the dataset's folder, e.g. ``--data-root
/work/shared/data`` holding ``isic2017/``, is refused with the folder found named, not used: the data
root is recorded in each run's config, so a run must read exactly the folder it names, and a guess
could pick the wrong one of several copies. The fix is one flag away and the message spells it out.
"""

from __future__ import annotations

from pathlib import Path

from datasets.base import DatasetError
from datasets.registry import DatasetSpec

ROOT_FLAG = "--data-root {path} (--root {path} for bench data)"


def require_layout(spec: DatasetSpec, root: Path | None) -> Path:
    """``root`` when it holds at least part of ``spec``'s layout (the reader then names what is missing);
    otherwise a ``DatasetError`` saying where the dataset is instead, or how to get it."""
    if root is None:
        raise DatasetError(
            f"dataset {spec.name!r} needs a data root, a folder with {spec.layout} directly inside: "
            f"pass {ROOT_FLAG.format(path='DIR')}; {how_to_get(spec, 'DIR')}"
        )
    root = Path(root)
    if not root.is_dir():
        what = "a file" if root.exists() else "it does not exist"
        raise DatasetError(
            f"data root {root} is not a directory ({what}); it should hold {spec.layout}; {how_to_get(spec, root)}"
        )
    if _present(spec, root):
        return root
    found = [folder for folder in _neighbours(root) if _present(spec, folder)]
    if len(found) == 1:
        raise DatasetError(
            f"found {spec.title} in {found[0]}, not directly in {root}: pass {ROOT_FLAG.format(path=found[0])}"
        )
    if found:
        raise DatasetError(
            f"found {spec.title} in {len(found)} folders around {root} ({', '.join(map(str, found))}): "
            f"pass the one you mean as {ROOT_FLAG.format(path='DIR')}"
        )
    raise DatasetError(
        f"no {spec.title} in {root}: expected {spec.layout} directly inside it; {how_to_get(spec, root)}"
    )


def incomplete_layout(spec: DatasetSpec, root: Path) -> str | None:
    """What is missing from a partial layout and how to get the complete one, or None when nothing is."""
    missing = [choices[0] for choices in spec.markers if not any((root / path).exists() for path in choices)]
    if not missing:
        return None
    return (
        f"{root} lacks {', '.join(missing)} of the {spec.title} layout ({spec.layout}); "
        f"for the complete official set: {how_to_get(spec, 'EMPTY_DIR')}"
    )


def how_to_get(spec: DatasetSpec, root: Path | str) -> str:
    if spec.name == "aptos2019":
        return f"'bench data download aptos2019 --root {root}' explains how to get it from Kaggle"
    return f"to download it: bench data download {spec.name} --root {root}"


def _present(spec: DatasetSpec, folder: Path) -> bool:
    return any((folder / path).exists() for choices in spec.markers for path in choices)


def _neighbours(root: Path) -> list[Path]:
    """The folders a user most likely meant: the root's subfolders, then its parent."""
    try:
        children = sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith("."))
    except OSError:
        children = []
    return children + ([root.parent] if root.parent != root else [])
