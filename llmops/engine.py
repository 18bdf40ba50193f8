"""The stage line: run directory, state.json, fingerprints, resume, provenance.

A stage is a plain function ``run(cfg, ctx) -> dict`` with a side-effect-free ``plan(cfg, ctx)``
and the config sections it reads (``inputs``). Stages register by name; ``cfg.stages`` picks which
run, always in the canonical order. ``state.json`` holds each stage's status, input fingerprint
and outputs; a rerun in the same run directory skips a finished stage whose fingerprint (its
config inputs plus its upstream stages' fingerprints) did not change, and redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from llmops.config import secrets
from llmops.config.schema import ALL_STAGES
from llmops.errors import LLMOpsError, StageError

log = logging.getLogger("llmops")

STATE_FILE = "state.json"


# ---------------------------------------------------------------------------------------- files
def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


# ---------------------------------------------------------------------------------------- stages
@dataclass
class StageDef:
    name: str
    run: Callable[[DictConfig, "RunContext"], dict]
    plan: Callable[[DictConfig, "RunContext"], dict]
    inputs: Callable[[DictConfig], Any]
    needs: tuple[str, ...] = ()  # upstream stages whose outputs this one reads
    describe: str = ""


STAGES: dict[str, StageDef] = {}


def stage(name: str, *, inputs: Callable[[DictConfig], Any], needs: tuple[str, ...] = (),
          plan: Optional[Callable] = None, describe: str = ""):
    """Decorator: register `fn(cfg, ctx) -> dict` as stage `name`."""

    def deco(fn):
        STAGES[name] = StageDef(name=name, run=fn, plan=plan or (lambda cfg, ctx: {}),
                                inputs=inputs, needs=needs, describe=describe or (fn.__doc__ or "").strip())
        return fn

    return deco


def _load_stages() -> None:
    import llmops.stages  # noqa: F401  (registers the built-in stages)


# ----------------------------------------------------------------------------------------- state
class State:
    """state.json: {"run_id", "recipe", "stages": {NAME: {status, fingerprint, outputs, error}}}"""

    def __init__(self, path: Path, data: dict):
        self.path = path
        self.data = data

    @classmethod
    def load(cls, run_dir: Path, run_id: str, recipe: str) -> "State":
        path = run_dir / STATE_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise LLMOpsError(f"{path}: not valid JSON ({e}); move it away to start afresh") from None
        else:
            data = {"run_id": run_id, "recipe": recipe, "stages": {}}
        data.setdefault("stages", {})
        return cls(path, data)

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    def stage(self, name: str) -> dict:
        return self.data["stages"].setdefault(name, {"status": "pending"})

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


@dataclass
class RunContext:
    run_dir: Path
    run_id: str
    recipe: str
    state: Optional[State] = None
    dry_run: bool = False  # plan: nothing may be written or contacted
    extra: dict = field(default_factory=dict)

    def outputs(self, name: str) -> dict:
        if self.state is None:
            return {}
        st = self.state.data["stages"].get(name)
        if not st or st.get("status") != "done":
            raise LLMOpsError(
                f"stage '{name}' has not finished in {self.run_dir}: its outputs are needed; "
                f"add it to stages=[...] or rerun it"
            )
        return st.get("outputs", {})

    def stage_dir(self, name: str) -> Path:
        p = self.run_dir / name
        if not self.dry_run:
            p.mkdir(parents=True, exist_ok=True)
        return p


def _stage_names(cfg: DictConfig) -> list[str]:
    chosen = {str(getattr(s, "value", s)) for s in cfg.stages}
    return [s for s in ALL_STAGES if s in chosen]


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_fingerprint(cfg: DictConfig, name: str, upstream: dict[str, str]) -> str:
    d = STAGES[name]
    inputs = d.inputs(cfg)
    return _fingerprint({"inputs": secrets.mask(inputs) if OmegaConf.is_config(inputs) else inputs,
                         "upstream": {n: upstream.get(n) for n in d.needs}})


# ------------------------------------------------------------------------------------ provenance
def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("llmops", "hydra-core", "omegaconf", "torch", "transformers", "datasets", "peft",
                 "ray", "boto3", "kubernetes", "jinja2", "codeflare-sdk"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(where: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def mask_overrides(overrides: list[str]) -> list[str]:
    """Overrides as they may be saved: a secret-looking key's value is masked."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        last = key.lstrip("+~").split(".")[-1]
        if sep and value and (secrets.is_secret_key(last) or "oc.env" in value):
            if "oc.env" not in value:
                secrets.remember(value)
                value = secrets.MASK
        out.append(secrets.scrub(f"{key}{sep}{value}"))
    return out


def provenance(cfg: DictConfig, overrides: list[str], recipe_path: Optional[Path] = None) -> dict:
    from llmops.recipes import config_hash, recipe_hash

    masked = secrets.mask(cfg)
    return {
        "run_id": str(cfg.run_id),
        "recipe": str(cfg.recipe),
        "recipe_path": str(recipe_path) if recipe_path else None,
        # recipe_hash: the recipe file as written; config_hash: the composed config (labels carry both)
        "recipe_hash": recipe_hash(recipe_path),
        "config_hash": config_hash(masked),
        "overrides": mask_overrides(overrides),
        "versions": package_versions(),
        "git_commit": git_commit(Path(__file__).resolve().parent) or git_commit(Path.cwd()),
        "config": masked,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ------------------------------------------------------------------------------------------- run
PATH_KEYS = ("paths.output_root", "paths.cache_dir", "storage.root", "storage.mount_path",
             "storage.ca_bundle", "dataset.dir")
MAYBE_LOCAL_KEYS = ("model.name_or_path", "model.tokenizer", "dataset.name")


def absolute_paths(cfg: DictConfig, base: Optional[Path] = None) -> None:
    """Make every local path in `cfg` absolute (against the working directory), in place.

    Workers run elsewhere (Ray sets their working directory to its session folder): a relative
    `storage.root` would put the model there instead of beside the user's outputs.
    """
    from omegaconf import open_dict

    base = Path(base or os.getcwd())

    def fix(value: str) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())

    with open_dict(cfg):
        for key in PATH_KEYS:
            v = OmegaConf.select(cfg, key)
            if isinstance(v, str) and v and "://" not in v:
                OmegaConf.update(cfg, key, fix(v))
        for key in MAYBE_LOCAL_KEYS:  # a hub id stays as it is
            v = OmegaConf.select(cfg, key)
            if isinstance(v, str) and v.startswith(("./", "../", "~")):
                OmegaConf.update(cfg, key, fix(v))
        for key in ("dataset.train_files", "dataset.eval_files"):
            v = OmegaConf.select(cfg, key)
            if v:
                OmegaConf.update(cfg, key, [fix(str(x)) for x in v], merge=False)


def open_run(cfg: DictConfig, run_dir: Path) -> RunContext:
    """The context for a run in `run_dir`; an existing state.json keeps its run id."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    state = State.load(run_dir, str(cfg.run_id), str(cfg.recipe))
    if state.run_id != str(cfg.run_id):
        log.info("resuming run %s in %s", state.run_id, run_dir)
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.run_id = state.run_id
    return RunContext(run_dir=run_dir, run_id=state.run_id, recipe=str(cfg.recipe), state=state)


def run(cfg: DictConfig, run_dir: Path, *, overrides: Optional[list[str]] = None,
        recipe_path: Optional[Path] = None) -> dict:
    """Run the selected stages in `run_dir`. Returns {"state": ..., "result": perplexity or None}."""
    _load_stages()
    absolute_paths(cfg)
    ctx = open_run(cfg, run_dir)
    state = ctx.state
    assert state is not None
    secrets.install_log_filter()
    masked = secrets.mask(cfg)
    atomic_write_text(ctx.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(masked)))
    prov = provenance(cfg, overrides or [], recipe_path)
    atomic_write_json(ctx.run_dir / "provenance.json", prov)
    import yaml

    atomic_write_text(ctx.run_dir / "overrides.yaml", yaml.safe_dump(prov["overrides"]))
    ctx.extra["provenance"] = prov

    selected = _stage_names(cfg)
    upstream: dict[str, str] = {}
    for name in ALL_STAGES:
        st = state.stage(name)
        if name not in selected:
            if st.get("status") != "done":
                st["status"] = "skipped"
            else:
                upstream[name] = st.get("fingerprint")
            continue
    for name in selected:
        st = state.stage(name)
        fp = stage_fingerprint(cfg, name, upstream)
        if st.get("status") == "done" and st.get("fingerprint") == fp:
            log.info("stage %s: unchanged since the last run, reusing its outputs", name)
            st["reused"] = True
            upstream[name] = fp
            continue
        if st.get("status") != "done" or st.get("fingerprint") != fp:
            st.clear()
            st.update({"status": "pending", "fingerprint": fp})
    state.save()

    for name in selected:
        st = state.stage(name)
        if st.get("status") == "done":
            continue
        # a changed upstream changes this fingerprint too
        fp = stage_fingerprint(cfg, name, upstream)
        log.info("stage %s: running", name)
        t0 = time.time()
        st.update({"status": "running", "fingerprint": fp})
        state.save()
        try:
            outputs = STAGES[name].run(cfg, ctx) or {}
        except KeyboardInterrupt:
            st.update({"status": "failed", "error": "interrupted (Ctrl-C)"})
            state.save()
            raise
        except Exception as e:
            msg = secrets.scrub(str(e) if isinstance(e, LLMOpsError) else f"{type(e).__name__}: {e}")
            st.update({"status": "failed", "error": msg, "seconds": round(time.time() - t0, 2)})
            state.save()
            tb = secrets.scrub(traceback.format_exc())
            atomic_write_text(ctx.run_dir / f"{name}.error.txt", tb)
            log.debug("%s", tb)
            raise StageError(name, msg) from e
        st.update({"status": "done", "outputs": outputs, "seconds": round(time.time() - t0, 2)})
        st.pop("error", None)
        st.pop("reused", None)
        upstream[name] = fp
        state.save()
        log.info("stage %s: done in %.1f s", name, time.time() - t0)

    result = None
    train = state.data["stages"].get("train", {})
    if train.get("status") == "done":
        result = train.get("outputs", {}).get("metrics", {}).get("perplexity")
    return {"state": state.data, "result": result, "run_dir": str(ctx.run_dir)}


def plan(cfg: DictConfig, run_dir: Optional[Path] = None) -> list[dict]:
    """What each selected stage would do and write. No side effects."""
    _load_stages()
    absolute_paths(cfg)
    rd = Path(run_dir) if run_dir else Path(str(cfg.paths.output_root)) / str(cfg.run_id)
    ctx = RunContext(run_dir=rd.resolve(), run_id=str(cfg.run_id), recipe=str(cfg.recipe),
                     dry_run=True)
    out = []
    for name in _stage_names(cfg):
        d = STAGES[name]
        out.append({"stage": name, "does": d.describe, **(d.plan(cfg, ctx) or {})})
    return out
