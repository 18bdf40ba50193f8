"""Recipes are data: what a composed config would make Hydra (or Python logging) import and call,
and the allow-list it must be on.

A recipe, an option file or an override can name code to run: a ``_target_`` anywhere (Hydra
instantiates ``hydra.callbacks``, ``hydra.launcher``, ``hydra.sweeper``), a
``()`` factory or a handler/formatter ``class`` in ``hydra.job_logging`` / ``hydra.hydra_logging``
(Python's ``logging.config.dictConfig`` imports and calls both), an ``ext://`` reference there
(dictConfig imports the module), and optuna's ``hydra.sweeper.custom_search_space``. Hydra's own
blocklist stops ``os.system`` but not, say, ``pathlib.Path.touch`` or a callback that unpickles a
file. So every such name in the composed config (``hydra:`` included) must be on the allow-list
of llmops' own callbacks, launchers, sweepers, samplers and logging handlers, checked after
composing and before Hydra instantiates anything. Only the person running llmops widens it:
``--allow-target PKG.MOD.Class`` on the command line or ``$LLMOPS_ALLOW_TARGETS`` (comma
separated); nothing a recipe says can.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

ALLOW_ENV = "LLMOPS_ALLOW_TARGETS"

# what llmops' own config (conf/, recipes/, its Hydra plugins) instantiates
BUILTIN_TARGETS = frozenset({
    "llmops.hydra_app.SweepCallback",
    "hydra_plugins.llmops_ray_launcher.ray_launcher.RayLauncher",
    "hydra_plugins.llmops_optuna.resumable_optuna.ResumableOptunaSweeper",
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    # Hydra's default logging (hydra/job_logging, hydra/hydra_logging)
    "logging.StreamHandler", "logging.FileHandler", "logging.NullHandler", "logging.Formatter",
    "sys.stdout", "sys.stderr",
})

LOGGING_NODES = ("job_logging", "hydra_logging")
LOGGING_KEYS = ("()", "class")  # dictConfig: a factory to call, a handler/formatter class
EXT = "ext://"

_cli_allowed: set[str] = set()
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class Target:
    key: str    # where in the composed config, e.g. hydra.callbacks.llmops_sweep._target_
    name: Any   # what it names (a dotted path), as written
    allowed: bool

    def line(self) -> str:
        return f"{self.key} = {self.name}{'' if self.allowed else '  (NOT ALLOWED)'}"


@contextmanager
def allowing(names: Iterable[str]) -> Iterator[None]:
    """Widen the allow-list while a command runs (`--allow-target` on its command line)."""
    names = list(names)
    for n in names:
        if not _DOTTED.match(n):
            from llmops.core.errors import LLMOpsError

            raise LLMOpsError(f"--allow-target '{n}': expected a dotted name like pkg.module.Class")
    added = set(names) - _cli_allowed
    _cli_allowed.update(added)
    try:
        yield
    finally:
        _cli_allowed.difference_update(added)


def allowed_names() -> set[str]:
    env = {n.strip() for n in os.environ.get(ALLOW_ENV, "").replace(os.pathsep, ",").split(",")}
    return set(BUILTIN_TARGETS) | _cli_allowed | {n for n in env if n}


def find(cfg: Any) -> list[Target]:
    """Every name the composed config `cfg` (hydra included) would have imported and called."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    ok = allowed_names()
    return [Target(k, v, isinstance(v, str) and v in ok) for k, v in _walk(data, "")]


def _walk(node: Any, prefix: str, logging_cfg: bool = False) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if k == "_target_" or (logging_cfg and k in LOGGING_KEYS):
                yield key, v
            elif key == "hydra.sweeper.custom_search_space" and v is not None:
                yield key, v
            elif logging_cfg and isinstance(v, str) and v.startswith(EXT):
                yield key, v[len(EXT):]
            else:
                inside = logging_cfg or key in {f"hydra.{n}" for n in LOGGING_NODES}
                yield from _walk(v, key, inside)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            key = f"{prefix}[{i}]"
            if logging_cfg and isinstance(v, str) and v.startswith(EXT):
                yield key, v[len(EXT):]
            else:
                yield from _walk(v, key, logging_cfg)


def problems(cfg: Any) -> list[str]:
    """One problem per target that is not on the allow-list, naming its key."""
    out = []
    for t in find(cfg):
        if t.allowed:
            continue
        shown = t.name if isinstance(t.name, str) else repr(t.name)
        why = ("an interpolation cannot be checked; write the class path itself"
               if isinstance(t.name, str) and "${" in t.name else
               "not on llmops' allow-list of callbacks, launchers, sweepers and logging handlers")
        out.append(f"{t.key} = '{shown}': would be imported and called by Hydra; {why}. A recipe "
                   f"cannot widen the list: if you trust this code, run with --allow-target "
                   f"{shown} (or add it to ${ALLOW_ENV})")
    return out
