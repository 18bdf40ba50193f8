"""Command-line arguments shared by the commands: which argument is the recipe, which are Hydra's."""

from __future__ import annotations

import argparse

DEFAULT_RECIPE = "quickstart"

# Hydra's flags that take a value, and those whose value is optional
HYDRA_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-dir", "-cd", "--config-name", "-cn",
                     "--experimental-rerun")
HYDRA_OPTIONAL_VALUE_FLAGS = ("--info", "-i")


def is_recipe_path(arg: str) -> bool:
    """A path to a recipe file, even when its name has '=' or ',' in it (`./a=b.yaml`): it starts
    like a path (no override key does) or names an existing .yaml file."""
    import os

    if arg.startswith(("./", "../", "/", "~")) or arg.startswith("." + os.sep):
        return True
    return arg.endswith((".yaml", ".yml")) and os.path.isfile(arg)


def split_recipe(args: list[str]) -> tuple[str, list[str]]:
    """First argument that is a recipe path, or neither a flag, a flag's value nor key=value, is
    the recipe."""
    for i, a in enumerate(args):
        if a.startswith("-") or ("=" in a and not is_recipe_path(a)):
            continue
        # a flag's value (e.g. `--cfg job`, `-c job`) is not a recipe
        if i > 0 and args[i - 1] in HYDRA_VALUE_FLAGS + HYDRA_OPTIONAL_VALUE_FLAGS:
            continue
        return a, args[:i] + args[i + 1:]
    return DEFAULT_RECIPE, list(args)


ALLOW_TARGET_FLAG = "--allow-target"


def split_allow_targets(args: list[str]) -> tuple[list[str], list[str]]:
    """(names given with --allow-target NAME / --allow-target=NAME, the other arguments)."""
    names, rest = [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a == ALLOW_TARGET_FLAG:
            if i + 1 >= len(args):
                raise SystemExit(f"llmops: error: {ALLOW_TARGET_FLAG} needs a name (pkg.module.Class)")
            names.append(args[i + 1])
            i += 2
            continue
        if a.startswith(ALLOW_TARGET_FLAG + "="):
            names.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    return names, rest


def split_hydra_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra flags with their values, overrides)."""
    flags, overrides = [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a in HYDRA_VALUE_FLAGS:
            flags.extend(args[i:i + 2])
            i += 2
            continue
        if a in HYDRA_OPTIONAL_VALUE_FLAGS:
            flags.append(a)
            if i + 1 < len(args) and "=" not in args[i + 1] and not args[i + 1].startswith("-"):
                flags.append(args[i + 1])
                i += 1
            i += 1
            continue
        (flags if a.startswith("-") else overrides).append(a)
        i += 1
    return flags, overrides


def parse_with_recipe(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `RECIPE overrides...` with `p`, the recipe defaulting to quickstart."""
    a, unknown = p.parse_known_args(argv)
    rest = ([a.recipe] if a.recipe else []) + list(a.overrides) + unknown
    recipe, overrides = split_recipe(rest)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    a.recipe, a.overrides = recipe, overrides
    return a
