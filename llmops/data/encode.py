"""Tokenize text rows with a fast (Rust) tokenizer, in this process or a pool of single-threaded
processes (the result does not depend on the number of processes)."""

from __future__ import annotations

import os
from typing import Optional

ENCODE_CHUNK = 20_000  # rows per encode_batch call (does not change the result)

_WORKER_TOK = None
_WORKER_ROWS: Optional[list[str]] = None


def process_pool(n: int):
    """A multiprocessing pool of n processes (fork where the platform has it)."""
    import multiprocessing as mp

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(n)


def encode_rows(tok, rows: list[str]):
    """(flat int32 ids, int64 per-row lengths) for `rows`, no special tokens, no truncation."""
    import numpy as np
    from itertools import chain

    enc = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
    id_parts = []
    len_parts = []
    for i in range(0, len(rows), ENCODE_CHUNK):
        encs = enc(rows[i:i + ENCODE_CHUNK], add_special_tokens=False)
        ids = [e.ids for e in encs]
        len_parts.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        id_parts.append(np.fromiter(chain.from_iterable(ids), dtype=np.int32))
    if not id_parts:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.concatenate(id_parts), np.concatenate(len_parts)


def _worker_init(tok_json: str) -> None:
    global _WORKER_TOK
    from tokenizers import Tokenizer

    _WORKER_TOK = Tokenizer.from_str(tok_json)
    _WORKER_TOK.no_truncation()
    _WORKER_TOK.no_padding()


def _worker_encode(args):
    lo, hi, rows = args
    if rows is None:  # fork: the rows are inherited
        rows = _WORKER_ROWS[lo:hi]
    return encode_rows(_WORKER_TOK, rows)


def tokenize(backend, splits: dict[str, list[str]], num_proc: int = 1) -> dict[str, tuple]:
    """Tokenize every split with the fast tokenizer `backend` (a tokenizers.Tokenizer).

    num_proc > 1 encodes contiguous shards in that many processes; the result is the same.
    """
    import numpy as np

    backend.no_truncation()
    backend.no_padding()
    out = {}
    total = sum(len(r) for r in splits.values())
    if num_proc <= 1 or total < 2 * num_proc:
        for name, rows in splits.items():
            out[name] = encode_rows(backend, rows)
        return out
    global _WORKER_ROWS
    # one flat row list, cut into num_proc shards (of about equal characters)
    names = list(splits)
    flat: list[str] = []
    bounds = {}
    for name in names:
        bounds[name] = (len(flat), len(flat) + len(splits[name]))
        flat.extend(splits[name])
    sizes = np.fromiter((len(r) for r in flat), dtype=np.int64, count=len(flat))
    cum = np.cumsum(sizes)
    targets = cum[-1] * np.arange(1, num_proc) / num_proc if len(cum) else []
    cuts = [0] + sorted(set(int(x) for x in np.searchsorted(cum, targets))) + [len(flat)]
    cuts = sorted(set(cuts))
    import multiprocessing as mp

    fork = "fork" in mp.get_all_start_methods()
    _WORKER_ROWS = flat
    try:
        jobs = [(lo, hi, None if fork else flat[lo:hi]) for lo, hi in zip(cuts, cuts[1:])]
        with _tokenizer_pool(num_proc, backend.to_str()) as pool:
            parts = pool.map(_worker_encode, jobs, chunksize=1)
    finally:
        _WORKER_ROWS = None
    ids = np.concatenate([p[0] for p in parts])
    lens = np.concatenate([p[1] for p in parts])
    offs = np.concatenate([[0], np.cumsum(lens)])
    for name in names:
        lo, hi = bounds[name]
        out[name] = (ids[offs[lo]:offs[hi]], lens[lo:hi])
    return out


def _tokenizer_pool(n: int, tok_json: str):
    """n tokenizer processes, each single-threaded (n processes share the cores, not n x cores)."""
    import multiprocessing as mp

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # inherited by the workers only
    try:
        return mp.get_context(method).Pool(n, initializer=_worker_init, initargs=(tok_json,))
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before
