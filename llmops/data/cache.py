"""Cache entries: built in a temporary sibling folder and renamed into place (an interrupted or
killed build never leaves an entry that looks complete), meta.json written last."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from llmops.data.common import SPLITS
from llmops.run import DataOutputs


def atomic_dir(final: Path, build) -> bool:
    """Build a folder in a temporary sibling and rename it to `final`. False if another won."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if final.is_dir():  # a concurrent prepare finished first: keep its entry
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def remove_stale_temps(final: Path) -> None:
    """Remove temporary folders for `final` left by a process that died (killed mid-write)."""
    for tmp in final.parent.glob(f".tmp-{final.name}-*"):
        try:
            pid = int(tmp.name[len(f".tmp-{final.name}-"):].split("-")[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def blocks_complete(entry: Path) -> bool:
    """A data/<key> entry: both splits' blocks, the tokenizer, meta.json."""
    return (entry / "meta.json").is_file() and all((entry / f"{s}.npy").is_file() for s in SPLITS) \
        and (entry / "tokenizer").is_dir()


def tokens_complete(entry: Path) -> bool:
    """A tokens/<key> entry: both splits' ids and row lengths, the tokenizer, meta.json."""
    return (entry / "meta.json").is_file() and (entry / "tokenizer").is_dir() and all(
        (entry / f"{s}.{k}.npy").is_file() for s in SPLITS for k in ("ids", "lens"))


def read_meta(entry: Path) -> dict:
    return json.loads((entry / "meta.json").read_text())


def write_meta(folder: Path, meta: dict) -> None:
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def outputs(meta: dict, entry: Path, cache_hit: bool) -> DataOutputs:
    """The stage outputs of a data/<key> entry."""
    return DataOutputs(blocks=dict(meta["blocks"]), tokens=dict(meta["tokens"]), cache_hit=cache_hit,
                       data_dir=str(entry), tokenizer_dir=str(entry / "tokenizer"),
                       block_size=meta["block_size"], group_by=meta["group_by"], rows=dict(meta["rows"]),
                       vocab_size=meta["vocab_size"], fingerprint=meta["key"], source=meta["source"])
