"""Hydra glue only: `llmops run` through Hydra's own main, with the recipe as primary config, and
the sweep callback.

Every Hydra flag keeps working (`-m`, `--info`, `hydra.run.dir=...`, launchers and sweepers).
Two things differ from a bare Hydra app, both for secret hygiene: `--cfg` prints the config
masked, and Hydra's `.hydra/` copy of the config and overrides is not written (the engine writes
a masked `config.yaml`, `overrides.yaml` and `provenance.json` into the run directory instead).

The job itself is `llmops.pipeline.engine.run`; the job's return value (what a sweeper such as
Optuna optimises) is the metric `sweep.metric` names.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[misc,assignment]

from llmops.core.errors import LLMOpsError, signal_name, signal_of

log = logging.getLogger("llmops")

# the sweep running in this process (set by SweepCallback)
_current: dict[str, Any] = {}


def print_cfg(recipe: Path, flags: list[str], overrides: list[str]) -> int:
    """`--cfg job|hydra|all`: the composed config, masked."""
    from omegaconf import OmegaConf

    from llmops.config import compose as c
    from llmops.core import secrets

    which = "job"
    for i, f in enumerate(flags):
        if f in ("--cfg", "-c") and i + 1 < len(flags):
            which = flags[i + 1]
    cfg, _ = c.compose(str(recipe), overrides, check=False)
    resolve = "--resolve" in flags
    if which == "hydra":
        print(OmegaConf.to_yaml(cfg.hydra))
        return 0
    data = secrets.mask(cfg, resolve=resolve)
    if which == "all":
        data["hydra"] = OmegaConf.to_container(cfg.hydra, resolve=False)
    print(OmegaConf.to_yaml(OmegaConf.create(data)), end="")
    return 0


def main(recipe: Path, flags: list[str], overrides: list[str], *, checked: bool) -> int:
    """Run Hydra's main. `checked`: the caller has composed and checked this exact config already
    (a single run); sweep jobs are checked each as it starts."""
    from llmops.config import compose as c
    from llmops.config import schema

    schema.register()
    argv = ["llmops", "--config-dir", str(recipe.parent), "--config-name", recipe.stem, *flags,
            *c.recipe_overrides(recipe, overrides), "hydra.output_subdir=null"]
    import hydra

    state = {"rc": 0}

    @hydra.main(version_base="1.3", config_path=None, config_name=None)
    def _task(cfg):
        return task(cfg, recipe, state, checked=checked)

    old = sys.argv
    sys.argv = argv
    multirun = any(f in ("-m", "--multirun") for f in flags)
    try:
        _task()
    except SystemExit as e:  # Hydra ends a sweep with a failed job this way
        if not multirun:
            raise
        state["rc"] = e.code if isinstance(e.code, int) and e.code else 1
    finally:
        sys.argv = old
        if multirun:
            finish_sweep()  # the summary, also when the sweep ended in an error
    return state["rc"]


def task(cfg, recipe: Path, state: dict, *, checked: bool) -> Optional[float]:
    """One job: check (sweep jobs), run the stages, print the outcome. Returns the sweep metric."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from llmops.config import compose as c
    from llmops.pipeline import engine
    from llmops.pipeline.checks import validate

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    job_overrides = list(hc.overrides.task)
    try:
        if multirun:  # sweep hooks: fail_fast, and one storage prefix per job (run_id)
            if _current.get("failed") and bool(cfg.sweep.fail_fast):
                raise NotRun(f"not run: sweep.fail_fast=true and job {_current['failed'][0]} failed")
            engine.set_job_run_id(cfg, int(hc.job.num), job_overrides)
        if not checked:
            source = c.lint(recipe, [o for o in job_overrides if not o.startswith("hydra.")])
            validate(cfg, source)
        result = engine.run(cfg, run_dir, overrides=job_overrides, recipe_path=recipe)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the engine marked the stage interrupted
        print(f"llmops: interrupted by {signal_name(signal_of(e))}; to go on from where it "
              f"stopped: llmops resume {run_dir}", file=sys.stderr)
        e.reported = True  # type: ignore[attr-defined]
        raise
    except LLMOpsError as e:
        state["rc"] = 1
        if multirun:
            raise
        print(f"llmops: error: {e}", file=sys.stderr)
        print(f"llmops: run directory: {run_dir}", file=sys.stderr)
        return None
    print(result.summary())
    return result.metric


# ----------------------------------------------------------------------------------------- sweeps
class NotRun(LLMOpsError):
    """A job skipped because an earlier job failed and sweep.fail_fast is set."""


class SweepCallback(Callback):
    """Records each multirun job's outcome and writes the summary at the end of the sweep."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        # the sweep directory exists before the sweeper starts (optuna's sqlite study lives there)
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        _current.clear()
        _current.update({"dir": str(config.hydra.sweep.dir), "failed": [], "done": False,
                         "t0": time.time(), "sweep": _sweep_opts(config)})

    def on_job_start(self, config, **kwargs) -> None:
        if _is_multirun(config):
            _current.setdefault("job_t0", {})[int(config.hydra.job.num)] = time.time()

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if not _is_multirun(config):
            return
        from hydra.core.utils import JobStatus

        from llmops.run import sweep

        num = int(config.hydra.job.num)
        t0 = _current.get("job_t0", {}).get(num, time.time())
        failed = job_return.status == JobStatus.FAILED
        err, value = None, None
        try:
            value = job_return.return_value  # re-raises the job's exception when it failed
        except Exception as e:  # noqa: BLE001 - the job's own error, recorded as such
            err = e
        rec = {
            "num": num,
            "overrides": list(config.hydra.overrides.task),
            "status": "failed" if failed else "completed",
            "error": sweep.error_text(err) if failed else None,
            "seconds": round(time.time() - t0, 2),
            "result": None if failed else sweep.jsonable(value),
            "started": t0, "ended": time.time(), "launcher": "in-process",
        }
        if failed and isinstance(err, NotRun):
            rec["status"] = "not run"
        if failed:
            note_failure(num)
        sweep.write_job_record(Path(str(config.hydra.runtime.output_dir)), rec)

    def on_multirun_end(self, config, **kwargs) -> None:
        finish_sweep()


def note_failure(num: int) -> None:
    """Record that sweep job `num` failed (launchers that run jobs elsewhere call this)."""
    _current.setdefault("failed", []).append(num)


def _is_multirun(config) -> bool:
    from hydra.types import RunMode

    try:
        return config.hydra.mode == RunMode.MULTIRUN
    except Exception:
        return False


def _sweep_opts(config) -> dict:
    s = config.get("sweep") if hasattr(config, "get") else None
    out = {"fail_fast": False, "metric": "perplexity", "direction": "minimize", "plot": True}
    if s is not None:
        for k in out:
            if k in s:
                out[k] = s[k]
    return out


def finish_sweep() -> Optional[Path]:
    """Write and print the summary of the sweep running in this process (once)."""
    from llmops.run import sweep

    if not _current or _current.get("done"):
        return None
    _current["done"] = True
    d = Path(_current["dir"])
    if not d.is_dir():
        return None
    opts = _current.get("sweep", {})
    try:
        rows = sweep.write_summary(d, metric=str(opts.get("metric", "perplexity")),
                                   direction=str(opts.get("direction", "minimize")),
                                   plot=bool(opts.get("plot", True)))
    except Exception as e:  # the summary must not hide the sweep's own outcome
        log.warning("could not write the sweep summary in %s: %s", d, e)
        return None
    print(sweep.format_table(rows, d))
    return d
