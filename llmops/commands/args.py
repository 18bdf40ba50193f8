"""Command-line arguments shared by the commands: which argument is the recipe, which are Hydra's."""

from __future__ import annotations

import argparse

DEFAULT_RECIPE = "quickstart"

# Hydra's flags that take a value, and those whose value is optional
HYDRA_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-dir", "-cd", "--config-name", "-cn",
                     "--experimental-rerun")
HYDRA_OPTIONAL_VALUE_FLAGS = ("--info", "-i")


def split_recipe(args: list[str]) -> tuple[str, list[str]]:
    """First argument that is neither a flag, a flag's value nor key=value is the recipe."""
    for i, a in enumerate(args):
        if a.startswith("-") or "=" in a:
            continue
        # a flag's value (e.g. `--cfg job`, `-c job`) is not a recipe
        if i > 0 and args[i - 1] in HYDRA_VALUE_FLAGS + HYDRA_OPTIONAL_VALUE_FLAGS:
            continue
        return a, args[:i] + args[i + 1:]
    return DEFAULT_RECIPE, list(args)


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
