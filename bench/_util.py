"""Shared helpers for bench/ scripts: timing and the `figure`/`ratio` output lines."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def figure(name: str, value: float, unit: str = "") -> None:
    print(f"figure {name}={value:.4g} {unit}".rstrip())


def ratio(name: str, value: float) -> None:
    print(f"ratio {name}={value:.3g}")


def time_cmd(cmd: list[str], repeat: int = 5, env: dict | None = None) -> float:
    """Median wall time of a command (seconds); fails loudly when the command fails."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    return statistics.median(times)
