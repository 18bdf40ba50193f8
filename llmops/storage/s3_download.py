"""S3 download (`get_dir` of `S3Store`): each file is streamed to a temporary name next to its
target, hashed, checked against the manifest and renamed; a full disk is an error naming the key
and the path. The functions take the `S3Store` (`st`)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from llmops.core.errors import LLMOpsError
from llmops.storage.manifest import MANIFEST, TMP_PREFIX, sha256_file
from llmops.storage.s3_errors import S3Error
from llmops.storage.s3_settings import MiB, TransferStats, parse_uri, safe_rel

log = logging.getLogger("llmops.storage.s3")


def get_dir(st, uri: str, local: Path) -> Path:
    """Download the model at `uri` into `local`, every file checked against the manifest."""
    t0 = time.time()
    bucket, prefix = parse_uri(uri)
    manifest = st.read_manifest(uri)
    local = Path(local)
    stats = st.last_stats = TransferStats(files=len(manifest["files"]))
    try:
        local.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LLMOpsError(f"{local}: cannot create the download folder for {uri}: {e.strerror}") from None
    todo = []
    for rel, meta in manifest["files"].items():
        safe_rel(rel, uri)
        stats.bytes_total += int(meta["size"])
        p = local / rel
        if p.is_file() and p.stat().st_size == meta["size"] and sha256_file(p, 4 * MiB) == meta["sha256"]:
            stats.files_skipped += 1
            continue
        todo.append(rel)
    cancel = threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, int(st.s.max_concurrency)),
                            thread_name_prefix="llmops-s3-get") as ex:
        futures = [ex.submit(_get_file, st, bucket, prefix + rel, local / rel, manifest["files"][rel],
                             stats, cancel) for rel in todo]
        wait(futures, return_when=FIRST_EXCEPTION)
        errs = [f.exception() for f in futures if f.done() and f.exception() is not None]
        if errs:
            cancel.set()
            for f in futures:
                f.cancel()
            raise errs[0]
    stats.seconds = time.time() - t0
    log.info("%s: downloaded %d files (%.1f MB) to %s in %.1f s, %d already there", uri,
             len(todo), stats.bytes_sent / 1e6, local, stats.seconds, stats.files_skipped)
    return local


def _get_file(st, bucket: str, key: str, target: Path, meta: dict, stats: TransferStats,
              cancel: threading.Event) -> None:
    if cancel.is_set():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TMP_PREFIX}{target.name}.{os.getpid()}.{threading.get_ident()}"

    def go():
        h = hashlib.sha256()
        n = 0
        body = st.client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            with open(tmp, "wb") as f:
                for chunk in body.iter_chunks(1 * MiB):
                    f.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if isinstance(e, (ConnectionError, TimeoutError)):
                raise
            unlink_quiet(tmp)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise LLMOpsError(f"no space left on the device for {target} while downloading "
                                  f"s3://{bucket}/{key} ({meta['size']} bytes); free space or "
                                  "choose another folder") from None
            raise LLMOpsError(f"{target}: cannot write s3://{bucket}/{key}: {e.strerror or e}") from None
        stats.add(bytes_sent=n)
        return n, h.hexdigest()

    try:
        n, sha = st.call("download", bucket, key, go, stats, cancel)
    except BaseException:
        unlink_quiet(tmp)
        raise
    if n != meta["size"] or sha != meta["sha256"]:
        unlink_quiet(tmp)
        raise S3Error(f"s3://{bucket}/{key}: downloaded {n} bytes with sha256 {sha[:12]}..., but "
                      f"{MANIFEST} says {meta['size']} bytes, sha256 {meta['sha256'][:12]}...; "
                      "the stored object is corrupt or was changed after upload", code="Verify")
    os.replace(tmp, target)


def unlink_quiet(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
