"""Load a dataset, tokenize it, group it into fixed blocks like HF run_clm, cache by content.

Public interface (used by the stage line and by training workers):

- ``plan(cfg)``: what ``prepare`` would do; no side effects, no heavy imports.
- ``prepare(cfg, ctx)``: load, tokenize, group, cache; returns the stage outputs
  (``DataOutputs``: ``blocks``, ``tokens``, ``cache_hit``, ``data_dir``, ``tokenizer_dir``, ...).
- ``fingerprint(cfg)``: (cache key of the blocks, its parts); file hashes are memoised
  (``FILE_HASHES``) so one run reads each input once.
- ``load_blocks(data_dir, split)``: the blocks of a split as a memory-mapped int32 array
  ``[n_blocks, block_size]`` (labels = input_ids; the model shifts them).

The modules (docs/data.md): ``sources/`` (one module per ``dataset.source``, the table in
``sources/__init__.py``), ``tokenizer`` (load / train the byte-level BPE), ``encode`` (tokenize,
process pool), ``packing`` (group into blocks), ``keys`` (cache keys, the file-hash memo),
``cache`` (entries built atomically, meta.json), ``build`` (plan and prepare).

Cache layout under ``paths.cache_dir`` (``~`` expanded)::

    data/<key>/train.npy, validation.npy   the blocks
    data/<key>/tokenizer/                  the tokenizer that produced them (AutoTokenizer loads it)
    data/<key>/meta.json                   outputs, fingerprints, settings (written last)
    tokens/<key>/                          token ids and row lengths of both splits
    tokenizers/<key>/                      byte-level BPE tokenizers trained on a corpus

Only the standard library is imported at module level; numpy, tokenizers, transformers and
datasets are imported inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path

from llmops.core.errors import LLMOpsError
from llmops.data.build import load_rows, plan, prepare
from llmops.data.common import SPLITS, holdout
from llmops.data.encode import tokenize
from llmops.data.keys import FILE_HASHES, fingerprint
from llmops.data.packing import group
from llmops.data.sources.read import DEFAULT_ENCODING
from llmops.data.sources.stdlib_docs import stdlib_documents, stdlib_files
from llmops.data.sources.wikitext_raw import parse_wikitext_raw
from llmops.data.tokenizer import train_tokenizer

__all__ = ["FILE_HASHES", "fingerprint", "group", "holdout", "load_blocks", "load_rows",
           "parse_wikitext_raw", "plan", "prepare", "stage_settings", "stdlib_documents",
           "stdlib_files", "tokenize", "train_tokenizer"]


def load_blocks(data_dir, split: str):
    """The blocks of `split` ("train" or "validation"): int32 [n_blocks, block_size], memory-mapped."""
    import numpy as np

    if split not in SPLITS:
        raise LLMOpsError(f"split {split!r}: expected one of {list(SPLITS)}")
    p = Path(data_dir) / f"{split}.npy"
    if not p.is_file():
        raise LLMOpsError(f"{p} does not exist: {data_dir} is not a prepared data folder "
                          f"(run the prepare_data stage)")
    return np.load(p, mmap_mode="r")


def stage_settings(cfg):
    """cfg.dataset as the prepare_data stage fingerprint takes it: dataset.encoding left out while
    it is utf-8, so a run directory made before that key existed keeps its stage fingerprints."""
    from omegaconf import OmegaConf

    d = cfg.dataset
    if d.get("encoding", DEFAULT_ENCODING) != DEFAULT_ENCODING:
        return d
    return OmegaConf.masked_copy(d, [k for k in d.keys() if k != "encoding"])
