"""Helpers for the sweep tests: fresh interpreters that import this checkout (Hydra scans its
plugins once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


def env() -> dict:
    """This environment with the checkout first on PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def compose_and_check(overrides: list[str], checks: str) -> subprocess.CompletedProcess:
    """Compose the tiny app's config (tests/sweeps/data/optuna_app.yaml) with `overrides` in a
    fresh interpreter, then run `checks` (Python lines; `cfg` and `sys` are there)."""
    code = ("import sys\n"
            "from hydra import compose, initialize_config_dir\n"
            f"with initialize_config_dir(config_dir={str(DATA)!r}, version_base='1.3'):\n"
            f"    cfg = compose('optuna_app', overrides={list(overrides)!r}, return_hydra_config=True)\n"
            + checks)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(),
                          timeout=60)
