"""`llmops run`: Hydra's own main, with the recipe as primary config.

Every Hydra flag keeps working (`-m`, `--info`, `hydra.run.dir=...`, launchers and sweepers).
Two things differ from a bare Hydra app, both for secret hygiene: `--cfg` prints the config
masked, and Hydra's `.hydra/` copy of the config and overrides is not written (the engine writes
a masked `config.yaml`, `overrides.yaml` and `provenance.json` into the run directory instead).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("llmops")


def _print_cfg(recipe: Path, flags: list[str], overrides: list[str]) -> int:
    from omegaconf import OmegaConf

    from llmops.config import compose as c
    from llmops.config import secrets

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


def main(recipe: Path, flags: list[str], overrides: list[str]) -> int:
    if any(f in ("--cfg", "-c") for f in flags):
        return _print_cfg(recipe, flags, overrides)
    from llmops.config import compose as c
    from llmops.config import schema

    schema.register()
    argv = ["llmops", "--config-dir", str(recipe.parent), "--config-name", recipe.stem, *flags,
            *c.recipe_overrides(recipe, overrides), "hydra.output_subdir=null"]
    import hydra

    state = {"rc": 0}

    @hydra.main(version_base="1.3", config_path=None, config_name=None)
    def _task(cfg):
        return task(cfg, recipe, overrides, state)

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
            from llmops import sweeps

            sweeps.finish()  # the summary, also when the sweep ended in an error
    return state["rc"]


def task(cfg, recipe: Path, overrides: list[str], state: dict):
    """One job: validate, run the stages, print the outcome. Returns the eval perplexity."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from llmops import engine
    from llmops.config import compose as c
    from llmops.config.validate import validate
    from llmops.errors import LLMOpsError

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    job_overrides = list(hc.overrides.task)
    try:
        if multirun:  # sweep hooks: fail_fast, and one storage prefix per job (run_id)
            from llmops import sweeps

            sweeps.check_fail_fast(cfg)
            if not any(o.split("=", 1)[0] == "run_id" for o in job_overrides):
                from omegaconf import open_dict

                with open_dict(cfg):
                    cfg.run_id = f"{cfg.run_id}-j{hc.job.num}"
        source = c.lint(recipe, [o for o in job_overrides if not o.startswith("hydra.")])
        validate(cfg, source)
        out = engine.run(cfg, run_dir, overrides=job_overrides, recipe_path=recipe)
    except LLMOpsError as e:
        state["rc"] = 1
        if multirun:
            raise
        print(f"llmops: error: {e}", file=sys.stderr)
        print(f"llmops: run directory: {run_dir}", file=sys.stderr)
        return None
    _print_summary(out)
    return out["result"]


def _print_summary(out: dict) -> None:
    st = out["state"]["stages"]
    lines = [f"run {out['state']['run_id']}: {out['run_dir']}"]
    for name, s in st.items():
        if s.get("status") == "skipped":
            continue
        o = s.get("outputs", {})
        detail = ""
        if name == "prepare_data":
            detail = f"blocks {o.get('blocks')}"
        elif name == "train":
            m = o.get("metrics", {})
            detail = (f"eval_loss {m.get('eval_loss')}, perplexity {m.get('perplexity')}, "
                      f"{m.get('tokens_per_s')} tokens/s")
        elif name == "export":
            detail = f"{o.get('model_uri')}"
        elif name == "deploy":
            detail = f"{len(o.get('manifests', []))} manifests, applied={o.get('applied')}"
        elif name == "smoke_test":
            detail = f"{o.get('prompt')!r} -> {o.get('reply')!r}"
        reused = " (reused)" if s.get("reused") else ""
        lines.append(f"  {name:<12} {s.get('status')}{reused}  {detail}")
    print("\n".join(lines))
