"""The dataset sources, one module each, and the table from `dataset.source` to its module.

Each source module has the same functions (a module is the object; no base class):

- ``NAME``; ``check(c)``: its config checks (lint, all problems at once);
  ``check_inputs(cfg)``: bad paths, raised before anything is read;
- ``describe(cfg) -> dict``: what the plan shows (files, hub id, stdlib folder);
- ``holds_out(cfg)``: whether validation rows are held out of the training rows;
  ``row_settings(cfg)``: the settings that change the rows (part of the cache key);
- ``fingerprint(cfg, sha256) -> dict``: the data content (``sha256(path)`` hashes a file);
- ``load_rows(cfg) -> {"train": [...], "validation": [...]}``: the text rows;
- ``empty_key(cfg, split)``, ``split_label(cfg, split)``: how errors name a split.
"""

from __future__ import annotations

from llmops.data.common import source_name
from llmops.data.sources import hub, json_files, stdlib_docs, text_files, wikitext_raw

SOURCES = {m.NAME: m for m in (hub, stdlib_docs, wikitext_raw, text_files, json_files)}


def source_of(cfg):
    """The module of cfg.dataset.source."""
    return SOURCES[source_name(cfg)]
