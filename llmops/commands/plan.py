"""`llmops plan [RECIPE] [overrides...] [--out DIR] [--format yaml|json]`: compose and check a
recipe, then print every stage and what it would do and write, the rendered manifests included.
Changes nothing and contacts nothing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import yaml

from llmops.commands.args import parse_with_recipe


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops plan", description=(
        "Compose and check a recipe, then print every stage and what it would do and write, "
        "including the rendered manifests. Changes nothing."))
    p.add_argument("recipe", nargs="?", default=None)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", type=Path, help="also write every object it would apply as YAML files here")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    return p


def plan(recipe: str, overrides: list[str], *, out: Optional[Path] = None, fmt: str = "yaml") -> int:
    from omegaconf import OmegaConf

    from llmops.config.compose import strip_hydra
    from llmops.core import secrets
    from llmops.k8s.manifests import write_objects
    from llmops.pipeline import engine
    from llmops.pipeline.checks import compose
    from llmops.serving import removed

    cfg, _ = compose(recipe, overrides)
    job = strip_hydra(cfg)
    removed.warn(job)
    config = secrets.mask(job)  # remembers the config's secrets first: the steps are scrubbed of them
    steps = secrets.scrub_tree(engine.plan(job))
    report = {
        "recipe": str(job.recipe),
        "run_id": str(job.run_id),
        "run_dir": str(Path(str(job.paths.output_root)) / str(job.run_id)),
        "config": config,
        "stages": steps,
    }
    objects = [o for s in steps for o in s.get("objects", [])]
    if fmt == "json":
        print(json.dumps(report, indent=2, default=str))
    else:
        print(f"# llmops plan: recipe {report['recipe']}, run {report['run_id']}")
        print(f"# run directory: {report['run_dir']}")
        print("# composed config (secrets masked):")
        print(OmegaConf.to_yaml(OmegaConf.create(report["config"])).rstrip())
        for s in steps:
            print(f"\n# --- stage {s['stage']}: {s.get('does', '')}")
            rest = {k: v for k, v in s.items() if k not in ("stage", "does", "objects")}
            if rest:
                print(yaml.safe_dump(rest, sort_keys=False, default_flow_style=False).rstrip())
            for o in s.get("objects", []):
                print("---")
                print(yaml.safe_dump(o, sort_keys=False).rstrip())
    if out is not None:
        write_objects(objects, out)
        print(f"# wrote {len(objects)} object(s) to {out}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    a = parse_with_recipe(parser(), argv)
    return plan(a.recipe, a.overrides, out=a.out, fmt=a.format)
