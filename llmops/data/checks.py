"""Checks of the `dataset` config section."""

from __future__ import annotations

from pathlib import Path

from llmops.config.validate import Checker


def check(c: Checker) -> None:
    c.positive_ints("dataset.block_size", "dataset.map_batch_size", "dataset.num_proc",
                    "dataset.max_train_blocks", "dataset.max_eval_blocks")
    c.check("dataset.eval_fraction", lambda v: 0.0 < v < 1.0, "a fraction in (0, 1)")
    src = str(c.value("dataset.source"))
    if src == "hub" and not c.get("dataset.name"):
        c.add("dataset.name", "a hub dataset id for dataset.source=hub")
    if src == "wikitext_raw":
        d = c.get("dataset.dir")
        if not d or not Path(str(d)).expanduser().is_dir():
            c.add("dataset.dir", "an existing folder holding wiki.<split>.raw files")
        else:
            for split_key in ("dataset.train_split", "dataset.eval_split"):
                f = Path(str(d)).expanduser() / f"wiki.{c.get(split_key)}.raw"
                if not f.is_file():
                    c.add(split_key, f"a split whose file exists; {f} does not")
    if src in ("text_files", "json_files"):
        files = c.get("dataset.train_files") or []
        if not files:
            c.add("dataset.train_files", "at least one file")
        for key in ("dataset.train_files", "dataset.eval_files"):
            for f in c.get(key) or []:
                if not Path(str(f)).expanduser().is_file():
                    c.add(key, f"existing files; '{f}' does not exist")
    if src in ("hub", "json_files") and not str(c.get("dataset.text_field") or "").strip():
        c.add("dataset.text_field", "the name of the field that holds the text, e.g. text")
