"""Reading YAML a user brings (recipes, option files, locks, config sources): clear errors naming
the file, and bounds.

A YAML file is read with a bounded loader before anything else (Hydra included) reads it: a file
over ``MAX_BYTES``, nesting deeper than ``MAX_DEPTH``, or aliases that expand it to more than
``MAX_NODES`` nodes (a "billion laughs" file: a few lines that expand to 10^9 values once a reader
copies the shared subtrees, as OmegaConf does) is refused at once, naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmops.core.errors import LLMOpsError

MAX_BYTES = 1 << 20      # 1 MiB: a recipe or option file is a few KiB
MAX_DEPTH = 64           # nested mappings/lists (after alias expansion)
MAX_NODES = 100_000      # scalars, mappings and lists, every alias counted as its full copy


class YAMLBoundsError(LLMOpsError):
    """A YAML file or text over one of the bounds."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing, and counts what aliases expand to
    before constructing anything."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise YAMLBoundsError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_document(self):
        node = super().compose_document()
        if node is not None:
            nodes, depth = expanded_size(node)
            if depth > MAX_DEPTH:
                raise YAMLBoundsError(f"its aliases expand it to {depth} levels of nesting; "
                                      f"at most {MAX_DEPTH} allowed")
            if nodes > MAX_NODES:
                raise YAMLBoundsError(f"its aliases expand it to {nodes:,} values or more (a "
                                      f"'billion laughs' file?); at most {MAX_NODES:,} allowed")
        return node


def expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(node count, depth) of a composed YAML node graph with every alias expanded; each shared
    node is measured once, so this is fast however large the expansion. A node that contains
    itself (a recursive alias) is refused."""
    memo: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def walk(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise YAMLBoundsError("an alias refers to a node that contains it (a recursive structure)")
        active.add(key)
        children: list = []
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                children += [k, v]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        count, depth = 1, 0
        for ch in children:
            n, d = walk(ch)
            count = min(count + n, MAX_NODES * 1000)  # a bound is all we need to know
            depth = max(depth, d)
        active.discard(key)
        memo[key] = (count, depth + (1 if isinstance(node, yaml.CollectionNode) else 0))
        return memo[key]

    return walk(root)


def load_yaml_text(text: str, where: Any) -> Any:
    """Parse YAML text within the bounds; errors name `where` (a file or a source URI)."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise YAMLBoundsError(f"{where}: larger than {MAX_BYTES:,} bytes; a config file is expected "
                              "to be a few KiB")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except YAMLBoundsError as e:
        raise YAMLBoundsError(f"{where}: refused: {e}") from None
    except RecursionError:
        raise YAMLBoundsError(f"{where}: refused: nested too deeply to read") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise LLMOpsError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None


def read_yaml_text(path: Path) -> str:
    """A YAML file's text, refusing a file over MAX_BYTES before reading it whole."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise LLMOpsError(f"{path}: cannot be read: {e.strerror}") from None
    return bounded_text(raw, path)


def bounded_text(raw: bytes, where: Any) -> str:
    """The text of a config file's bytes (read up to MAX_BYTES + 1), refused when over MAX_BYTES
    or not UTF-8; errors name `where`."""
    if len(raw) > MAX_BYTES:
        raise YAMLBoundsError(f"{where}: larger than {MAX_BYTES:,} bytes; a config file is expected "
                              "to be a few KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LLMOpsError(f"{where}: not UTF-8 text (byte {e.start})") from None


def load_yaml(path: Path) -> Any:
    """Any YAML document of a file, within the bounds (None for an empty file)."""
    return load_yaml_text(read_yaml_text(path), path)


def load_yaml_file(path: Path) -> dict:
    """A YAML file that must hold a mapping (a recipe, an option file), within the bounds."""
    data = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LLMOpsError(f"{path}: expected a YAML mapping of config keys, got {type(data).__name__}")
    return data
