"""`llmops recipes ls | show | cp | diff | lock`: list, show, copy, compare and lock recipes.

The locked-recipe format (header, hash, version check) is llmops.config.lock; `lock` here writes
one from a finished run directory.

Nothing heavy is imported: ``llmops recipes`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from llmops.config.lock import LOCK_MARK, UNLOCKED, content_hash, is_locked, recipe_hash
from llmops.core.errors import LLMOpsError
from llmops.run import RunDir


def _restore_env_refs(cfg: Any, raw: Any) -> Any:
    """Put `${oc.env:...}` references (masked as *** in config.yaml) back from the raw config."""
    from llmops.core.secrets import MASK

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
    from llmops.core import secrets
    from llmops.core.io import atomic_write_text

    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    prov, cfg = rd.provenance(), rd.config_dict()
    if prov is None or cfg is None or not rd.is_run_dir():
        raise LLMOpsError(f"{run_dir}: no state.json, config.yaml or provenance.json; not a run "
                          f"directory written by `llmops run`")
    state = rd.state()
    unfinished = [n for n, s in state.data["stages"].items() if s.get("status") not in ("done", "skipped")]
    if unfinished:
        raise LLMOpsError(f"{run_dir}: stages {', '.join(unfinished)} did not finish; lock a finished run")

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
    from llmops.core.tree import flatten

    masked_keys = [k for k, v in flatten(cfg) if v == secrets.MASK]

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
    from llmops.core import resources

    return resources.conf_dir()


# ------------------------------------------------------------------------------------- commands
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops recipes", description="List, show and share recipes.")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("ls", help="every recipe on the recipe path, with its source")
    s = sub.add_parser("show", help="print a recipe composed (secrets masked)")
    s.add_argument("name")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--raw", action="store_true", help="print the recipe file as written")
    s = sub.add_parser("cp", help="copy a recipe for editing")
    s.add_argument("name")
    s.add_argument("dest", type=Path)
    s = sub.add_parser("diff", help="what two recipes change against each other, key by key")
    s.add_argument("a")
    s.add_argument("b")
    s = sub.add_parser("lock", help="write a frozen recipe from a finished run")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--out", type=Path, default=None)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return {"ls": cmd_ls, "show": cmd_show, "cp": cmd_cp, "diff": cmd_diff, "lock": cmd_lock}[args.action](args)


def cmd_ls(args) -> int:
    from llmops.config import sources as rs

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


def _composed(name: str, overrides: list[str]):
    """(composed config with its hydra node, group choices) of a recipe with overrides."""
    from omegaconf import OmegaConf

    from llmops.config.compose import compose

    cfg, _ = compose(name, overrides, check=False)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices, resolve=False)
    choices = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    return cfg, choices


def _masked(name: str, overrides: list[str]) -> tuple[dict, dict]:
    """(masked job config, group choices) of a recipe composed with overrides."""
    from llmops.core import secrets

    cfg, choices = _composed(name, overrides)
    return secrets.mask(cfg), choices


def _hydra_section(cfg) -> dict:
    """The hydra node as a recipe sees it: what the recipe and its options set (launcher, sweeper,
    callbacks, logging, run dirs), without what Hydra fills in at run time; secrets masked."""
    from omegaconf import OmegaConf

    from llmops.core import secrets

    data = OmegaConf.to_container(cfg.hydra, resolve=False)
    for k in ("runtime", "overrides", "help", "hydra_help"):
        data.pop(k, None)
    return {"hydra": secrets.mask(data)}


def cmd_show(args) -> int:
    from llmops.config.compose import find_recipe

    path = find_recipe(args.name, args.overrides)
    if args.raw:
        print(path.read_text(), end="")
        return 0
    from llmops.config import targets
    from llmops.core import secrets

    cfg, choices = _composed(args.name, list(args.overrides))
    data = secrets.mask(cfg)
    data.update(_hydra_section(cfg))
    from llmops.config import sources as rs

    entry = rs.all_recipes(args.overrides).get(args.name)
    where = f"{entry.location} ({entry.source.label})" if entry else str(path)
    print(f"# recipe {args.name}: {where}")
    print(f"# options: {', '.join(f'{k}={v}' for k, v in choices.items())}")
    print(f"# recipe hash: {recipe_hash(path)}; composed and secrets masked")
    found = targets.find(cfg)
    print(f"# instantiates ({len(found)}): what Hydra and Python logging would import and call")
    for t in found:
        print(f"#   {t.line()}")
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(OmegaConf.create(data)), end="")
    return 0


def cmd_cp(args) -> int:
    from llmops.config.compose import find_recipe
    from llmops.core.io import atomic_write_text

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
    from llmops.core.tree import flatten

    fa, fb = dict(flatten(a)), dict(flatten(b))
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
