"""`llmops` command line: argument handling only; the work lives in the modules it calls.

    llmops run [RECIPE|path.yaml] [overrides...] [hydra flags: --cfg job, --info, -m, ...]
    llmops plan [RECIPE] [overrides...] [--out DIR]
    llmops validate [RECIPE] [overrides...] | --all
    llmops recipes ls | show NAME | cp NAME DEST | diff A B | lock RUN_DIR
    llmops resume RUN_DIR
    llmops serve RUN_DIR [--port N] | call RUN_DIR|URL PROMPT | undeploy RUN_DIR
    llmops sweep report DIR | promote SWEEP_DIR

Nothing here imports torch, ray or transformers: plan, validate, recipes and --help stay fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional

from llmops.errors import LLMOpsError

DEFAULT_RECIPE = "quickstart"
log = logging.getLogger("llmops")


def _split_recipe(args: list[str]) -> tuple[str, list[str]]:
    """First argument that is neither a flag nor key=value is the recipe."""
    for i, a in enumerate(args):
        if a.startswith("-") or "=" in a:
            continue
        # a flag's value (e.g. `--cfg job`, `-c job`) is not a recipe
        if i > 0 and args[i - 1] in ("--cfg", "-c", "--package", "-p", "--info", "-i",
                                      "--config-dir", "-cd", "--experimental-rerun"):
            continue
        return a, args[:i] + args[i + 1:]
    return DEFAULT_RECIPE, list(args)


def _print_err(e: BaseException) -> None:
    print(f"llmops: error: {e}", file=sys.stderr)


# ------------------------------------------------------------------------------------------- run
def cmd_run(argv: list[str]) -> int:
    """Hand over to Hydra's main with the recipe as primary config."""
    if argv and argv[0] in ("-h", "--help"):
        print(RUN_HELP)
        return 0
    recipe_ref, rest = _split_recipe(argv)
    from llmops.config import compose as c

    recipe = c.find_recipe(recipe_ref, rest)
    hydra_flags, overrides = _split_hydra_flags(rest)
    if not any(f in hydra_flags for f in ("--info", "-i", "--help", "-h", "--hydra-help")):
        if any(f in hydra_flags for f in ("-m", "--multirun", "--cfg", "-c")):
            # sweeps: each job's values are checked when the job composes; --cfg: show the
            # config even when a value is out of range (unknown keys and types still stop it)
            c.lint(recipe, overrides)
        else:
            # compose and check everything before Hydra creates the run directory: a bad
            # config ends here with every problem listed and nothing written
            c.compose(str(recipe), overrides)
    from llmops import hydra_app

    return hydra_app.main(recipe, hydra_flags, overrides)


def _split_hydra_flags(args: list[str]) -> tuple[list[str], list[str]]:
    flags, overrides = [], []
    takes_value = {"--cfg", "-c", "--package", "-p", "--config-dir", "-cd", "--config-name", "-cn",
                   "--experimental-rerun"}
    optional_value = {"--info", "-i"}
    it = iter(range(len(args)))
    i = 0
    while i < len(args):
        a = args[i]
        if a in takes_value:
            flags.extend(args[i:i + 2])
            i += 2
            continue
        if a in optional_value:
            flags.append(a)
            if i + 1 < len(args) and "=" not in args[i + 1] and not args[i + 1].startswith("-"):
                flags.append(args[i + 1])
                i += 1
            i += 1
            continue
        if a.startswith("-"):
            flags.append(a)
        else:
            overrides.append(a)
        i += 1
    del it
    return flags, overrides


RUN_HELP = """usage: llmops run [RECIPE | path/to/recipe.yaml] [key=value ...] [hydra flags]

Compose RECIPE (default: quickstart), check it, and run its stages
(prepare_data -> train -> export -> deploy -> smoke_test) in a new run directory.

overrides (Hydra grammar):
  training.lr=1e-4            set a value
  model=gpt2 serving=vllm     pick another option of a config group
  stages=[prepare_data,train] run part of the line
  +training.foo=1 / ~key      add / delete (only keys the schemas know)
  hydra.run.dir=outputs/x     choose the run directory; rerunning there resumes

hydra flags that keep working:
  --cfg job|hydra|all         print the composed config instead of running
  --info [searchpath|defaults|...]
  -m / --multirun             sweep: training.lr=1e-4,5e-5 runs each value
"""


# ------------------------------------------------------------------------------ plan / validate
def cmd_plan(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llmops plan", description=(
        "Compose and check a recipe, then print every stage and what it would do and write, "
        "including the rendered manifests. Changes nothing."))
    p.add_argument("recipe", nargs="?", default=None)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", type=Path, help="also write every object it would apply as YAML files here")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    a = _parse_with_recipe(p, argv)
    from llmops.plan import plan_command

    return plan_command(a.recipe, a.overrides, out=a.out, fmt=a.format)


def cmd_validate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llmops validate", description=(
        "Compose and check a recipe; print every problem at once. Exit 1 when there is one."))
    p.add_argument("recipe", nargs="?", default=None)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--all", action="store_true", help="check every recipe on the recipe path")
    a = _parse_with_recipe(p, argv)
    from llmops.plan import validate_command

    return validate_command(a.recipe, a.overrides, check_all=a.all)


def _parse_with_recipe(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    a, unknown = p.parse_known_args(argv)
    rest = ([a.recipe] if a.recipe else []) + list(a.overrides) + unknown
    recipe, overrides = _split_recipe(rest)
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    a.recipe, a.overrides = recipe, overrides
    return a


# --------------------------------------------------------------------------------------- recipes
def cmd_recipes(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llmops recipes", description="List, show and share recipes.")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("ls", help="every recipe on the recipe path, with its source")
    s = sub.add_parser("show", help="print a recipe composed (secrets masked)")
    s.add_argument("name")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--raw", action="store_true", help="print the recipe file as written")
    s = sub.add_parser("cp", help="copy a recipe for editing")
    s.add_argument("name")
    s.add_argument("dest", type=Path)
    s = sub.add_parser("diff", help="what two recipes change against each other, key by key")
    s.add_argument("a")
    s.add_argument("b")
    s = sub.add_parser("lock", help="write a frozen recipe from a finished run")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    from llmops import recipes

    return recipes.command(a)


# ----------------------------------------------------------------------------------- run dirs
def cmd_resume(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llmops resume", description=(
        "Rerun a run in its own directory with its own recipe and overrides: finished stages "
        "with unchanged inputs are skipped, training resumes from its latest checkpoint."))
    p.add_argument("run_dir", type=Path)
    p.add_argument("overrides", nargs="*", help="extra overrides (change inputs: stages rerun)")
    a = p.parse_args(argv)
    from llmops.plan import resume_args

    return cmd_run(resume_args(a.run_dir, a.overrides))


def cmd_serve(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llmops serve", description=(
        "Serve a run's exported model on 127.0.0.1 with the OpenAI completions API (as vLLM)."))
    p.add_argument("run_dir", type=Path)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args(argv)
    from llmops.serving import server

    return server.serve_command(a.run_dir, host=a.host, port=a.port)


def cmd_call(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llmops call", description=(
        "Send a prompt to a run's deployed model (or to a URL) and print the reply."))
    p.add_argument("target", help="a run directory or an http(s) URL")
    p.add_argument("prompt")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--model", default=None, help="model name to send (URL targets)")
    a = p.parse_args(argv)
    from llmops.serving import client

    return client.call_command(a.target, a.prompt, max_tokens=a.max_tokens, model=a.model)


def cmd_undeploy(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llmops undeploy", description=(
        "Delete the Kubernetes objects a run applied (and nothing else)."))
    p.add_argument("run_dir", type=Path)
    a = p.parse_args(argv)
    from llmops.serving import kube

    return kube.undeploy_command(a.run_dir)


def cmd_sweep(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llmops sweep", description="Sweep summaries.")
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("report", help="print a sweep's summary again")
    s.add_argument("sweep_dir", type=Path)
    a = p.parse_args(argv)
    from llmops import sweeps

    return sweeps.report_command(a.sweep_dir)


def cmd_promote(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llmops promote", description=(
        "Deploy the best job of a sweep with the recipe's serving config."))
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    from llmops import sweeps

    return sweeps.promote_command(a.sweep_dir, a.overrides)


COMMANDS = {
    "run": (cmd_run, "compose a recipe and run its stages"),
    "plan": (cmd_plan, "print what a run would do and write; change nothing"),
    "validate": (cmd_validate, "check a recipe and overrides; report every error"),
    "recipes": (cmd_recipes, "ls | show | cp | diff | lock"),
    "resume": (cmd_resume, "rerun a run directory, skipping finished stages"),
    "serve": (cmd_serve, "serve a run's model locally (OpenAI completions API)"),
    "call": (cmd_call, "send a prompt to a run's model or a URL"),
    "undeploy": (cmd_undeploy, "delete what a run applied to Kubernetes"),
    "sweep": (cmd_sweep, "report: print a sweep's summary"),
    "promote": (cmd_promote, "deploy the best model of a sweep"),
}


def _usage() -> str:
    lines = ["usage: llmops COMMAND [args...]", "",
             "Fine-tune-and-serve jobs for language models as Hydra recipes.", "", "commands:"]
    lines += [f"  {n:<10} {h}" for n, (_, h) in COMMANDS.items()]
    lines += ["", "`llmops COMMAND --help` for each. Start with: llmops run quickstart"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from llmops import __version__

        print(f"llmops {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"llmops: error: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        rc = COMMANDS[name][0](rest)
    except LLMOpsError as e:
        _print_err(e)
        return 1
    except KeyboardInterrupt:
        print("llmops: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
