"""Walking nested config trees (plain dicts and lists, as YAML or OmegaConf containers give them)."""

from __future__ import annotations

from typing import Any


def flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """[(dotted key, leaf value)] of a nested mapping; an empty mapping inside it is a leaf, an
    empty mapping at the top has no keys at all."""
    if isinstance(d, dict) and not d and not prefix:
        return []
    if isinstance(d, dict) and d:
        out = []
        for k, v in d.items():
            out.extend(flatten(v, f"{prefix}{k}."))
        return out
    return [(prefix[:-1], d)]


def raw_items(node: Any, prefix: str = ""):
    """(dotted key, raw unresolved value) for every leaf of an OmegaConf node (`hydra` left out)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        for k in node.keys():
            if prefix == "" and k == "hydra":
                continue
            yield from raw_items(node._get_node(k), f"{prefix}{k}" if not prefix else f"{prefix}.{k}")
    elif OmegaConf.is_list(node):
        for i in range(len(node)):
            yield from raw_items(node._get_node(i), f"{prefix}[{i}]")
    elif node is not None:
        yield prefix, node._value()
