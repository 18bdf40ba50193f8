"""provenance.json: what made a run (recipe, hashes, masked overrides and config, package versions,
git commit). The same record goes beside every stored model (llmops-provenance.json)."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from llmops.config.lock import config_hash, recipe_hash
from llmops.core import secrets


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("llmops", "hydra-core", "omegaconf", "torch", "transformers", "datasets", "peft",
                 "ray", "boto3", "kubernetes", "jinja2", "codeflare-sdk"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(where: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def mask_overrides(overrides: list[str]) -> list[str]:
    """Overrides as they may be saved: a secret-looking key's value is masked."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        last = key.lstrip("+~").split(".")[-1]
        if sep and value and (secrets.is_secret_key(last) or "oc.env" in value):
            if "oc.env" not in value:
                secrets.remember(value)
                value = secrets.MASK
        out.append(secrets.scrub(f"{key}{sep}{value}"))
    return out


def provenance(cfg: DictConfig, overrides: list[str], recipe_path: Optional[Path] = None) -> dict:
    masked = secrets.mask(cfg)
    return {
        "run_id": str(cfg.run_id),
        "recipe": str(cfg.recipe),
        "recipe_path": str(recipe_path) if recipe_path else None,
        # recipe_hash: the recipe file as written; config_hash: the composed config (labels carry both)
        "recipe_hash": recipe_hash(recipe_path),
        "config_hash": config_hash(masked),
        "overrides": mask_overrides(overrides),
        "versions": package_versions(),
        "git_commit": git_commit(Path(__file__).resolve().parent) or git_commit(Path.cwd()),
        "config": masked,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
