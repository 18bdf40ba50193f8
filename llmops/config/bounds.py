"""Input bounds, checked before Hydra reads anything: every config file a composition can reach
and every command-line override.

Hydra loads a recipe and the option files its defaults lists name with its own YAML reader, and
OmegaConf copies what aliases share: a "billion laughs" option file would take all memory there.
So the files are walked first, the way Hydra walks them (the recipe, each defaults entry, each
group override), and read with the bounded loader of llmops.core.yamlio; a file that is too large,
nested too deeply or expands too far is refused naming it. S3 sources are bounded where they are
read (the S3 config source and the recipe download use the same loader).

An override is parsed by Hydra's grammar: its length, bracket nesting and the number of values a
sweep expands to are bounded too.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from llmops.core.errors import ConfigError
from llmops.core.yamlio import load_yaml_file

MAX_OVERRIDE_CHARS = 4096   # one key=value
MAX_OVERRIDE_NESTING = 16   # [ { ( inside one override value
MAX_OVERRIDES = 512
MAX_SWEEP_VALUES = 10_000   # values one sweep override may expand to
MAX_CONFIG_FILES = 512      # files one composition may reach through defaults lists
CMDLINE = "command line"


def override_problems(overrides: Iterable[str]) -> list[str]:
    """Overrides over a bound (before Hydra's parser sees them)."""
    overrides = list(overrides)
    if len(overrides) > MAX_OVERRIDES:
        return [f"{CMDLINE}: {len(overrides)} overrides; at most {MAX_OVERRIDES} allowed"]
    problems = []
    for o in overrides:
        shown = o if len(o) <= 60 else o[:60] + "..."
        if len(o) > MAX_OVERRIDE_CHARS:
            problems.append(f"{CMDLINE}: '{shown}' is {len(o):,} characters; an override is at most "
                            f"{MAX_OVERRIDE_CHARS:,}")
        elif nesting(o) > MAX_OVERRIDE_NESTING:
            problems.append(f"{CMDLINE}: '{shown}' nests brackets {nesting(o)} deep; at most "
                            f"{MAX_OVERRIDE_NESTING} allowed")
    return problems


def nesting(text: str) -> int:
    """Deepest nesting of [ { ( outside quotes."""
    depth = deepest = 0
    quote: Optional[str] = None
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]})":
            depth = max(0, depth - 1)
    return deepest


def sweep_values(override: Any) -> list:
    """The values of a parsed (Hydra) override, a sweep's expanded, at most MAX_SWEEP_VALUES."""
    if not override.is_sweep_override():
        return [override.value()]
    values = list(itertools.islice(override.sweep_iterator(), MAX_SWEEP_VALUES + 1))
    if len(values) > MAX_SWEEP_VALUES:
        raise ConfigError([f"{CMDLINE}: '{override.input_line}' sweeps over more than "
                           f"{MAX_SWEEP_VALUES:,} values"])
    return values


# ------------------------------------------------------------------------------- config files
def config_files(recipe: Path, overrides: Iterable[str], roots: list[Path]) -> Iterator[Path]:
    """Every local config file the composition of `recipe` with `overrides` can read, each read
    (bounded) as it is reached; `roots` are the local config roots, first wins (Hydra's search
    path). Raises LLMOpsError naming the first file over a bound."""
    seen: set[Path] = set()
    todo: list[tuple[Path, str]] = [(recipe, "")]
    for group, option in _override_choices(overrides):
        todo += [(p, group) for p in _lookup(roots, f"{group}/{option}")]
    while todo:
        path, group = todo.pop(0)
        path = path.resolve()
        if path in seen:
            continue
        seen.add(path)
        if len(seen) > MAX_CONFIG_FILES:
            raise ConfigError([f"{recipe}: its defaults lists reach more than {MAX_CONFIG_FILES} "
                               "config files"])
        data = load_yaml_file(path)
        yield path
        for name, g in _defaults_entries(data.get("defaults"), group):
            todo += [(p, g) for p in _lookup(roots, name)]


def _lookup(roots: list[Path], name: str) -> list[Path]:
    name = name.strip("/")
    if not name or "${" in name or ".." in name.split("/"):
        return []
    for root in roots:
        p = root / f"{name}.yaml"
        if p.is_file():
            return [p]
    return []


def _defaults_entries(defaults: Any, group: str) -> Iterator[tuple[str, str]]:
    """(config path, its group) of each entry of a defaults list in a file of `group`."""
    if not isinstance(defaults, list):
        return
    for item in defaults:
        if isinstance(item, str):
            if item == "_self_":
                continue
            name = _absolute(item.split("@")[0], group)
            yield name, name.rpartition("/")[0]
        elif isinstance(item, dict) and len(item) == 1:
            (key, value), = item.items()
            key = str(key)
            for word in ("override ", "optional "):
                key = key.replace(word, "")
            g = _absolute(key.strip().split("@")[0], group)
            options = value if isinstance(value, list) else [value]
            for opt in options:
                if isinstance(opt, str):
                    yield f"{g}/{opt}", g


def _absolute(name: str, group: str) -> str:
    name = name.strip()
    if name.startswith("/"):
        return name.lstrip("/")
    return f"{group}/{name}" if group else name


def _override_choices(overrides: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(group, option) pairs an override line could pick (`model=gpt2`, `hydra/launcher=ray`,
    `+group=a,b`); a plain key=value that names no file is looked up in vain, harmlessly."""
    for o in overrides:
        key, sep, value = o.partition("=")
        if not sep:
            continue
        key = key.lstrip("+~").split("@")[0]
        for opt in value.strip("[]").split(","):
            opt = opt.strip().strip("'\"")
            if opt and "/" not in opt and "(" not in opt:
                yield key, opt
