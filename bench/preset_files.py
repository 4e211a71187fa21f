"""Where the presets live and their names: read without importing torch, so that the command line can
offer them (``--preset``) and answer ``--help`` at once."""

from __future__ import annotations

from pathlib import Path

PRESET_DIR = Path(__file__).with_name("presets")
PRESETS: tuple[str, ...] = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
