"""dataset.source=hub: datasets.load_dataset(name, config_name, revision=...), as run_clm loads it;
a local dataset folder as dataset.name is hashed by content."""

from __future__ import annotations

import logging
from typing import Callable

from llmops.core.errors import LLMOpsError
from llmops.data.common import expand, holdout, holdout_settings

log = logging.getLogger("llmops.data")

NAME = "hub"
SPLIT_KEYS = {"train": "dataset.train_split", "validation": "dataset.eval_split"}


def check(c) -> None:
    if not c.get("dataset.name"):
        c.add("dataset.name", "a hub dataset id for dataset.source=hub")
    if not str(c.get("dataset.text_field") or "").strip():
        c.add("dataset.text_field", "the name of the field that holds the text, e.g. text")


def check_inputs(cfg) -> None:
    if not cfg.dataset.name:
        raise LLMOpsError("dataset.name is null: dataset.source=hub needs a hub dataset id, "
                          "e.g. wikitext")


def describe(cfg) -> dict:
    d = cfg.dataset
    return {"hub": {"name": d.name, "config_name": d.config_name, "revision": d.revision,
                    "splits": {"train": str(d.train_split), "validation": str(d.eval_split)}}}


def holds_out(cfg) -> bool:
    return False  # decided at load time (only when the eval split is absent)


def row_settings(cfg) -> dict:
    d = cfg.dataset
    return {"splits": [str(d.train_split), str(d.eval_split)], "text_field": str(d.text_field),
            **holdout_settings(cfg)}


def fingerprint(cfg, sha256: Callable) -> dict:
    d = cfg.dataset
    local = expand(d.name)
    if local.is_dir():  # load_dataset(<folder>): a local dataset, hashed by content
        files = sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith("."))
        return {"hub_folder": {str(p.relative_to(local)): sha256(p) for p in files},
                "config_name": d.config_name}
    return {"hub": d.name, "config_name": d.config_name, "revision": d.revision}


def load_rows(cfg) -> dict[str, list[str]]:
    d = cfg.dataset
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise LLMOpsError(f"dataset.source=hub needs the `datasets` package: {e}") from None
    name = str(d.name)
    try:
        dd = datasets.load_dataset(name, d.config_name, revision=d.revision)
    except Exception as e:  # network, offline mode, missing dataset
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LLMOpsError(
            f"dataset.name={name!r} (dataset.config_name={d.config_name!r}): could not load it from "
            f"the Hugging Face hub ({type(e).__name__}: {first}). If the hub is unreachable from "
            f"here, use local files instead, e.g. dataset=wikitext2_files "
            f"dataset.dir=<folder with wiki.<split>.raw> (or text_files / json_files)") from None
    field = str(d.text_field)
    split_names = list(dd.keys())
    if str(d.train_split) not in dd:
        raise LLMOpsError(f"dataset.train_split={str(d.train_split)!r}: {name} has splits {split_names}")
    train_ds = dd[str(d.train_split)]
    if field not in train_ds.column_names:
        raise LLMOpsError(f"dataset.text_field={field!r}: {name} has columns {train_ds.column_names}")
    train = list(train_ds[field])
    if str(d.eval_split) in dd:
        val = list(dd[str(d.eval_split)][field])
    else:
        log.info("%s has no split %r: holding out %g of %r", name, str(d.eval_split),
                 float(d.eval_fraction), str(d.train_split))
        train, val = holdout(train, float(d.eval_fraction), int(cfg.seed))
    return {"train": [r or "" for r in train], "validation": [r or "" for r in val]}


def empty_key(cfg, split: str) -> str:
    return "dataset.name"


def split_label(cfg, split: str) -> str:
    d = cfg.dataset
    return f"{split} split ({SPLIT_KEYS[split]}={str(d.train_split if split == 'train' else d.eval_split)!r})"
