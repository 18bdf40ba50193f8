"""`llmops promote SWEEP_DIR [overrides...]`: deploy the best job of a sweep with the recipe's
serving config (reruns deploy and smoke_test in the best job's run directory)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llmops.core.errors import LLMOpsError
from llmops.core.io import atomic_write_json
from llmops.run import RunDir, sweep

PROMOTE_STAGES = "stages=[deploy,smoke_test]"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops promote", description=(
        "Deploy the best job of a sweep with the recipe's serving config."))
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("overrides", nargs="*")
    return p


def promote(sweep_dir: Path, overrides: list[str]) -> int:
    from llmops.commands import resume, run

    rows, rank = sweep.rebuild(sweep_dir)
    best = sweep.best_row(rows)
    if best is None:
        raise LLMOpsError(f"{sweep_dir}: no completed job with a {rank.metric}; nothing to promote")
    rd = RunDir(Path(best["run_dir"]))
    if rd.state().status("export") != "done":
        raise LLMOpsError(f"{rd}: the best job (job {best['job']}) has no finished export stage; "
                          f"run the sweep with export in stages to promote it")
    print(f"promoting job {best['job']} ({' '.join(best['overrides'])}, {rank.metric} "
          f"{sweep.fmt(best['metric'])}) from {rd}")
    # the job's own stage list (often without deploy in a sweep) gives way to the promote stages
    args = [a for a in resume.resume_args(rd.path, list(overrides)) if not a.startswith("stages=")]
    rc = run.main([*args, PROMOTE_STAGES])
    if rc == 0:
        atomic_write_json(Path(sweep_dir) / "promoted.json", {
            "job": best["job"], "run_dir": str(rd), "overrides": best["overrides"],
            "metric": rank.metric, "direction": rank.direction, "value": best["metric"],
            "deploy": rd.state().data["stages"].get("deploy", {}),
        })
    return rc


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    return promote(a.sweep_dir, a.overrides)
