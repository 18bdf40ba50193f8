"""The config view every data module shares: the source name, the splits, the cache root, the
held-out validation rows. Only the standard library."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

CACHE_VERSION = 2  # bump when what a source yields or the on-disk layout or the grouping changes
SPLITS = ("train", "validation")


def val(x: Any) -> Any:
    """An enum's value, anything else as is."""
    return getattr(x, "value", x)


def source_name(cfg) -> str:
    return str(val(cfg.dataset.source))


def group_by(cfg) -> str:
    return str(val(cfg.dataset.group_by))


def expand(path) -> Path:
    """A config path with `~` expanded (not resolved)."""
    return Path(os.path.expanduser(str(path)))


def cache_root(cfg) -> Path:
    return expand(cfg.paths.cache_dir).resolve()


def holdout_settings(cfg) -> dict:
    """The settings that choose the held-out validation rows."""
    return {"eval_fraction": float(cfg.dataset.eval_fraction), "seed": int(cfg.seed)}


def holdout(rows: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic split: ceil(fraction * n) rows chosen by `seed` go to validation (order kept)."""
    n = len(rows)
    if n < 2:
        return rows, []
    k = min(n - 1, max(1, int(round(fraction * n + 0.4999999))))
    held = set(random.Random(seed).sample(range(n), k))
    train = [r for i, r in enumerate(rows) if i not in held]
    val_rows = [r for i, r in enumerate(rows) if i in held]
    return train, val_rows


def holdout_rows(cfg, rows: list[str]) -> dict[str, list[str]]:
    """{"train", "validation"}: dataset.eval_fraction of `rows` held out by the run's seed."""
    train, val_rows = holdout(rows, float(cfg.dataset.eval_fraction), int(cfg.seed))
    return {"train": train, "validation": val_rows}
