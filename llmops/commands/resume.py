"""`llmops resume RUN_DIR [overrides...]`: rerun a run in its own directory with its own recipe and
overrides: finished stages with unchanged inputs are skipped, training resumes from its latest
checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmops.core.errors import LLMOpsError
from llmops.run import RunDir


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops resume", description=(
        "Rerun a run in its own directory with its own recipe and overrides: finished stages "
        "with unchanged inputs are skipped, training resumes from its latest checkpoint."))
    p.add_argument("run_dir", type=Path)
    p.add_argument("overrides", nargs="*", help="extra overrides (change inputs: stages rerun)")
    return p


def resume_args(run_dir: Path, extra: list[str]) -> list[str]:
    """`llmops run` arguments that rerun `run_dir` with its recipe and overrides."""
    rd = RunDir(run_dir)
    if not rd.is_run_dir():
        raise LLMOpsError(f"{run_dir}: no state.json; not an llmops run directory")
    state = rd.state()
    recipe = (rd.provenance() or {}).get("recipe_path") or state.recipe
    overrides = [o for o in rd.overrides() if not o.startswith(("hydra.run.dir", "run_id", "recipe="))]
    if any("***" in o for o in overrides):
        raise LLMOpsError(f"{rd.overrides_file}: an override held a secret (masked); rerun with it given again")
    return [recipe, *overrides, *extra, f"hydra.run.dir={rd.path.resolve()}", f"run_id={state.run_id}"]


def main(argv: list[str]) -> int:
    from llmops.commands import run

    a = parser().parse_args(argv)
    return run.main(resume_args(a.run_dir, a.overrides))
