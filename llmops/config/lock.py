"""Recipe hashes and the locked-recipe format.

A *locked* recipe is written from a finished run: the run's composed config (secrets masked,
``${oc.env:...}`` references kept as references) with every default spelled out, under a
``defaults: [_llmops_schema, _self_]`` list so that no option file can change it later. Its header
carries the package versions and a content hash; ``llmops run`` refuses a locked recipe whose
content no longer matches its hash, and one written by another llmops major version unless
``LLMOPS_ALLOW_VERSION_MISMATCH=1`` is set.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from llmops.core.errors import LLMOpsError

LOCK_MARK = "# llmops-lock: "
ALLOW_MISMATCH_ENV = "LLMOPS_ALLOW_VERSION_MISMATCH"
# keys a locked recipe leaves open: a new run gets a new id (and so a new storage prefix)
UNLOCKED = {"run_id": "${run_name}-${now:%Y%m%d-%H%M%S}"}


# ------------------------------------------------------------------------------------- hashing
def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(obj: Any) -> str:
    return "sha256:" + hashlib.sha256(_canonical(obj).encode()).hexdigest()


def recipe_hash(path: Optional[Path]) -> Optional[str]:
    """Short hash of a recipe file's content (what labels and provenance carry)."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest()[:12]


def config_hash(masked_cfg: dict) -> str:
    """Short hash of a composed, masked config, without the keys that differ per run."""
    body = {k: v for k, v in masked_cfg.items() if k not in ("run_id", "hydra")}
    return hashlib.sha256(_canonical(body).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------- locking
def read_lock(path: Path) -> Optional[dict]:
    """The lock header of a recipe file, or None when it is not a locked recipe."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(LOCK_MARK):
                    try:
                        return json.loads(line[len(LOCK_MARK):])
                    except json.JSONDecodeError as e:
                        raise LLMOpsError(f"{path}: the llmops-lock header is not valid JSON ({e})") from None
                if not line.startswith("#"):
                    break
    except OSError:
        return None
    return None


def is_locked(path: Path) -> bool:
    return read_lock(path) is not None


def _body(path: Path) -> dict:
    from llmops.core.yamlio import load_yaml_file

    return load_yaml_file(path)


def check_lock(path: Path) -> None:
    """Raise when a locked recipe was edited after locking or comes from another major version."""
    lock = read_lock(path)
    if lock is None:
        return
    want = lock.get("hash")
    got = content_hash(_body(path))
    if want != got:
        raise LLMOpsError(
            f"{path}: locked recipe content does not match its hash (header says {want}, content is "
            f"{got}); it was edited after `llmops recipes lock`. Lock the run again, or copy it "
            f"without the '# llmops-lock:' line to make an ordinary recipe"
        )
    from llmops import __version__

    theirs = str(lock.get("llmops_version", ""))
    if theirs.split(".")[0] != __version__.split(".")[0] and os.environ.get(ALLOW_MISMATCH_ENV) != "1":
        raise LLMOpsError(
            f"{path}: locked with llmops {theirs}, this is llmops {__version__} (another major "
            f"version); set {ALLOW_MISMATCH_ENV}=1 to run it anyway"
        )
