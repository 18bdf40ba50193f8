"""`llmops run [RECIPE|path.yaml] [overrides...] [hydra flags]`: compose, check, and hand over to
Hydra's main with the recipe as primary config (hydra_app)."""

from __future__ import annotations

from llmops.commands.args import split_allow_targets, split_hydra_flags, split_recipe

HELP = """usage: llmops run [RECIPE | path/to/recipe.yaml] [key=value ...] [hydra flags]

Compose RECIPE (default: quickstart), check it, and run its stages
(prepare_data -> train -> export -> deploy -> smoke_test) in a new run directory.

overrides (Hydra grammar):
  training.lr=1e-4            set a value
  model=gpt2 serving=vllm     pick another option of a config group
  stages=[prepare_data,train] run part of the line
  +training.foo=1 / ~key      add / delete (only keys the schemas know)
  hydra.run.dir=outputs/x     choose the run directory; rerunning there resumes (a folder
                              with other files and no state.json is refused)

  --allow-target PKG.MOD.NAME let the recipe's hydra config (callbacks, launcher, sweeper,
                              logging handlers) instantiate this class or function too; only
                              llmops' own are allowed otherwise (also: $LLMOPS_ALLOW_TARGETS)

hydra flags that keep working:
  --cfg job|hydra|all         print the composed config instead of running
  --info [searchpath|defaults|...]
  -m / --multirun             sweep: training.lr=1e-4,5e-5 runs each value
"""

INFO_FLAGS = ("--info", "-i", "--help", "-h", "--hydra-help")
MULTIRUN_FLAGS = ("-m", "--multirun")
CFG_FLAGS = ("--cfg", "-c")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(HELP)
        return 0
    allow, argv = split_allow_targets(argv)
    from llmops.config import targets

    with targets.allowing(allow):
        return run(argv)


def run(argv: list[str]) -> int:
    """`llmops run` without --allow-target (already applied)."""
    recipe_ref, rest = split_recipe(argv)
    from llmops.config import compose as c

    recipe = c.find_recipe(recipe_ref, rest)
    flags, overrides = split_hydra_flags(rest)
    from llmops import hydra_app

    if any(f in flags for f in INFO_FLAGS):
        c.check_targets(recipe, overrides)  # Hydra sets up its logging for --info too
        return hydra_app.main(recipe, flags, overrides, checked=False)
    if any(f in flags for f in CFG_FLAGS):
        # show the config even when a value is out of range (unknown keys and types still stop it)
        c.lint(recipe, overrides)
        return hydra_app.print_cfg(recipe, flags, overrides)
    if any(f in flags for f in MULTIRUN_FLAGS):
        # each job's values are checked when the job composes; what Hydra itself instantiates
        # (callbacks, launcher, sweeper, logging) is checked here, before it starts
        c.lint(recipe, overrides)
        c.check_targets(recipe, overrides)
        return hydra_app.main(recipe, flags, overrides, checked=False)
    # compose and check everything once, before Hydra creates the run directory: a bad config
    # ends here with every problem listed and nothing written
    from omegaconf import OmegaConf

    from llmops.core.errors import LLMOpsError
    from llmops.pipeline.checks import compose
    from llmops.serving import removed
    from llmops.run.rundir import foreign_dir_problem

    cfg, _ = compose(str(recipe), overrides)
    removed.warn(cfg)  # before any stage runs
    run_dir = OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=False)
    why = foreign_dir_problem(run_dir) if run_dir else None
    if why:
        raise LLMOpsError(f"hydra.run.dir: {why}")
    return hydra_app.main(recipe, flags, overrides, checked=True)
