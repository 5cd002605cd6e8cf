"""Where things are: the repository root, the conf folder, and relative paths in configs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"


def resolve(path: str) -> str:
    """A config path as a usable location: URIs stay as they are, relative paths are taken
    from the current folder when they exist there, else from the repository root."""
    if "://" in path or Path(path).is_absolute():
        return path
    here = Path.cwd() / path
    return str(here if here.exists() else ROOT / path)
