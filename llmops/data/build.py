"""plan and prepare: rows -> tokens/<key> (ids and row lengths) -> data/<key> (blocks)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

from llmops.core.errors import LLMOpsError
from llmops.data import cache, encode, keys, tokenizer
from llmops.data.common import SPLITS, cache_root, group_by
from llmops.data.packing import group
from llmops.data.sources import source_of
from llmops.run import DataOutputs

log = logging.getLogger("llmops.data")


def plan(cfg) -> dict:
    """What prepare would do. Reads nothing but the config (and whether paths exist)."""
    d = cfg.dataset
    src = source_of(cfg)
    out: dict[str, Any] = {"source": src.NAME, **src.describe(cfg)}
    if src.holds_out(cfg):
        out["validation"] = f"{float(d.eval_fraction):g} of the training rows, held out by seed {cfg.seed}"
    out.update({"block_size": int(d.block_size), "group_by": group_by(cfg),
                "map_batch_size": int(d.map_batch_size), "num_proc": int(d.num_proc),
                "max_train_blocks": d.max_train_blocks, "max_eval_blocks": d.max_eval_blocks})
    out["tokenizer"] = tokenizer.describe(cfg)
    out["cache_dir"] = str(cache_root(cfg) / "data")
    out["config_fingerprint"] = keys.hash_obj({"settings": keys.settings(cfg), "plan": out}, 16)
    return out


def load_rows(cfg) -> dict[str, list[str]]:
    """The text rows of the train and validation splits (before tokenization)."""
    src = source_of(cfg)
    src.check_inputs(cfg)
    return src.load_rows(cfg)


def _empty_message(cfg, split: str, n_rows: int) -> str:
    src = source_of(cfg)
    return (f"{src.empty_key(cfg, split)}: the {src.split_label(cfg, split)} is empty ({n_rows} rows, "
            f"no text); expected text to tokenize")


def _too_small_message(cfg, split: str, n_tokens: int, block_size: int, grouping: str) -> str:
    msg = (f"dataset.block_size={block_size} but the {source_of(cfg).split_label(cfg, split)} has only "
           f"{n_tokens} tokens")
    if n_tokens >= block_size and grouping == "batch":
        msg += (f", and no {int(cfg.dataset.map_batch_size)}-row batch holds a whole block "
                f"(dataset.group_by=batch drops each batch's remainder); use dataset.group_by=corpus, "
                f"a larger dataset.map_batch_size or a smaller dataset.block_size")
    else:
        msg += "; lower dataset.block_size or add data"
    return msg


def _tokenize_into_cache(cfg, parts: dict, spec: dict, t0: float) -> Path:
    """Read the rows, get the tokenizer, tokenize both splits; cache ids + per-row lengths."""
    import numpy as np

    entry = cache_root(cfg) / "tokens" / parts["tokens_key"]
    rows = load_rows(cfg)
    for split in SPLITS:
        if not any(rows[split]):
            raise LLMOpsError(_empty_message(cfg, split, len(rows[split])))
    t_rows = time.time()
    tok = None
    if spec["kind"] == "train":
        # built here with `tokenizers`: its own Rust tokenizer is used as is (no transformers
        # import in this process); the folder saved beside it loads with AutoTokenizer as
        # GPT2Tokenizer and encodes the same ids (tests/data/test_stdlib_and_tokenizer.py)
        from tokenizers import Tokenizer

        copy_from: Optional[Path] = tokenizer.trained_dir(
            cfg, keys.trained_tokenizer_key(cfg, parts["data"]), rows["train"])
        backend = Tokenizer.from_file(str(copy_from / "tokenizer.json"))
        tconf = json.loads((copy_from / "tokenizer_config.json").read_text())
        mml, vocab_size, tok_class = int(tconf["model_max_length"]), backend.get_vocab_size(), \
            tconf["tokenizer_class"]
    else:
        tok = tokenizer.load_auto(spec, cfg)
        copy_from = Path(spec["ref"]) if spec["kind"] == "dir" else None
        backend, mml, vocab_size, tok_class = tok.backend_tokenizer, tokenizer.model_max_length(tok), \
            len(tok), type(tok).__name__
    tokenizer.check_context(cfg, spec, int(cfg.dataset.block_size), mml)  # before any tokenizing
    t_tok = time.time()
    encoded = encode.tokenize(backend, {s: rows[s] for s in SPLITS}, int(cfg.dataset.num_proc))
    t_enc = time.time()
    meta = {"key": parts["tokens_key"], "rows": {s: len(rows[s]) for s in SPLITS},
            "tokens": {s: int(len(encoded[s][0])) for s in SPLITS}, "vocab_size": int(vocab_size),
            "model_max_length": mml, "tokenizer_class": tok_class,
            "fingerprint": {k: parts[k] for k in ("v", "data", "tokenizer", "rows")},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": {"rows": round(t_rows - t0, 3), "tokenizer": round(t_tok - t_rows, 3),
                        "tokenize": round(t_enc - t_tok, 3)}}

    def build(tmp: Path) -> None:
        for s in SPLITS:
            ids, lens = encoded[s]
            np.save(tmp / f"{s}.ids.npy", np.ascontiguousarray(ids, dtype=np.int32))
            np.save(tmp / f"{s}.lens.npy", np.ascontiguousarray(lens, dtype=np.int64))
        if copy_from is not None:
            tokenizer.copy_tokenizer(copy_from, tmp / "tokenizer")
        else:
            tok.save_pretrained(str(tmp / "tokenizer"))
        cache.write_meta(tmp, meta)

    cache.atomic_dir(entry, build)
    log.info("prepare_data: tokenized %s rows into %s tokens in %.1f s", meta["rows"], meta["tokens"],
             t_enc - t_tok)
    return entry


def cached(cfg) -> bool:
    """The prepared blocks of this config are in the cache already (prepare would only read them)."""
    source_of(cfg).check_inputs(cfg)
    key, _ = keys.fingerprint(cfg)
    return cache.blocks_complete(cache_root(cfg) / "data" / key)


def prepare(cfg, ctx=None) -> DataOutputs:
    """Load, tokenize and group the dataset; reuse the cache when the fingerprint matches.

    Two cache levels: ``tokens/<key>`` holds the token ids of each split (keyed by data content,
    tokenizer and row settings) and ``data/<key>`` the blocks (that key plus the block settings),
    so a change of block_size, group_by or caps regroups without tokenizing again.
    """
    t0 = time.time()
    source_of(cfg).check_inputs(cfg)
    key, parts = keys.fingerprint(cfg)
    entry = cache_root(cfg) / "data" / key
    spec = tokenizer.spec(cfg)
    if cache.blocks_complete(entry):
        meta = cache.read_meta(entry)
        tokenizer.check_context(cfg, spec, int(meta["block_size"]), meta.get("model_max_length"))
        log.info("prepare_data: cache hit %s (%.2f s)", entry, time.time() - t0)
        return cache.outputs(meta, entry, True)

    import numpy as np

    d = cfg.dataset
    block_size = int(d.block_size)
    grouping = group_by(cfg)
    tentry = cache_root(cfg) / "tokens" / parts["tokens_key"]
    tokens_hit = cache.tokens_complete(tentry)
    if tokens_hit:
        tmeta = cache.read_meta(tentry)
        tokenizer.check_context(cfg, spec, block_size, tmeta.get("model_max_length"))
    else:
        tentry = _tokenize_into_cache(cfg, parts, spec, t0)
        tmeta = cache.read_meta(tentry)

    blocks = {}
    for split in SPLITS:
        ids = np.load(tentry / f"{split}.ids.npy", mmap_mode="r")
        lens = np.load(tentry / f"{split}.lens.npy")
        b = group(ids, lens, block_size, grouping, int(d.map_batch_size))
        if len(b) == 0:
            raise LLMOpsError(_too_small_message(cfg, split, len(ids), block_size, grouping))
        cap = d.max_train_blocks if split == "train" else d.max_eval_blocks
        if cap is not None and len(b) > int(cap):
            b = b[: int(cap)]
        blocks[split] = b

    meta = {
        "key": key, "source": source_of(cfg).NAME, "block_size": block_size, "group_by": grouping,
        "blocks": {s: int(len(blocks[s])) for s in SPLITS},
        "tokens": {s: int(blocks[s].size) for s in SPLITS},
        "tokens_before_grouping": dict(tmeta["tokens"]),
        "rows": dict(tmeta["rows"]),
        "vocab_size": tmeta["vocab_size"],
        "tokenizer_class": tmeta["tokenizer_class"],
        "model_max_length": tmeta.get("model_max_length"),
        "tokens_cache_hit": tokens_hit,
        "fingerprint": parts,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - t0, 3),
    }

    def build(tmp: Path) -> None:
        for s in SPLITS:
            np.save(tmp / f"{s}.npy", np.ascontiguousarray(blocks[s], dtype=np.int32))
        tokenizer.copy_tokenizer(tentry / "tokenizer", tmp / "tokenizer")
        cache.write_meta(tmp, meta)

    cache.atomic_dir(entry, build)
    if not cache.blocks_complete(entry):  # pragma: no cover - a concurrent writer left garbage
        raise LLMOpsError(f"cache entry {entry} is incomplete; remove it and rerun")
    meta = cache.read_meta(entry)
    log.info("prepare_data: %s blocks of %d in %.1f s -> %s", meta["blocks"], block_size,
             time.time() - t0, entry)
    return cache.outputs(meta, entry, False)
