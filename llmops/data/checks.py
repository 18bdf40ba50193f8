"""Checks of the `dataset` config section: the shared ones here, each source's next to it."""

from __future__ import annotations

import codecs

from llmops.config.validate import Checker
from llmops.data.sources import SOURCES


def _known_encoding(name) -> bool:
    try:
        codecs.lookup(str(name))
    except LookupError:
        return False
    return True


def check(c: Checker) -> None:
    c.positive_ints("dataset.block_size", "dataset.map_batch_size", "dataset.num_proc",
                    "dataset.max_train_blocks", "dataset.max_eval_blocks")
    c.check("dataset.eval_fraction", lambda v: 0.0 < v < 1.0, "a fraction in (0, 1)")
    c.check("dataset.encoding", _known_encoding, "a text encoding Python knows, e.g. utf-8 or latin-1")
    src = SOURCES.get(str(c.value("dataset.source")))
    if src is not None:
        src.check(c)
