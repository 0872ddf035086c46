"""The built-in scenarios as TOML files (package data), in the format of
tracer/process/scenario_file.py. `trace-halfclose scenarios --show NAME` prints one,
to copy and edit."""
from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).resolve().parent


def builtin_path(name: str) -> Path:
    return DIR / f"{name}.toml"
