"""dataset.source=text_files: text files, one row per line (as datasets' "text" loader reads them)."""

from __future__ import annotations

from pathlib import Path

from llmops.data.sources import files
from llmops.data.sources.files import (check, check_inputs, describe, empty_key,  # noqa: F401
                                       fingerprint, holds_out, row_settings, split_label)
from llmops.data.sources.read import line_batches

NAME = "text_files"  # the rest of the source protocol: the file-list functions of files.py


def read_rows(path: Path, enc: str, key: str) -> list[str]:
    """The lines of one file (``str.splitlines()``), read a chunk at a time."""
    rows: list[str] = []
    for batch in line_batches(path, enc, key):
        rows.extend(batch)
    return rows


def load_rows(cfg) -> dict[str, list[str]]:
    return files.load_rows(cfg, read_rows)
