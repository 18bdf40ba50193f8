"""Kubernetes objects as files: one YAML file per object, named by position, kind and name."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmops.core.io import atomic_write_text


def object_filename(i: int, obj: dict) -> str:
    kind = str(obj.get("kind", "object")).lower()
    name = str(obj.get("metadata", {}).get("name", "unnamed"))
    return f"{i:02d}-{kind}-{name}.yaml"


def write_objects(objects: list[dict], out: Path) -> list[Path]:
    """Each object as its own YAML file in `out` (written to a temp name, then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, o in enumerate(objects):
        p = out / object_filename(i, o)
        atomic_write_text(p, yaml.safe_dump(o, sort_keys=False))
        paths.append(p)
    return paths
