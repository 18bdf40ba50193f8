"""Find a recipe, check it statically, and compose it with Hydra.

A recipe is a primary Hydra config: ``defaults: [config, override <group>: <option>, _self_]``
plus deltas. The recipe's folder is the primary config dir; llmops' ``conf/`` (and any folder on
``LLMOPS_RECIPE_PATH``) is appended to Hydra's search path.

``lint`` checks a recipe file and the command-line overrides against the dataclass schemas
*before* Hydra runs, so that every unknown key, wrong type and unknown option is reported at
once, with the file it came from and close matches. Hydra alone would stop at the first.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf

from llmops.core import resources
from llmops.config import bounds, lock, schema, targets
from llmops.core.names import path_component_problem
from llmops.core.tree import flatten
from llmops.core.yamlio import load_yaml_file
from llmops.config.validate import validate
from llmops.core.errors import ConfigError, LLMOpsError

RECIPE_PATH_ENV = "LLMOPS_RECIPE_PATH"
CMDLINE = "command line"
OVERLAY_GROUPS = ("sweep",)  # option groups that are not schema sections (conf/sweep/: -m overlays)


# ----------------------------------------------------------------------------------- recipe path
# Sources (folders, S3 prefixes, team packages, built-ins) live in llmops.config.sources.
def recipe_dirs(overrides: Iterable[str] = ()) -> list[Path]:
    """Local folders searched for recipes, first wins ($LLMOPS_RECIPE_PATH, packages, built-ins)."""
    from llmops.config import sources as rs

    return [Path(s.location) for s in rs.sources(overrides) if not s.is_s3]


def list_recipes(overrides: Iterable[str] = ()) -> list[tuple[str, Any]]:
    """(name, location) of every recipe on the path; a name shadowed by an earlier source is skipped."""
    from llmops.config import sources as rs

    return [(n, Path(e.location) if not e.source.is_s3 else e.location)
            for n, e in rs.all_recipes(overrides).items()]


def find_recipe(ref: str, overrides: Iterable[str] = ()) -> Path:
    """A recipe by name (searched on the recipe path) or by path to a .yaml file."""
    from llmops.config import sources as rs

    looks_like_path = ref.endswith((".yaml", ".yml")) or os.sep in ref or ref.startswith(".")
    if looks_like_path and not ref.startswith("s3://"):
        p = Path(ref).expanduser()
        if not p.is_file():
            raise LLMOpsError(f"recipe file '{ref}' does not exist (expected a YAML file)")
        return p.resolve()
    found = rs.all_recipes(overrides)
    if ref in found:
        e = found[ref]
        if e.shadowed:
            import logging

            logging.getLogger("llmops").warning("%s", rs.clash_message(e))
        return e.source.fetch_recipe(ref)
    names = list(found)
    hint = _did_you_mean(ref, names)
    raise LLMOpsError(
        f"no recipe named '{ref}' on the recipe path "
        f"({', '.join(s.location for s in rs.sources(overrides))})"
        f"{hint}; known recipes: {', '.join(names) or 'none'}"
    )




# ---------------------------------------------------------------------------- options and schema
def search_dirs(recipe: Optional[Path] = None, overrides: Iterable[str] = ()) -> list[Path]:
    dirs = []
    if recipe is not None:
        dirs.append(recipe.parent)
    dirs.extend(d for d in recipe_dirs(overrides) if d not in dirs)
    dirs.append(resources.conf_dir())
    return dirs


def group_options(group: str, recipe: Optional[Path] = None,
                  overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Options of a config group: ``<source>/<group>/<name>.yaml`` on the search path."""
    from llmops.config import sources as rs

    found: dict[str, Any] = {}
    srcs = ([rs.RecipeSource("recipe", "recipe folder", str(recipe.parent))] if recipe else [])
    srcs += rs.sources(overrides)
    srcs.append(rs.RecipeSource("builtin", "llmops conf", str(resources.conf_dir())))
    for s in srcs:
        for name, loc in s.group_options(group).items():
            found.setdefault(name, Path(loc) if not s.is_s3 else loc)
    return found


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _typed_root() -> DictConfig:
    """The root schema with every group filled in with its schema's defaults (struct mode)."""
    groups = {g: OmegaConf.structured(cls) for g, cls in schema.GROUPS.items()}
    root = OmegaConf.structured(schema.LLMOpsConfig)
    for g, node in groups.items():
        root[g] = node
    OmegaConf.set_struct(root, True)
    return root


def _schema_keys(cls: Any, prefix: str = "") -> list[str]:
    out = []
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        out.append(key)
        t = f.type if not isinstance(f.type, str) else getattr(schema, f.type.split("[")[0], None)
        default = f.default_factory() if callable(getattr(f, "default_factory", None)) else None
        if is_dataclass(default):
            out.extend(_schema_keys(type(default), key + "."))
        elif f.name in schema.GROUPS and prefix == "":
            out.extend(_schema_keys(schema.GROUPS[f.name], key + "."))
        elif isinstance(t, type) and is_dataclass(t):
            out.extend(_schema_keys(t, key + "."))
    return out


ALL_KEYS = None


def all_keys() -> list[str]:
    global ALL_KEYS
    if ALL_KEYS is None:
        ALL_KEYS = _schema_keys(schema.LLMOpsConfig)
    return ALL_KEYS



def _check_value(root: DictConfig, key: str, value: Any) -> Optional[str]:
    """None when `key` exists in the schema and accepts `value`, else the reason."""
    parts = key.split(".")
    node: Any = root
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            break
        if part not in node.keys():  # `in node` is False for a MISSING value
            if not _is_open_dict(node):
                parent = ".".join(parts[:i])
                siblings = [f"{parent}.{k}" if parent else k for k in node.keys()]
                return f"unknown key '{key}'{_did_you_mean(key, siblings)}"
            return None
        node = node._get_node(part)
    from omegaconf import ValueNode

    if isinstance(node, ValueNode):
        if isinstance(value, str) and "${" in value:
            return None  # an interpolation: checked once composed
        try:
            node.validate_and_convert(value)
        except Exception as e:  # omegaconf.ValidationError and friends
            return f"key '{key}': {str(e).splitlines()[0]}"
        return None
    try:
        probe = _typed_root()
        OmegaConf.update(probe, key, value, merge=True)
    except Exception as e:
        return f"key '{key}': {str(e).splitlines()[0]}"
    return None


def _is_open_dict(node: DictConfig) -> bool:
    # Dict[str, X] fields accept any key
    try:
        return node._metadata.key_type is str and node._metadata.object_type in (dict, None)
    except AttributeError:
        return False


def _is_new_mapping_key(root: DictConfig, key: str) -> bool:
    parent, _, last = key.rpartition(".")
    node = OmegaConf.select(root, parent) if parent else root
    return isinstance(node, DictConfig) and _is_open_dict(node) and last not in node


@dataclass
class Source:
    """Where each set key came from, to name it in errors."""

    recipe: Path
    recipe_keys: dict[str, Any]
    override_keys: dict[str, str]
    choices: dict[str, str]

    def origin(self, key: str) -> str:
        if key in self.override_keys:
            return f"command line override '{self.override_keys[key]}'"
        if key in self.recipe_keys:
            return f"recipe {self.recipe}"
        group = key.split(".")[0]
        if group in self.choices:
            opt = group_options(group, self.recipe).get(self.choices[group])
            if opt is not None:
                sub = key.split(".", 1)[1] if "." in key else ""
                data = _safe_yaml(opt)
                if sub and any(k == sub for k, _ in flatten(data)):
                    return f"option file {opt}"
            return f"default of {group} option '{self.choices[group]}'"
        if key.split(".")[0] in {k for k, _ in flatten(_safe_yaml(resources.conf_dir() / 'config.yaml'))}:
            return f"base config {resources.conf_dir() / 'config.yaml'}"
        return "schema default (llmops/config/schema.py)"


def _safe_yaml(p: Path) -> dict:
    try:
        d = load_yaml_file(p)
    except LLMOpsError:
        return {}
    return {k: v for k, v in d.items() if k not in ("defaults", "hydra")}


def _parse_defaults(defaults: Any, recipe: Path, problems: list[str]) -> dict[str, str]:
    """Group choices a recipe's defaults list makes; unknown groups/options are problems."""
    choices: dict[str, str] = {}
    if not defaults:
        problems.append(f"{recipe}: 'defaults' is empty or missing; a recipe starts from llmops' "
                        "base config: 'defaults: [config, ...]' (see recipes/quickstart.yaml)")
        return choices
    if not isinstance(defaults, list):
        problems.append(f"{recipe}: 'defaults' must be a list, got {type(defaults).__name__}")
        return choices
    for item in defaults:
        if isinstance(item, str):
            continue
        if not isinstance(item, dict) or len(item) != 1:
            problems.append(f"{recipe}: defaults entry {item!r} is not 'group: option'")
            continue
        (k, v), = item.items()
        group = str(k).replace("override ", "").strip().lstrip("/")
        if "@" in group:
            group = group.split("@")[0]
        if group in schema.GROUPS and isinstance(v, str):
            opts = group_options(group, recipe)
            if v not in opts:
                problems.append(
                    f"{recipe}: defaults picks {group} option '{v}', which does not exist"
                    f"{_did_you_mean(v, opts)}; options: {', '.join(sorted(opts))}"
                )
            else:
                choices[group] = v
    return choices


def base_choices() -> dict[str, str]:
    data = yaml.safe_load((resources.conf_dir() / "config.yaml").read_text())
    out = {}
    for item in data.get("defaults", []):
        if isinstance(item, dict):
            (k, v), = item.items()
            out[k] = v
    return out


def searchpath_problems(recipe: Path, data: dict) -> list[str]:
    """A recipe may add folders (file://) and S3 prefixes (s3://, read as data) to the search path,
    not `pkg://` entries: Hydra imports such a module while composing, before any check runs.
    Packages of recipes come in as installed team packages, or on the command line."""
    sp = (data.get("hydra") or {}).get("searchpath") if isinstance(data.get("hydra"), dict) else None
    entries = [sp] if isinstance(sp, str) else list(sp or [])
    return [f"{recipe}: hydra.searchpath entry {str(e)!r}: a recipe may add file:// folders and "
            f"s3:// prefixes only (a {str(e).split('://')[0]}:// entry makes Hydra import code while "
            f"composing); give it on the command line (hydra.searchpath=[...]) or install the "
            f"package as a team recipe package (docs/recipes.md)"
            for e in entries if not str(e).startswith(("file://", "s3://"))]


def lint(recipe: Path, overrides: list[str]) -> Source:
    """Check a recipe file and overrides against the schemas; raise ConfigError with all problems."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    problems = bounds.override_problems(overrides)
    if problems:
        raise ConfigError(problems)
    for _ in bounds.config_files(recipe, overrides, search_dirs(recipe, overrides)):
        pass  # each file Hydra can reach, read once within the bounds (before Hydra reads it)
    lock.check_lock(recipe)
    data = load_yaml_file(recipe)
    problems += searchpath_problems(recipe, data)
    choices = base_choices()
    choices.update(_parse_defaults(data.get("defaults"), recipe, problems))

    typed = _typed_root()
    recipe_keys: dict[str, Any] = {}
    body = {k: v for k, v in data.items() if k not in ("defaults", "hydra")}
    for key, value in flatten(body):
        recipe_keys[key] = value
        if isinstance(value, (dict, list)) and not value:
            value = value
        why = _check_value(typed, key, value)
        if why:
            problems.append(f"{recipe}: {why}")

    override_keys: dict[str, str] = {}
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError([f"{CMDLINE}: {e}"]) from None
    for o in parsed:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_delete():
            continue
        values = bounds.sweep_values(o)
        group = key.lstrip("/")
        if ((group in schema.GROUPS or group in OVERLAY_GROUPS) and o.package is None
                and all(isinstance(v, str) for v in values)):
            opts = group_options(group, recipe, overrides)
            for v in values:
                if v not in opts:
                    problems.append(
                        f"{CMDLINE}: '{o.input_line}': {group} has no option '{v}'"
                        f"{_did_you_mean(v, opts)}; options: {', '.join(sorted(opts))}"
                    )
                else:
                    choices[group] = v
            continue
        override_keys[key] = o.input_line
        if not (o.is_add() or o.is_force_add()) and _is_new_mapping_key(typed, key):
            problems.append(f"{CMDLINE}: '{o.input_line}': '{key}' is a new key in a mapping; "
                            f"add it with '+{o.input_line}'")
            continue
        for v in values:
            why = _check_value(typed, key, v)
            if why:
                problems.append(f"{CMDLINE}: '{o.input_line}': {why}")
                break
    if problems:
        raise ConfigError(problems)
    return Source(recipe=recipe, recipe_keys=recipe_keys, override_keys=override_keys, choices=choices)


# ----------------------------------------------------------------------------------------- compose
def hydra_searchpath_override(overrides: list[str], recipe: Path) -> list[str]:
    """Add llmops' conf/ (and the recipe path) to any hydra.searchpath the user gave."""
    from llmops.config import sources as rs

    extra = [s.hydra_entry() for s in rs.sources(overrides)
             if s.is_s3 or Path(s.location) != recipe.parent] + [f"file://{resources.conf_dir()}"]
    rest, user = [], []
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+") == "hydra.searchpath":
            val = o.split("=", 1)[1].strip()
            user.extend(x.strip() for x in val.strip("[]").split(",") if x.strip())
        else:
            rest.append(o)
    sp = user + [e for e in extra if e not in user]
    return rest + [f"hydra.searchpath=[{','.join(sp)}]"]


def recipe_overrides(recipe: Path, overrides: list[str]) -> list[str]:
    """The overrides Hydra gets: the user's, the recipe name, the search path."""
    user_set_recipe = (any(o.split("=", 1)[0] == "recipe" for o in overrides)
                       or lock.is_locked(recipe))
    extra = [] if user_set_recipe else [f"recipe={recipe_name_value(recipe)}"]
    return hydra_searchpath_override(list(overrides) + extra, recipe)


def recipe_name_value(recipe: Path) -> str:
    """The recipe's name (its file name) as a quoted override value: a name is data, never
    override grammar (`a=b.yaml`, `x,y.yaml` are recipes 'a=b', 'x,y', not a sweep)."""
    name = recipe.stem
    why = path_component_problem(name)
    if why:
        raise LLMOpsError(f"recipe file {recipe}: its name becomes the recipe name (and the run's "
                          f"folder name): {why}; rename the file")
    return "'" + name + "'"  # the name rule leaves no quote or backslash to escape


def compose(recipe_ref: str, overrides: list[str] | None = None, *, check: bool = True,
            checks: Sequence[Callable] = ()):
    """Compose a recipe with the compose API. Returns (cfg, source). Raises ConfigError.

    check: lint and validate; `checks` are the config-section checks of the domain packages
    (`llmops.pipeline.checks` passes them all)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    schema.register()
    overrides = list(overrides or [])
    recipe = find_recipe(recipe_ref, overrides)
    try:
        source = lint(recipe, overrides)
    except ConfigError as e:
        raise ConfigError(e.problems + _problems_of_the_rest(recipe_ref, overrides, e.problems, check,
                                                             checks)) from None
    hydra_overrides = recipe_overrides(recipe, overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipe.parent), version_base="1.3"):
            cfg = hydra_compose(
                config_name=recipe.stem,
                overrides=hydra_overrides,
                return_hydra_config=True,
            )
    except Exception as e:  # Hydra / OmegaConf composition errors
        raise ConfigError([f"{recipe}: {_compose_message(e)}"]) from None
    finally:
        GlobalHydra.instance().clear()
    if check:
        refused = targets.problems(cfg)
        try:
            validate(cfg, source, checks)
        except ConfigError as e:
            raise ConfigError(refused + e.problems) from None
        if refused:
            raise ConfigError(refused)
    return cfg, source


def check_targets(recipe: Path, overrides: list[str]) -> None:
    """Compose (values unchecked) and refuse any target off the allow-list: for the paths of
    `llmops run` that hand over to Hydra without a full check (sweeps, --info). A sweep's master
    config is composed without its sweep overrides, as Hydra composes it; each value of a sweep
    over Hydra's own config (`hydra/job_logging=a,b`, `hydra.x=1,2`) is composed on its own."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain, variants = [], []
    for o, line in zip(OverridesParser.create().parse_overrides(overrides), overrides):
        if not o.is_sweep_override():
            plain.append(line)
        elif o.key_or_group.lstrip("+~").startswith("hydra"):
            key = line.split("=", 1)[0]
            variants += [f"{key}={v}" for v in bounds.sweep_values(o)]
    problems: list[str] = []
    for extra in [None] + variants:
        cfg, _ = compose(str(recipe), plain + ([extra] if extra else []), check=False)
        problems += [p for p in targets.problems(cfg) if p not in problems]
        params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
        problems += [f"hydra.sweeper.params.{k}: a sweep over Hydra's own config is not allowed "
                     f"(its values are not checked); give it on the command line"
                     for k in params if str(k).lstrip("+~").startswith("hydra")]
    if problems:
        raise ConfigError(problems)


def _problems_of_the_rest(recipe_ref: str, overrides: list[str], problems: list[str],
                          check: bool, checks: Sequence[Callable]) -> list[str]:
    """When only command-line overrides were rejected, the checks of everything else: so one run
    of `llmops validate` reports every problem, not the lint's first and then the rest."""
    if not check or not all(p.startswith(f"{CMDLINE}: ") for p in problems):
        return []
    rest = [o for o in overrides if not any(p.startswith(f"{CMDLINE}: '{o}'") for p in problems)]
    if len(rest) == len(overrides):
        return []
    try:
        compose(recipe_ref, rest, check=True, checks=checks)
    except ConfigError as e:
        return e.problems
    except LLMOpsError:
        return []
    return []


def _compose_message(e: BaseException) -> str:
    msgs = []
    while e is not None:
        m = str(e).strip().split("\n")[0]
        if m and m not in msgs:
            msgs.append(m)
        e = e.__cause__ or e.__context__
    return ": ".join(msgs)


def strip_hydra(cfg: DictConfig) -> DictConfig:
    """The job's config without the `hydra` node (struct mode kept)."""
    from omegaconf import open_dict

    out = cfg.copy()
    if "hydra" in out:
        with open_dict(out):
            del out["hydra"]
    return out
