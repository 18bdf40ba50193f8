"""Cache keys: the data content, the tokenizer and every setting that changes the blocks.

File contents are hashed through one process-wide memo (`FILE_HASHES`), keyed by the file's path,
device, inode, size, mtime and ctime: within one `llmops run` the stage fingerprint (computed twice
by the engine) and `prepare` read each data and tokenizer file once. A file written since it was
hashed has another size, mtime or ctime and is read again; a file whose timestamps are too close to
the moment it was hashed is not memoised (its next write could keep the same timestamps: git's
"racy clean" rule).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from llmops.data import tokenizer
from llmops.data.common import CACHE_VERSION, group_by
from llmops.data.sources import source_of

RACY_NS = 1_000_000_000  # a file changed less than this before it was hashed is hashed again next time


def hash_obj(obj: Any, n: int = 20) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


class FileHashes:
    """sha256 of files, memoised while a file is unchanged (see the module docstring)."""

    def __init__(self, max_entries: int = 4096):
        self._memo: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.files_read = 0  # files whose bytes were read and hashed
        self.bytes_read = 0
        self.memo_hits = 0

    def sha256(self, path) -> str:
        p = Path(path)
        st = os.stat(p)
        key = (str(p.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                self.memo_hits += 1
                return hit
        started = time.time_ns()
        h = hashlib.sha256()
        n = 0
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                n += len(chunk)
        digest = h.hexdigest()
        with self._lock:
            self.files_read += 1
            self.bytes_read += n
            if started - max(st.st_mtime_ns, st.st_ctime_ns) >= RACY_NS:
                self._memo[key] = digest
                while len(self._memo) > self.max_entries:
                    self._memo.popitem(last=False)
        return digest

    def stats(self) -> dict:
        with self._lock:
            return {"files_read": self.files_read, "bytes_read": self.bytes_read,
                    "memo_hits": self.memo_hits, "memoised": len(self._memo)}

    def clear(self) -> None:
        """Forget every memoised hash (the counters stay)."""
        with self._lock:
            self._memo.clear()


FILE_HASHES = FileHashes()


def row_settings(cfg) -> dict:
    """Settings that change which text rows each split holds."""
    return {"source": source_of(cfg).NAME, **source_of(cfg).row_settings(cfg)}


def block_settings(cfg) -> dict:
    """Settings that change how the tokens are cut into blocks (not num_proc: same result)."""
    d = cfg.dataset
    return {"block_size": int(d.block_size), "group_by": group_by(cfg),
            "map_batch_size": int(d.map_batch_size), "max_train_blocks": d.max_train_blocks,
            "max_eval_blocks": d.max_eval_blocks}


def settings(cfg) -> dict:
    return {**row_settings(cfg), **block_settings(cfg)}


def data_fingerprint(cfg) -> dict:
    return source_of(cfg).fingerprint(cfg, FILE_HASHES.sha256)


def trained_tokenizer_key(cfg, data_fp: dict) -> str:
    import importlib.metadata as md

    return hash_obj({"v": CACHE_VERSION, "data": data_fp, "corpus": row_settings(cfg),
                     "vocab": int(cfg.model.train_tokenizer_vocab),
                     "n_positions": int(cfg.model.n_positions),
                     "tokenizers": md.version("tokenizers")})


def tokenizer_fingerprint(spec: dict, data_fp: dict, cfg) -> dict:
    if spec["kind"] == "dir":
        return {"dir": {p.name: FILE_HASHES.sha256(p) for p in tokenizer.tokenizer_files(Path(spec["ref"]))}}
    if spec["kind"] == "hub":
        return {"hub": spec["ref"], "revision": spec.get("revision")}
    return {"train": trained_tokenizer_key(cfg, data_fp)}


def fingerprint(cfg) -> tuple[str, dict]:
    """(cache key of the blocks, its parts): data content, tokenizer, settings."""
    spec = tokenizer.spec(cfg)
    data_fp = data_fingerprint(cfg)
    tokens = {"v": CACHE_VERSION, "data": data_fp, "tokenizer": tokenizer_fingerprint(spec, data_fp, cfg),
              "rows": row_settings(cfg)}
    tokens_key = hash_obj(tokens)
    parts = {**tokens, "tokens_key": tokens_key, "blocks": block_settings(cfg)}
    return hash_obj(parts), parts
