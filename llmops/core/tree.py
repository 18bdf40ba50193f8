"""Walking nested config trees (plain dicts and lists, as YAML or OmegaConf containers give them)."""

from __future__ import annotations

from typing import Any, Iterator


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


def child_nodes(node: Any, *, root: bool = False) -> Iterator[tuple[Any, Any]]:
    """(key, child node) of an OmegaConf DictConfig, (index, child node) of a ListConfig, in
    order and raw: nothing is resolved, a child may be an interpolation, a container or None.
    With `root`, a `hydra` key (Hydra's own section of a composed config) is left out. Any
    other node has no children."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(node, DictConfig):
        for k in node.keys():
            if not (root and k == "hydra"):
                yield k, node._get_node(k)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            yield i, node._get_node(i)


def raw_items(node: Any, prefix: str = ""):
    """(dotted key, raw unresolved value) for every leaf of an OmegaConf node (`hydra` left out)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        for k, child in child_nodes(node, root=prefix == ""):
            yield from raw_items(child, f"{prefix}{k}" if not prefix else f"{prefix}.{k}")
    elif OmegaConf.is_list(node):
        for i, child in child_nodes(node):
            yield from raw_items(child, f"{prefix}[{i}]")
    elif node is not None:
        yield prefix, node._value()
