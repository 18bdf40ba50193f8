"""The manifest of a stored folder (`llmops-manifest.json`): every file's relative path, size and
sha256. A prefix is complete only when its manifest is present: every store writes it last."""

from __future__ import annotations

import hashlib
from pathlib import Path

from llmops.core.errors import LLMOpsError

MANIFEST = "llmops-manifest.json"


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(local: Path) -> dict:
    files = {}
    for p in sorted(local.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(local).as_posix()
            files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return {"version": 1, "files": files}


def verify_dir(local: Path, manifest: dict, where: str) -> None:
    for rel, meta in manifest["files"].items():
        p = local / rel
        if not p.is_file():
            raise LLMOpsError(f"{where}: file '{rel}' listed in {MANIFEST} is missing")
        if p.stat().st_size != meta["size"] or sha256_file(p) != meta["sha256"]:
            raise LLMOpsError(f"{where}: file '{rel}' does not match its sha256 in {MANIFEST}")
