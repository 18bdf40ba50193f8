"""`llmops plan [RECIPE] [overrides...] [--out DIR] [--format yaml|json] [--server-dry-run]`:
compose and check a recipe, then print every stage and what it would do and write, the rendered
manifests included. Changes nothing and contacts nothing; with `--server-dry-run` it then asks the
API server (llmops.pipeline.dry_run: a server-side apply with dryRun=All of every object, and
the namespaces, CRD versions, ServingRuntimes and LocalQueues they need). Exit 0 when all is well,
1 when a check fails, 2 when there are no credentials or the API server does not answer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import yaml

from llmops.commands.args import parse_with_recipe
from llmops.core.errors import LLMOpsError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops plan", description=(
        "Compose and check a recipe, then print every stage and what it would do and write, "
        "including the rendered manifests. Changes nothing."))
    p.add_argument("recipe", nargs="?", default=None)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", type=Path, help="also write every object it would apply as YAML files here")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.add_argument("--server-dry-run", action="store_true", help=(
        "then, with the run's credentials (cluster.auth), send every object as a server-side apply "
        "with dryRun=All (nothing is stored) and check that the namespaces, the CRD versions, the "
        "ServingRuntime and the Kueue LocalQueue they need exist; exit 1 when a check fails, 2 "
        "when the API server cannot be reached"))
    return p


def print_dry_run(report) -> None:
    """The server's answers as YAML comments (stdout stays a YAML stream)."""
    print(f"\n# --- server dry run against {report.server}")
    print("# dry-run apply (dryRun=All, fieldManager llmops, force, fieldValidation=Strict):")
    for f in report.applied:
        print(f"#   {f.status:<8} {f.line()}")
    print("# checks:")
    for f in report.checks:
        print(f"#   {f.status:<8} {f.line()}")
    n = report.counts()
    print(f"# server dry run: {n['ok']} ok, {n['skipped']} skipped, {n['failed']} failed")


def plan(recipe: str, overrides: list[str], *, out: Optional[Path] = None, fmt: str = "yaml",
         server_dry_run: bool = False) -> int:
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
    raw = engine.plan(job)  # Secrets with placeholders; the dry run fills them for the request only
    steps = secrets.scrub_tree(raw)
    report = {
        "recipe": str(job.recipe),
        "run_id": str(job.run_id),
        "run_dir": str(Path(str(job.paths.output_root)) / str(job.run_id)),
        "config": config,
        "stages": steps,
    }
    objects = [o for s in steps for o in s.get("objects", [])]
    dry, error = None, None
    if server_dry_run and fmt == "json":  # one JSON document: ask first
        dry, error = ask_server(raw, job)
        report["server_dry_run"] = dry.as_dict() if dry else {"error": str(error)}
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
    if not server_dry_run:
        return 0
    if fmt != "json":
        sys.stdout.flush()
        dry, error = ask_server(raw, job)
        if dry is not None:
            print_dry_run(dry)
    if error is not None:
        print(f"llmops plan: error: --server-dry-run: {error}", file=sys.stderr)
        return 2
    for f in dry.failures:
        print(f"llmops plan: server dry run: {f.line()}", file=sys.stderr)
    return 1 if dry.failures else 0


def ask_server(steps: list[dict], job):
    """(the dry-run report, None), or (None, the error) without credentials or an answer."""
    from llmops.core import secrets
    from llmops.pipeline.dry_run import server_dry_run

    try:
        return server_dry_run(steps, job), None
    except LLMOpsError as e:
        return None, secrets.scrub(str(e))


def main(argv: list[str]) -> int:
    a = parse_with_recipe(parser(), argv)
    return plan(a.recipe, a.overrides, out=a.out, fmt=a.format, server_dry_run=a.server_dry_run)
