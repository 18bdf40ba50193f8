"""Where conf/, recipes/ and templates/ live: inside the wheel, or at the repository root."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parents[1]  # the llmops package


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


SCHEMAS_ENV = "LLMOPS_SCHEMAS_DIR"


def schemas_dir() -> Path:
    """CRD schemas (kserve/, kuberay/): $LLMOPS_SCHEMAS_DIR, else the copy llmops ships.

    The shipped copy is the published CRDs as they are (schemas/PROVENANCE.md says which
    commits); a test checks it against ../shared/schemas where that folder exists.
    """
    import os

    env = os.environ.get(SCHEMAS_ENV)
    if env:
        return Path(env).expanduser()
    return _find("schemas")
