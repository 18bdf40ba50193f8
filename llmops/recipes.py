"""`llmops recipes ls | show | cp | diff | lock`, recipe hashes and locked (frozen) recipes.

A *locked* recipe is written from a finished run: the run's composed config (secrets masked,
``${oc.env:...}`` references kept as references) with every default spelled out, under a
``defaults: [_llmops_schema, _self_]`` list so that no option file can change it later. Its header
carries the package versions and a content hash; ``llmops run`` refuses a locked recipe whose
content no longer matches its hash, and one written by another llmops major version unless
``LLMOPS_ALLOW_VERSION_MISMATCH=1`` is set.

Nothing heavy is imported: ``llmops recipes`` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from llmops.errors import LLMOpsError

LOCK_MARK = "# llmops-lock: "
ALLOW_MISMATCH_ENV = "LLMOPS_ALLOW_VERSION_MISMATCH"
# keys a locked recipe leaves open: a new run gets a new id (and so a new storage prefix)
UNLOCKED = {"run_id": "${run_name}-${now:%Y%m%d-%H%M%S}"}


# ------------------------------------------------------------------------------------- hashing
def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(obj: Any) -> str:
    return "sha256:" + hashlib.sha256(_canonical(obj).encode()).hexdigest()


def recipe_hash(path: Optional[Path]) -> Optional[str]:
    """Short hash of a recipe file's content (what labels and provenance carry)."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest()[:12]


def config_hash(masked_cfg: dict) -> str:
    """Short hash of a composed, masked config, without the keys that differ per run."""
    body = {k: v for k, v in masked_cfg.items() if k not in ("run_id", "hydra")}
    return hashlib.sha256(_canonical(body).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------- locking
def read_lock(path: Path) -> Optional[dict]:
    """The lock header of a recipe file, or None when it is not a locked recipe."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(LOCK_MARK):
                    try:
                        return json.loads(line[len(LOCK_MARK):])
                    except json.JSONDecodeError as e:
                        raise LLMOpsError(f"{path}: the llmops-lock header is not valid JSON ({e})") from None
                if not line.startswith("#"):
                    break
    except OSError:
        return None
    return None


def is_locked(path: Path) -> bool:
    return read_lock(path) is not None


def _body(path: Path) -> dict:
    from llmops.config.compose import load_yaml_file

    return load_yaml_file(path)


def check_lock(path: Path) -> None:
    """Raise when a locked recipe was edited after locking or comes from another major version."""
    lock = read_lock(path)
    if lock is None:
        return
    want = lock.get("hash")
    got = content_hash(_body(path))
    if want != got:
        raise LLMOpsError(
            f"{path}: locked recipe content does not match its hash (header says {want}, content is "
            f"{got}); it was edited after `llmops recipes lock`. Lock the run again, or copy it "
            f"without the '# llmops-lock:' line to make an ordinary recipe"
        )
    from llmops import __version__

    theirs = str(lock.get("llmops_version", ""))
    if theirs.split(".")[0] != __version__.split(".")[0] and os.environ.get(ALLOW_MISMATCH_ENV) != "1":
        raise LLMOpsError(
            f"{path}: locked with llmops {theirs}, this is llmops {__version__} (another major "
            f"version); set {ALLOW_MISMATCH_ENV}=1 to run it anyway"
        )


def _restore_env_refs(cfg: Any, raw: Any) -> Any:
    """Put `${oc.env:...}` references (masked as *** in config.yaml) back from the raw config."""
    from llmops.config.secrets import MASK

    if isinstance(cfg, dict) and isinstance(raw, dict):
        return {k: _restore_env_refs(v, raw.get(k)) for k, v in cfg.items()}
    if isinstance(cfg, list) and isinstance(raw, list) and len(cfg) == len(raw):
        return [_restore_env_refs(a, b) for a, b in zip(cfg, raw)]
    if cfg == MASK and isinstance(raw, str) and "${oc.env:" in raw:
        return raw
    return cfg


def lock(run_dir: Path, out: Optional[Path] = None) -> Path:
    """Write the frozen recipe of a finished run; return its path."""
    from llmops import __version__
    from llmops.config import secrets
    from llmops.engine import atomic_write_text

    run_dir = Path(run_dir)
    cfg_p, prov_p, state_p = run_dir / "config.yaml", run_dir / "provenance.json", run_dir / "state.json"
    for p in (cfg_p, prov_p, state_p):
        if not p.is_file():
            raise LLMOpsError(f"{run_dir}: no {p.name}; not a run directory written by `llmops run`")
    prov = json.loads(prov_p.read_text())
    state = json.loads(state_p.read_text())
    unfinished = [n for n, s in state.get("stages", {}).items() if s.get("status") not in ("done", "skipped")]
    if unfinished:
        raise LLMOpsError(f"{run_dir}: stages {', '.join(unfinished)} did not finish; lock a finished run")
    cfg = yaml.safe_load(cfg_p.read_text()) or {}

    # the unresolved config, to keep ${oc.env:...} references instead of ***
    masked_keys = []
    try:
        from omegaconf import OmegaConf

        from llmops.config.compose import compose, strip_hydra

        ov = [o for o in prov.get("overrides", []) if not o.startswith("hydra.")]
        if prov.get("recipe_path") and Path(prov["recipe_path"]).is_file():
            raw, _ = compose(prov["recipe_path"], ov, check=False)
            cfg = _restore_env_refs(cfg, OmegaConf.to_container(strip_hydra(raw), resolve=False))
    except LLMOpsError:
        pass
    from llmops.config.compose import _flatten

    masked_keys = [k for k, v in _flatten(cfg) if v == secrets.MASK]

    cfg.update(UNLOCKED)
    cfg.pop("hydra", None)
    base = yaml.safe_load((_conf_dir() / "config.yaml").read_text())
    body: dict[str, Any] = {"defaults": ["_llmops_schema", "_self_"]}
    body.update(cfg)
    body["hydra"] = base.get("hydra", {})
    header = {
        "hash": content_hash(body),
        "llmops_version": __version__,
        "recipe": prov.get("recipe"),
        "recipe_hash": prov.get("recipe_hash") or recipe_hash(Path(prov["recipe_path"]))
        if prov.get("recipe_path") else None,
        "run_id": prov.get("run_id"),
        "versions": prov.get("versions", {}),
        "git_commit": prov.get("git_commit"),
    }
    name = f"{prov.get('recipe') or 'recipe'}.lock.yaml"
    dest = Path(out) if out else run_dir / name
    if dest.is_dir():
        dest = dest / name
    lines = [
        f"# Locked llmops recipe: the config of run {prov.get('run_id')} ({run_dir.resolve()})",
        "# with every default spelled out. Run it (a new run id, everything else as that run):",
        f"#   llmops run {dest}",
        "# Do not edit: the hash below covers the content; copy it to make an ordinary recipe.",
    ]
    if masked_keys:
        lines.append(f"# Secrets were masked ({', '.join(masked_keys)}): give them on the command line.")
    lines.append(LOCK_MARK + json.dumps(header, sort_keys=True))
    text = "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
    # the hash is over the parsed YAML, so check that what we write parses back to it
    if content_hash(yaml.safe_load(text)) != header["hash"]:
        raise LLMOpsError(f"{dest}: internal error, the locked recipe does not round-trip")
    atomic_write_text(dest, text)
    return dest


def _conf_dir() -> Path:
    from llmops import resources

    return resources.conf_dir()


# ------------------------------------------------------------------------------------- commands
def command(args) -> int:
    return {"ls": cmd_ls, "show": cmd_show, "cp": cmd_cp, "diff": cmd_diff, "lock": cmd_lock}[args.action](args)


def cmd_ls(args) -> int:
    from llmops import recipe_sources as rs

    entries = rs.all_recipes()
    if not entries:
        print("no recipes on the recipe path")
        return 0
    w = max(len(n) for n in entries)
    ws = max(len(e.source.label) for e in entries.values())
    print(f"{'NAME':<{w}}  {'SOURCE':<{ws}}  LOCATION")
    for name, e in entries.items():
        print(f"{name:<{w}}  {e.source.label:<{ws}}  {e.location}")
    clashes = [e for e in entries.values() if e.shadowed]
    for e in clashes:
        print(f"warning: {rs.clash_message(e)}", file=sys.stderr)
    return 0


def _masked(name: str, overrides: list[str]) -> tuple[dict, dict]:
    """(masked job config, group choices) of a recipe composed with overrides."""
    from omegaconf import OmegaConf

    from llmops.config import secrets
    from llmops.config.compose import compose

    cfg, _ = compose(name, overrides, check=False)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices, resolve=False)
    choices = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    return secrets.mask(cfg), choices


def cmd_show(args) -> int:
    from llmops.config.compose import find_recipe

    path = find_recipe(args.name, args.overrides)
    if args.raw:
        print(path.read_text(), end="")
        return 0
    data, choices = _masked(args.name, list(args.overrides))
    from llmops import recipe_sources as rs

    entry = rs.all_recipes(args.overrides).get(args.name)
    where = f"{entry.location} ({entry.source.label})" if entry else str(path)
    print(f"# recipe {args.name}: {where}")
    print(f"# options: {', '.join(f'{k}={v}' for k, v in choices.items())}")
    print(f"# recipe hash: {recipe_hash(path)}; composed and secrets masked")
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(OmegaConf.create(data)), end="")
    return 0


def cmd_cp(args) -> int:
    from llmops.config.compose import find_recipe
    from llmops.engine import atomic_write_text

    src = find_recipe(args.name)
    dest = Path(args.dest)
    if dest.is_dir() or str(args.dest).endswith(os.sep):
        dest = dest / f"{args.name}.yaml"
    if dest.suffix not in (".yaml", ".yml"):
        raise LLMOpsError(f"recipes cp: destination '{dest}' must end in .yaml (or be a folder)")
    if dest.exists():
        raise LLMOpsError(f"recipes cp: '{dest}' exists; not overwriting it (remove it first)")
    text = src.read_text()
    if is_locked(src):  # a copy is for editing: it is no longer a locked recipe
        text = "".join(l for l in text.splitlines(keepends=True) if not l.startswith(LOCK_MARK))
    atomic_write_text(dest, text)
    print(f"copied {args.name} ({src}) to {dest}")
    if dest.parent.resolve() not in [Path(p).resolve() for p in _recipe_path_dirs()]:
        print(f"run it with: llmops run {dest}   (or add {dest.parent} to LLMOPS_RECIPE_PATH)")
    return 0


def _recipe_path_dirs() -> list[Path]:
    from llmops.config.compose import recipe_dirs

    return recipe_dirs()


def diff_configs(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """(key, a value, b value) for every key whose value differs; `<absent>` marks a missing key."""
    from llmops.config.compose import _flatten

    fa, fb = dict(_flatten(a)), dict(_flatten(b))
    absent = "<absent>"
    out = []
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k, absent), fb.get(k, absent)
        if va != vb:
            out.append((k, va, vb))
    return out


def cmd_diff(args) -> int:
    da, ca = _masked(args.a, [])
    db, cb = _masked(args.b, [])
    rows = []
    for g in sorted(set(ca) | set(cb)):
        if ca.get(g) != cb.get(g):
            rows.append((f"{g} (option)", ca.get(g), cb.get(g)))
    volatile = {"recipe", "run_name", "run_id"}
    rows += [r for r in diff_configs(da, db) if r[0] not in volatile]
    if not rows:
        print(f"{args.a} and {args.b} compose to the same config")
        return 0
    w = max(len(r[0]) for r in rows)
    print(f"{'KEY':<{w}}  {args.a}  ->  {args.b}")
    for k, va, vb in rows:
        print(f"{k:<{w}}  {_show(va)}  ->  {_show(vb)}")
    return 0


def _show(v: Any) -> str:
    return v if isinstance(v, str) and v == "<absent>" else json.dumps(v, default=str)


def cmd_lock(args) -> int:
    dest = lock(args.run_dir, args.out)
    print(f"wrote locked recipe {dest}")
    print(f"run it with: llmops run {dest}")
    return 0
