"""Group token ids into fixed blocks, like HF run_clm's group_texts."""

from __future__ import annotations


def group(ids, lengths, block_size: int, group_by: str, map_batch_size: int):
    """Blocks [n, block_size] from the flat ids and per-row lengths, like run_clm's group_texts.

    batch: the rows are taken map_batch_size at a time (as datasets.map(batched=True) does); each
    batch's tokens are concatenated and cut into blocks, and each batch's remainder is dropped.
    corpus: the whole split is concatenated and only one remainder is dropped.
    """
    import numpy as np

    ids = np.asarray(ids, dtype=np.int32)
    if group_by == "corpus":
        n = len(ids) // block_size
        return ids[: n * block_size].reshape(n, block_size)
    offs = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    starts = offs[0:-1:map_batch_size] if len(lengths) else np.zeros(0, np.int64)
    ends = offs[np.minimum(np.arange(map_batch_size, len(lengths) + map_batch_size, map_batch_size),
                           len(lengths))] if len(lengths) else np.zeros(0, np.int64)
    keep = ((ends - starts) // block_size) * block_size
    pieces = [ids[s:s + k] for s, k in zip(starts.tolist(), keep.tolist()) if k]
    if not pieces:
        return np.zeros((0, block_size), np.int32)
    return np.concatenate(pieces).reshape(-1, block_size)
