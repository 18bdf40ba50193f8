"""Where conf/, recipes/ and templates/ live: inside the wheel, or at the repository root."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    bundled = _PKG / "_bundled" / name
    if bundled.is_dir():
        return bundled
    repo = _PKG.parent / name
    if repo.is_dir():
        return repo
    raise FileNotFoundError(f"llmops data folder '{name}' not found in {bundled} or {repo}")


def conf_dir() -> Path:
    return _find("conf")


def recipes_dir() -> Path:
    return _find("recipes")


def templates_dir() -> Path:
    return _find("templates")
