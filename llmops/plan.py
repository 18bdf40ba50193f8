"""`llmops plan`, `llmops validate` and `llmops resume`: compose, check, describe. No side effects."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import yaml

from llmops.errors import ConfigError, LLMOpsError


def plan_command(recipe: str, overrides: list[str], *, out: Optional[Path] = None,
                 fmt: str = "yaml") -> int:
    from omegaconf import OmegaConf

    from llmops import engine
    from llmops.config import compose as c
    from llmops.config import secrets

    cfg, _ = c.compose(recipe, overrides)
    job = c.strip_hydra(cfg)
    steps = engine.plan(job)
    report = {
        "recipe": str(job.recipe),
        "run_id": str(job.run_id),
        "run_dir": str(Path(str(job.paths.output_root)) / str(job.run_id)),
        "config": secrets.mask(job),
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


def object_filename(i: int, obj: dict) -> str:
    kind = str(obj.get("kind", "object")).lower()
    name = str(obj.get("metadata", {}).get("name", "unnamed"))
    return f"{i:02d}-{kind}-{name}.yaml"


def write_objects(objects: list[dict], out: Path) -> list[Path]:
    """Each object as its own YAML file in `out` (written to a temp name, then renamed)."""
    from llmops.engine import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, o in enumerate(objects):
        p = out / object_filename(i, o)
        atomic_write_text(p, yaml.safe_dump(o, sort_keys=False))
        paths.append(p)
    return paths


def validate_command(recipe: str, overrides: list[str], *, check_all: bool = False) -> int:
    from llmops.config import compose as c

    targets = [n for n, _ in c.list_recipes()] if check_all else [recipe]
    failed = 0
    for name in targets:
        try:
            c.compose(name, [] if check_all else overrides)
        except LLMOpsError as e:
            failed += 1
            print(f"{name}: {e}", file=sys.stderr)
        else:
            print(f"{name}: ok")
    return 1 if failed else 0


def resume_args(run_dir: Path, extra: list[str]) -> list[str]:
    """`llmops run` arguments that rerun `run_dir` with its recipe and overrides."""
    run_dir = Path(run_dir)
    state_p, ov_p = run_dir / "state.json", run_dir / "overrides.yaml"
    if not state_p.is_file():
        raise LLMOpsError(f"{run_dir}: no state.json; not an llmops run directory")
    state = json.loads(state_p.read_text())
    prov_p = run_dir / "provenance.json"
    recipe = state.get("recipe")
    if prov_p.is_file():
        recipe = json.loads(prov_p.read_text()).get("recipe_path", recipe)
    overrides = yaml.safe_load(ov_p.read_text()) if ov_p.is_file() else []
    overrides = [o for o in overrides or [] if not o.startswith(("hydra.run.dir", "run_id", "recipe="))]
    if any("***" in o for o in overrides):
        raise LLMOpsError(f"{ov_p}: an override held a secret (masked); rerun with it given again")
    return [recipe, *overrides, *extra, f"hydra.run.dir={run_dir.resolve()}",
            f"run_id={state['run_id']}"]
