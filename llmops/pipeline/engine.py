"""The engine: runs the stage line in a run directory.

``state.json`` holds each stage's status, input fingerprint and outputs (llmops.run); a rerun in
the same run directory skips a finished stage whose fingerprint (its config inputs plus its
upstream stages' fingerprints) did not change, and redoes the rest. After the last selected stage
(whether the line succeeded or not) each stage's cleanup runs, e.g. deleting what deploy applied
when serving.keep=false. The job's return value is the train metric `sweep.metric` names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from llmops.config.paths import absolute_paths
from llmops.core import secrets
from llmops.core.errors import LLMOpsError, StageError, signal_name, signal_of
from llmops.core.io import atomic_write_json, atomic_write_text
from llmops.pipeline import stages
from llmops.pipeline.stages import StageDef, selected
from llmops.run import RunContext, RunLock, State
from llmops.run.rundir import foreign_dir_problem
from llmops.run.provenance import provenance
from llmops.run.rundir import CONFIG_FILE, OVERRIDES_FILE, PROVENANCE_FILE, STATE_FILE

log = logging.getLogger("llmops")


@dataclass
class RunResult:
    state: State
    run_dir: Path
    metric: Optional[float]  # the train metric `sweep.metric` names (the job's return value)
    line: tuple = ()

    def summary(self) -> str:
        """The run's outcome, a line per stage that ran or was reused."""
        lines = [f"run {self.state.run_id}: {self.run_dir}"]
        for d in self.line:
            st = self.state.data["stages"].get(d.name) or {}
            if st.get("status") in (None, "skipped"):
                continue
            detail = self.state.outputs(d.name).summary() if st.get("status") == "done" else ""
            reused = " (reused)" if st.get("reused") else ""
            lines.append(f"  {d.name:<12} {st.get('status')}{reused}  {detail}")
        return "\n".join(lines)


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_fingerprint(cfg: DictConfig, stage: StageDef | str, upstream: dict[str, str]) -> str:
    """A stage's input fingerprint: its config inputs and its upstream stages' fingerprints."""
    d = next(s for s in stages.LINE if s.name == stage) if isinstance(stage, str) else stage
    inputs = d.inputs(cfg)
    return _fingerprint({"inputs": secrets.mask(inputs) if OmegaConf.is_config(inputs) else inputs,
                         "upstream": {n: upstream.get(n) for n in d.needs}})


def job_run_id(run_id: str, num: int) -> str:
    """The run id of sweep job `num`: each job gets its own storage prefix."""
    return f"{run_id}-j{num}"


def set_job_run_id(cfg: DictConfig, num: int, job_overrides: list[str]) -> None:
    """In a sweep, give the job its own run id unless its overrides set one."""
    if not any(o.split("=", 1)[0] == "run_id" for o in job_overrides):
        with open_dict(cfg):
            cfg.run_id = job_run_id(str(cfg.run_id), num)


def sweep_metric(cfg: DictConfig, state: State) -> Optional[float]:
    """The job's return value: the train metric `sweep.metric` names (None when train did not run)."""
    if state.status("train") != "done":
        return None
    return state.outputs("train").metric(str(OmegaConf.select(cfg, "sweep.metric", default="perplexity")))


def open_run(cfg: DictConfig, run_dir: Path) -> RunContext:
    """The context for a run in `run_dir`; an existing state.json keeps its run id. A folder
    that holds other files and no state.json is refused (nothing in it is touched)."""
    run_dir = Path(run_dir).resolve()
    why = foreign_dir_problem(run_dir)
    if why:
        raise LLMOpsError(why)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = State.load(run_dir, str(cfg.run_id), str(cfg.recipe))
    if state.run_id != str(cfg.run_id):
        log.info("resuming run %s in %s", state.run_id, run_dir)
        with open_dict(cfg):
            cfg.run_id = state.run_id
    return RunContext(run_dir=run_dir, run_id=state.run_id, recipe=str(cfg.recipe), state=state)


def _write_run_files(cfg: DictConfig, ctx: RunContext, overrides: list[str],
                     recipe_path: Optional[Path]) -> None:
    import yaml

    masked = secrets.mask(cfg)
    atomic_write_text(ctx.run_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(masked)))
    prov = provenance(cfg, overrides, recipe_path)
    atomic_write_json(ctx.run_dir / PROVENANCE_FILE, prov)
    atomic_write_text(ctx.run_dir / OVERRIDES_FILE, yaml.safe_dump(prov["overrides"]))
    ctx.provenance = prov


def _mark_pending(cfg: DictConfig, state: State, line: Sequence[StageDef],
                  chosen: list[StageDef]) -> dict[str, str]:
    """Reset every chosen stage whose inputs changed; returns the fingerprints of the stages whose
    outputs stand (finished and unchanged, or not chosen but finished earlier)."""
    names = {d.name for d in chosen}
    upstream: dict[str, str] = {}
    for d in line:
        st = state.stage(d.name)
        if d.name not in names:
            if st.get("status") == "done":
                upstream[d.name] = st.get("fingerprint")
            else:
                st["status"] = "skipped"
            continue
        fp = stage_fingerprint(cfg, d, upstream)
        if st.get("status") == "done" and st.get("fingerprint") == fp:
            log.info("stage %s: unchanged since the last run, reusing its outputs", d.name)
            st["reused"] = True
            upstream[d.name] = fp
        else:
            st.clear()
            st.update({"status": "pending", "fingerprint": fp})
    state.save()
    return upstream


def _run_stage(cfg: DictConfig, ctx: RunContext, d: StageDef, fp: str) -> None:
    state = ctx.state
    st = state.stage(d.name)
    log.info("stage %s: running", d.name)
    t0 = time.time()
    st.update({"status": "running", "fingerprint": fp})
    state.save()
    try:
        outputs = d.run(cfg, ctx)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (llmops.cli turns it into Interrupted)
        how = signal_name(signal_of(e))
        st.update({"status": "interrupted", "error": f"interrupted by {how}",
                   "interrupted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "seconds": round(time.time() - t0, 2)})
        state.save()
        raise
    except Exception as e:
        msg = secrets.scrub(str(e) if isinstance(e, LLMOpsError) else f"{type(e).__name__}: {e}")
        st.update({"status": "failed", "error": msg, "seconds": round(time.time() - t0, 2)})
        state.save()
        tb = secrets.scrub(traceback.format_exc())
        atomic_write_text(ctx.run_dir / f"{d.name}.error.txt", tb)
        log.debug("%s", tb)
        raise StageError(d.name, msg) from e
    st.update({"status": "done", "seconds": round(time.time() - t0, 2)})
    state.set_outputs(d.name, outputs)
    st.pop("error", None)
    st.pop("reused", None)
    state.save()
    log.info("stage %s: done in %.1f s", d.name, time.time() - t0)


def run(cfg: DictConfig, run_dir: Path, *, overrides: Optional[list[str]] = None,
        recipe_path: Optional[Path] = None, line: Optional[Sequence[StageDef]] = None) -> RunResult:
    """Run the stages of `line` (default: the stage line) that `cfg.stages` selects in `run_dir`,
    in line order, then their cleanups."""
    line = stages.LINE if line is None else line
    absolute_paths(cfg)
    why = foreign_dir_problem(run_dir)  # before the lock file is written there
    if why:
        raise LLMOpsError(why)
    with RunLock(Path(run_dir).resolve()):  # one process at a time runs stages in a run directory
        return _run_locked(cfg, run_dir, overrides, recipe_path, line)


def _note_stale(state: State) -> None:
    """A stage still `running` in state.json was left so by a process that was killed."""
    for name, st in state.data["stages"].items():
        if st.get("status") == "running":
            log.warning("stage %s: state.json says 'running', but the process that ran it ended "
                        "without finishing (killed?); running it again", name)


def _run_locked(cfg: DictConfig, run_dir: Path, overrides: Optional[list[str]],
                recipe_path: Optional[Path], line: Sequence[StageDef]) -> RunResult:
    ctx = open_run(cfg, run_dir)
    state = ctx.state
    _note_stale(state)
    secrets.install_log_filter()
    _write_run_files(cfg, ctx, overrides or [], recipe_path)
    chosen = selected(cfg, line)
    upstream = _mark_pending(cfg, state, line, chosen)
    try:
        for d in chosen:
            if state.status(d.name) == "done":
                continue
            fp = stage_fingerprint(cfg, d, upstream)  # a changed upstream changes it too
            _run_stage(cfg, ctx, d, fp)
            upstream[d.name] = fp
    finally:
        for d in chosen:
            if d.cleanup is not None:
                try:
                    d.cleanup(cfg, ctx)
                except LLMOpsError as e:
                    log.error("stage %s: cleanup failed: %s", d.name, e)
    return RunResult(state=state, run_dir=ctx.run_dir, metric=sweep_metric(cfg, state), line=tuple(line))


def plan(cfg: DictConfig, run_dir: Optional[Path] = None,
         line: Optional[Sequence[StageDef]] = None) -> list[dict]:
    """What each selected stage would do and write. No side effects."""
    line = stages.LINE if line is None else line
    absolute_paths(cfg)
    rd = Path(run_dir) if run_dir else Path(str(cfg.paths.output_root)) / str(cfg.run_id)
    ctx = RunContext(run_dir=rd.resolve(), run_id=str(cfg.run_id), recipe=str(cfg.recipe), dry_run=True)
    return [{"stage": d.name, "does": d.describe, **(d.plan(cfg, ctx) or {})} for d in selected(cfg, line)]
