"""What the file-list sources (text_files, json_files) share: dataset.train_files and
dataset.eval_files (empty: eval_fraction of the training rows is held out), their checks, their
content hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from llmops.core.errors import LLMOpsError
from llmops.data.common import expand, holdout_rows, holdout_settings, source_name
from llmops.data.sources.read import encoding, encoding_settings

KEYS = {"train": "dataset.train_files", "validation": "dataset.eval_files"}


def split_files(cfg) -> dict[str, list[str]]:
    """The files each split reads (absolute paths)."""
    d = cfg.dataset
    return {"train": [str(expand(f).resolve()) for f in d.train_files or []],
            "validation": [str(expand(f).resolve()) for f in d.eval_files or []]}


def hash_splits(files: dict[str, list[str]], sha256: Callable) -> dict[str, list[str]]:
    """The content hash of each split's files, in order."""
    return {split: [sha256(Path(f)) for f in paths] for split, paths in files.items()}


def holds_out(cfg) -> bool:
    return not list(cfg.dataset.eval_files or [])


def row_settings(cfg) -> dict:
    return {**encoding_settings(cfg), **(holdout_settings(cfg) if holds_out(cfg) else {})}


def describe(cfg) -> dict:
    return {"files": split_files(cfg)}


def fingerprint(cfg, sha256: Callable) -> dict:
    return hash_splits(split_files(cfg), sha256)


def check(c) -> None:
    if not c.get("dataset.train_files"):
        c.add("dataset.train_files", "at least one file")
    for key in KEYS.values():
        for f in c.get(key) or []:
            if not Path(str(f)).expanduser().is_file():
                c.add(key, f"existing files; '{f}' does not exist")


def check_inputs(cfg) -> None:
    d = cfg.dataset
    if not list(d.train_files or []):
        raise LLMOpsError(f"dataset.train_files is empty: dataset.source={source_name(cfg)} needs "
                          f"at least one file")
    for key, files in (("dataset.train_files", d.train_files), ("dataset.eval_files", d.eval_files)):
        for f in files or []:
            if not expand(f).is_file():
                raise LLMOpsError(f"{key}: file {str(f)!r} does not exist")


def load_rows(cfg, read: Callable[[Path, str, str], list[str]]) -> dict[str, list[str]]:
    """Each split's rows, `read(path, encoding, key)` per file; no eval_files: held out."""
    enc = encoding(cfg)
    out: dict[str, list[str]] = {}
    for split, paths in split_files(cfg).items():
        rows: list[str] = []
        for p in paths:
            rows.extend(read(Path(p), enc, KEYS[split]))
        out[split] = rows
    if holds_out(cfg):
        return holdout_rows(cfg, out["train"])
    return out


def empty_key(cfg, split: str) -> str:
    return KEYS["train"] if split == "train" or holds_out(cfg) else KEYS["validation"]


def split_label(cfg, split: str) -> str:
    return f"{split} split"
