"""Checks a type cannot express, run on the composed config before any stage. All at once."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from llmops.core import secrets
from llmops.core.errors import ConfigError
from llmops.core.names import path_component_problem
from llmops.core.tree import flatten, raw_items

# keys whose value becomes part of a name, a path, a label, an annotation, a URL or a prompt:
# a secret there would be printed, saved and sent in the clear, so a secret is refused there
NO_SECRET_KEYS = (
    "recipe", "run_name", "run_id", "paths.*",
    "serving.name", "serving.namespace", "serving.runtime_name", "serving.secret_name",
    "serving.image", "serving.transformer_image", "serving.labels.*", "serving.annotations.*",
    "smoke_test.prompt",
    "storage.bucket", "storage.prefix", "storage.root", "storage.endpoint_url", "storage.pvc_name",
    "storage.mount_path",
    "cluster.name", "cluster.namespace", "cluster.image", "cluster.address", "cluster.dashboard_url",
    "cluster.labels.*", "cluster.local_queue",
    "model.name_or_path", "model.tokenizer", "dataset.name",
)

# names that become a folder (run directory, checkpoints, model folder), an object-key segment
# (s3://bucket/prefix/<run_id>/), a lock file name and Kubernetes names/labels (made from them)
NAME_KEYS = ("recipe", "run_name", "run_id")


class Checker:
    def __init__(self, cfg: DictConfig, source: Any):
        self.cfg = cfg
        self.source = source
        self.problems: list[str] = []

    def get(self, key: str) -> Any:
        return OmegaConf.select(self.cfg, key, throw_on_resolution_failure=False)

    def add(self, key: str, message: str) -> None:
        origin = self.source.origin(key) if self.source is not None else "config"
        value = self.get(key)
        shown = value if not isinstance(value, str) else repr(secrets.scrub(value))
        self.problems.append(f"{key} = {shown} (from {origin}): {message}")

    def value(self, key: str) -> Any:
        """The value at `key`, an enum given as its name."""
        v = self.get(key)
        return getattr(v, "value", v)

    def positive_ints(self, *keys: str) -> None:
        for key in keys:
            self.check(key, lambda v: isinstance(v, int) and v > 0, "a positive integer")

    def nonnegative_ints(self, *keys: str) -> None:
        for key in keys:
            self.check(key, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")

    def check(self, key: str, ok: Callable[[Any], bool], expected: str) -> None:
        v = self.get(key)
        if v is None:
            return
        try:
            good = ok(v)
        except Exception:
            good = False
        if not good:
            self.add(key, f"expected {expected}")


def _resolution_problems(cfg: DictConfig, source: Any) -> list[str]:
    """Every interpolation that fails to resolve, by key."""
    problems = []
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    for key, _ in flatten(raw):
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except Exception as e:
            origin = source.origin(key) if source is not None else "config"
            msg = str(e).split("\n")[0]
            problems.append(f"{key} (from {origin}): interpolation failed: {msg}")
    return problems


def check_names(c: Checker) -> None:
    """recipe, run_name and run_id: each a single, portable path component."""
    for key in NAME_KEYS:
        v = c.get(key)
        why = path_component_problem(v if isinstance(v, str) else str(v))
        if why:
            c.add(key, f"{why}; it names the run's folder, its storage prefix and its "
                       "Kubernetes objects")
def check_no_secret_in_names(c: Checker) -> None:
    """A secret (llmops.core.secrets: by key, by environment variable name, or `${llmops.secret:}`)
    must not become part of a name, path, label, URL or prompt (`NO_SECRET_KEYS`)."""
    found = [v for v in secrets.secret_values(c.cfg)]
    if not found:
        return
    for key, _ in raw_items(c.cfg):
        if not any(fnmatch.fnmatchcase(key, pat) for pat in NO_SECRET_KEYS):
            continue
        value = c.get(key)
        if isinstance(value, str) and any(s in value for s in found):
            c.add(key, "a value without a secret in it: this key becomes part of a name, path, "
                  "label, URL or prompt, which are printed, saved and sent in the clear (the "
                  "secret comes from a secret-named ${oc.env:...} variable, ${llmops.secret:...} "
                  "or a secret-named key; see docs/security.md)")


def validate(cfg: DictConfig, source: Any = None, checks: Sequence[Callable[["Checker"], None]] = ()) -> None:
    """Raise ConfigError listing every problem in the composed config.

    `checks` are the config-section checks of the domain packages (data, training, storage,
    clusters, serving), each `check(c: Checker) -> None`; `llmops.pipeline.checks` lists them.
    """
    problems = _resolution_problems(cfg, source)
    if problems:
        raise ConfigError([secrets.scrub(p) for p in problems])
    c = Checker(cfg, source)
    check_names(c)
    stages = [str(s.value if hasattr(s, "value") else s) for s in c.get("stages")]
    if len(set(stages)) != len(stages):
        c.add("stages", "each stage at most once")
    if not stages:
        c.add("stages", "at least one stage")
    check_no_secret_in_names(c)
    for check in checks:
        check(c)
    if c.problems:
        raise ConfigError([secrets.scrub(p) for p in c.problems])
