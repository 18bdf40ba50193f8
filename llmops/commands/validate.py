"""`llmops validate [RECIPE] [overrides...] | --all`: compose and check; print every problem at once."""

from __future__ import annotations

import argparse
import sys

from llmops.commands.args import parse_with_recipe
from llmops.core.errors import LLMOpsError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops validate", description=(
        "Compose and check a recipe; print every problem at once. Exit 1 when there is one."))
    p.add_argument("recipe", nargs="?", default=None)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--all", action="store_true", help="check every recipe on the recipe path")
    p.add_argument("--allow-target", action="append", default=[], metavar="PKG.MOD.NAME",
                   help="also allow this class/function as a Hydra target (as `llmops run` does)")
    return p


def validate(recipe: str, overrides: list[str], *, check_all: bool = False) -> int:
    """Print `NAME: ok` and every target the recipe would instantiate, or its problems."""
    from llmops.config import targets as tg
    from llmops.config.compose import list_recipes
    from llmops.pipeline.checks import compose
    from llmops.serving import removed

    targets = [n for n, _ in list_recipes()] if check_all else [recipe]
    failed = 0
    for name in targets:
        try:
            cfg, _ = compose(name, [] if check_all else overrides)
        except LLMOpsError as e:
            failed += 1
            print(f"{name}: {e}", file=sys.stderr)
        else:
            removed.warn(cfg, prefix=f"{name}: " if check_all else "")
            print(f"{name}: ok")
            for t in tg.find(cfg):
                print(f"  instantiates {t.line()}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    from llmops.config import targets

    a = parse_with_recipe(parser(), argv)
    with targets.allowing(a.allow_target):
        return validate(a.recipe, a.overrides, check_all=a.all)
