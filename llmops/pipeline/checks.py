"""Every config check of a run, gathered: the config layer's own (interpolations, stages) and each
domain package's checks of its own section. All problems are reported at once."""

from __future__ import annotations

from typing import Any, Optional

from omegaconf import DictConfig

from llmops.clusters import checks as cluster_checks
from llmops.config import compose as _compose
from llmops.config import validate as _validate
from llmops.data import checks as data_checks
from llmops.serving import checks as serving_checks
from llmops.storage import checks as storage_checks
from llmops.training import checks as training_checks

CHECKS = (data_checks.check, training_checks.check, storage_checks.check, cluster_checks.check,
          serving_checks.check)


def compose(recipe_ref: str, overrides: Optional[list[str]] = None, *, check: bool = True):
    """Compose a recipe and, with `check`, run every check. Returns (cfg, source)."""
    return _compose.compose(recipe_ref, overrides, check=check, checks=CHECKS)


def validate(cfg: DictConfig, source: Any = None) -> None:
    """Raise ConfigError listing every problem of a composed config."""
    _validate.validate(cfg, source, CHECKS)
