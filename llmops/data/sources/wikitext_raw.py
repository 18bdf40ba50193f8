"""dataset.source=wikitext_raw (dataset=wikitext2_files): a folder of wiki.<split>.raw files,
parsed back into the exact Hugging Face wikitext rows."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from llmops.core.errors import LLMOpsError
from llmops.data.common import expand
from llmops.data.sources.files import hash_splits
from llmops.data.sources.read import encoding, encoding_settings, read_text

NAME = "wikitext_raw"
SPLIT_KEYS = {"train": "dataset.train_split", "validation": "dataset.eval_split"}


def parse_wikitext_raw(text: str) -> list[str]:
    """Split a wiki.<split>.raw file back into the Hugging Face wikitext rows.

    The file is ``"\\n".join(rows)`` where a blank row is ``""`` and a non-empty row ends in
    ``"\\n"``. At each position: if the next character is not ``"\\n"`` the row runs up to and
    including the next ``"\\n"``; otherwise the row is ``""``. After each row one ``"\\n"``
    separator is consumed; a separator is always followed by a row (possibly ``""`` at the end).
    """
    rows: list[str] = []
    i, n = 0, len(text)
    find = text.find
    append = rows.append
    while True:
        if i < n and text[i] != "\n":
            j = find("\n", i)
            if j < 0:
                append(text[i:])
                break
            append(text[i:j + 1])
            i = j + 1
        else:
            append("")
        if i >= n:
            break
        i += 1  # the separator
    return rows


def _split_names(cfg) -> dict[str, str]:
    return {"train": str(cfg.dataset.train_split), "validation": str(cfg.dataset.eval_split)}


def split_files(cfg) -> dict[str, list[str]]:
    if not cfg.dataset.dir:
        return {"train": [], "validation": []}
    root = expand(cfg.dataset.dir)
    return {split: [str((root / f"wiki.{name}.raw").resolve())] for split, name in _split_names(cfg).items()}


def check(c) -> None:
    d = c.get("dataset.dir")
    if not d or not Path(str(d)).expanduser().is_dir():
        c.add("dataset.dir", "an existing folder holding wiki.<split>.raw files")
        return
    for split_key in SPLIT_KEYS.values():
        f = Path(str(d)).expanduser() / f"wiki.{c.get(split_key)}.raw"
        if not f.is_file():
            c.add(split_key, f"a split whose file exists; {f} does not")


def check_inputs(cfg) -> None:
    d = cfg.dataset
    if not d.dir:
        raise LLMOpsError("dataset.dir is not set: expected a folder holding wiki.<split>.raw files")
    root = expand(d.dir)
    if not root.is_dir():
        raise LLMOpsError(f"dataset.dir={str(d.dir)!r}: folder {root} does not exist (expected a "
                          f"folder holding wiki.<split>.raw files)")
    for key, split in (("dataset.train_split", d.train_split), ("dataset.eval_split", d.eval_split)):
        f = root / f"wiki.{split}.raw"
        if not f.is_file():
            have = sorted(p.name[5:-4] for p in root.glob("wiki.*.raw"))
            raise LLMOpsError(f"{key}={str(split)!r}: {f} does not exist; splits in {root}: "
                              f"{have or 'none'}")


def describe(cfg) -> dict:
    return {"files": split_files(cfg)}


def holds_out(cfg) -> bool:
    return False


def row_settings(cfg) -> dict:
    return {"splits": list(_split_names(cfg).values()), **encoding_settings(cfg)}


def fingerprint(cfg, sha256: Callable) -> dict:
    return hash_splits(split_files(cfg), sha256)


def load_rows(cfg) -> dict[str, list[str]]:
    enc = encoding(cfg)
    return {split: parse_wikitext_raw(read_text(Path(p), enc, "dataset.dir"))
            for split, (p,) in split_files(cfg).items()}


def empty_key(cfg, split: str) -> str:
    return "dataset.dir"


def split_label(cfg, split: str) -> str:
    return f"{split} split ({SPLIT_KEYS[split]}={_split_names(cfg)[split]!r})"
