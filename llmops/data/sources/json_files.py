"""dataset.source=json_files: JSON lines (or one JSON array) of objects; dataset.text_field holds
the text of each row."""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator

from llmops.core.errors import LLMOpsError
from llmops.data.sources import files
from llmops.data.sources.files import (check_inputs, describe, empty_key, fingerprint,  # noqa: F401
                                       holds_out, split_label)
from llmops.data.sources.read import line_batches, read_text

NAME = "json_files"  # with check and row_settings below, the file-list functions of files.py


def check(c) -> None:
    files.check(c)
    if not str(c.get("dataset.text_field") or "").strip():
        c.add("dataset.text_field", "the name of the field that holds the text, e.g. text")


def row_settings(cfg) -> dict:
    return {"text_field": str(cfg.dataset.text_field), **files.row_settings(cfg)}


def _numbered_lines(path: Path, enc: str, key: str) -> Iterator[tuple[int, str]]:
    return enumerate(chain.from_iterable(line_batches(path, enc, key)), 1)


def _records(path: Path, enc: str, key: str) -> tuple[Iterable, str]:
    """((number, record) pairs, "item" or "line"): a JSON array's items or JSON lines."""
    lines = _numbered_lines(path, enc, key)
    first = next(((no, line) for no, line in lines if line.strip()), None)
    if first is not None and first[1].lstrip().startswith("["):
        del lines
        try:
            records = json.loads(read_text(path, enc, key))
        except json.JSONDecodeError as e:
            raise LLMOpsError(f"dataset.train_files/eval_files: {path} is not valid JSON: {e}") from None
        except RecursionError:
            raise LLMOpsError(f"dataset.train_files/eval_files: {path} nests arrays or objects "
                              f"too deep to read; expected a JSON array of flat objects") from None
        return ((i + 1, r) for i, r in enumerate(records)), "item"

    def parsed():
        for lineno, line in chain([first] if first else [], lines):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise LLMOpsError(f"dataset.train_files/eval_files: {path} line {lineno} is not "
                                  f"valid JSON ({e.msg}); expected one JSON object per line") from None
            except RecursionError:
                raise LLMOpsError(f"dataset.train_files/eval_files: {path} line {lineno} nests "
                                  f"arrays or objects too deep to read; expected one flat JSON "
                                  f"object per line") from None

    return parsed(), "line"


def read_rows(path: Path, enc: str, key: str, field: str = "text") -> list[str]:
    """The `field` of each object of one file."""
    items, where = _records(path, enc, key)
    rows = []
    for no, rec in items:
        if not isinstance(rec, dict) or field not in rec:
            keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise LLMOpsError(f"dataset.text_field={field!r}: {path} {where} {no} has no {field!r} "
                              f"key (it has: {keys}); set dataset.text_field to the key holding the text")
        v = rec[field]
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise LLMOpsError(f"dataset.text_field={field!r}: {path} {where} {no}: {field!r} is a "
                              f"{type(v).__name__}, expected a string")
        rows.append(v)
    return rows


def load_rows(cfg) -> dict[str, list[str]]:
    field = str(cfg.dataset.text_field)
    return files.load_rows(cfg, lambda p, enc, key: read_rows(p, enc, key, field))
