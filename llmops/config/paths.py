"""Local paths in a config, made absolute before anything runs or travels to a worker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict

PATH_KEYS = ("paths.output_root", "paths.cache_dir", "storage.root", "storage.mount_path",
             "storage.ca_bundle", "dataset.dir")
MAYBE_LOCAL_KEYS = ("model.name_or_path", "model.tokenizer", "dataset.name")


def absolute_paths(cfg: DictConfig, base: Optional[Path] = None) -> None:
    """Make every local path in `cfg` absolute (against the working directory), in place.

    Workers run elsewhere (Ray sets their working directory to its session folder): a relative
    `storage.root` would put the model there instead of beside the user's outputs.
    """
    base = Path(base or os.getcwd())

    def fix(value: str) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())

    with open_dict(cfg):
        for key in PATH_KEYS:
            v = OmegaConf.select(cfg, key)
            if isinstance(v, str) and v and "://" not in v:
                OmegaConf.update(cfg, key, fix(v))
        for key in MAYBE_LOCAL_KEYS:  # a hub id stays as it is
            v = OmegaConf.select(cfg, key)
            if isinstance(v, str) and v.startswith(("./", "../", "~")):
                OmegaConf.update(cfg, key, fix(v))
        for key in ("dataset.train_files", "dataset.eval_files"):
            v = OmegaConf.select(cfg, key)
            if v:
                OmegaConf.update(cfg, key, [fix(str(x)) for x in v], merge=False)
