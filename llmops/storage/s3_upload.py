"""S3 upload (`put_dir` of `S3Store`): parallel, resumable, verified; the manifest last.

  * every file is hashed (sha256) locally; an object already under the prefix with the same size
    and the same sha256 in its metadata (``x-amz-meta-llmops-sha256``) is not sent again;
  * small files go in one PUT, files at or above ``multipart_threshold_mb`` in parts of
    ``multipart_chunk_mb``; a multipart upload left behind by an interrupted run is resumed: parts
    whose size and MD5 (the part's ETag) match the local bytes are kept, the rest are sent;
  * every body carries a checksum the server verifies (botocore's CRC32, or Content-MD5 where
    AWS_REQUEST_CHECKSUM_CALCULATION=when_required turns that off);
  * files and parts share one thread pool of ``max_concurrency`` threads;
  * objects under the prefix that are not in the new manifest are deleted, so that KServe (which
    downloads the whole prefix) sees exactly the model;
  * no symbolic link is followed out of the folder (see `llmops.storage.manifest.model_files`).

The functions take the `S3Store` (`st`): its settings, client and `call` (retries).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Optional

from llmops.core.errors import LLMOpsError
from llmops.storage.manifest import MANIFEST, build_manifest
from llmops.storage.s3_errors import S3Error
from llmops.storage.s3_settings import TransferStats, parse_uri

log = logging.getLogger("llmops.storage.s3")

SHA_META = "llmops-sha256"  # object metadata key (x-amz-meta-llmops-sha256)
COPY_MAX = 5 * 1024 ** 3  # CopyObject's limit; bigger files are sent


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def read_range(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, length, offset)  # one read for a regular file; loop only if short
        if len(data) == length:
            return data
        out = bytearray(data)
        while len(out) < length:
            b = os.pread(fd, length - len(out), offset + len(out))
            if not b:
                raise LLMOpsError(f"{path}: file shrank while uploading (expected {length} bytes at {offset})")
            out += b
        return bytes(out)
    finally:
        os.close(fd)


def put_dir(st, local: Path, uri: str) -> dict:
    """Upload folder `local` to prefix `uri`; returns the manifest (written last)."""
    t0 = time.time()
    local = Path(local)
    if not local.is_dir():
        raise LLMOpsError(f"{local}: not a folder; nothing to upload to {uri}")
    bucket, prefix = parse_uri(uri)
    if not prefix:
        raise LLMOpsError(f"{uri}: a model needs its own prefix (s3://{bucket}/PREFIX/), not the bucket "
                          "root: the upload owns its prefix and removes objects that are not part of it")
    stats = st.last_stats = TransferStats()
    manifest = build_manifest(local, workers=min(4, max(1, int(st.s.max_concurrency))))
    files = manifest["files"]
    if not files:
        raise LLMOpsError(f"{local}: no files to upload to {uri} (an empty folder is not a model)")
    stats.files = len(files)
    stats.bytes_total = sum(m["size"] for m in files.values())
    st.ensure_bucket(bucket)
    existing = st.list(bucket, prefix)
    mkey = prefix + MANIFEST

    if mkey in existing:
        try:
            old = st.read_manifest(uri)
        except S3Error:
            old = None
        if old is not None and old.get("files") == files and all(
                existing.get(prefix + r, {}).get("size") == m["size"] for r, m in files.items()):
            stats.files_skipped = len(files)
            stats.seconds = time.time() - t0
            log.info("%s: already complete (manifest matches), nothing sent", uri)
            _remember(st, bucket, prefix, files)
            return json.loads(json.dumps(old))
        # from here on the prefix is incomplete until the new manifest lands
        st.call("delete", bucket, mkey, lambda: st.client.delete_object(Bucket=bucket, Key=mkey))

    # objects already there with the right size: is their content ours? (sha256 in metadata)
    same_size = [r for r, m in files.items() if existing.get(prefix + r, {}).get("size") == m["size"]]
    with ThreadPoolExecutor(max_workers=max(1, int(st.s.max_concurrency))) as ex:
        remote = dict(zip(same_size, ex.map(lambda r: remote_sha(st, bucket, prefix + r), same_size)))
    todo = []
    for rel, meta in files.items():
        if remote.get(rel) == meta["sha256"]:
            stats.add(files_skipped=1)
            continue
        todo.append(rel)
    stale = [k for k in existing if k != mkey and k[len(prefix):] not in files]
    _delete_keys(st, bucket, stale, stats)
    log.info("%s: %d files (%.1f MB), %d to send, %d already there", uri, len(files),
             stats.bytes_total / 1e6, len(todo), stats.files_skipped)

    todo = _copy_known(st, bucket, prefix, files, todo, stats)
    _upload_files(st, local, bucket, prefix, files, todo, stats)

    # every file is there with its size; then, and only then, the manifest
    after = st.list(bucket, prefix)
    for rel, meta in files.items():
        got = after.get(prefix + rel)
        if got is None or got["size"] != meta["size"]:
            raise S3Error(f"s3://{bucket}/{prefix}{rel}: missing or wrong size after upload "
                          f"(expected {meta['size']} bytes); the prefix stays incomplete", code="Verify")
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    st.call("write manifest", bucket, mkey, lambda: st.client.put_object(
        Bucket=bucket, Key=mkey, Body=body, ContentMD5=md5_b64(body), ContentType="application/json"),
        stats)
    stats.seconds = time.time() - t0
    log.info("%s: complete; sent %d files, %.1f MB in %.1f s (%d retries)", uri, stats.files_sent,
             stats.bytes_sent / 1e6, stats.seconds, stats.retries)
    _remember(st, bucket, prefix, files)
    return manifest


def _remember(st, bucket: str, prefix: str, files: dict) -> None:
    """A later put_dir of this store may copy these objects server-side (see _copy_known)."""
    for rel, meta in files.items():
        st.known[meta["sha256"]] = (bucket, prefix + rel, meta["size"])


def _copy_known(st, bucket: str, prefix: str, files: dict, todo: list[str], stats: TransferStats) -> list[str]:
    """Files this store put earlier in the same bucket (same sha256 and size, e.g. the HF weights
    again under caikit/artifacts/) are copied by the server (CopyObject): no byte crosses the
    network again. Returns what is left to send."""
    left = []
    for rel in todo:
        meta = files[rel]
        src = st.known.get(meta["sha256"])
        if src is None or src[0] != bucket or src[2] != meta["size"] or meta["size"] >= COPY_MAX:
            left.append(rel)
            continue
        key = prefix + rel
        st.call("copy to", bucket, key, lambda: st.client.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": src[0], "Key": src[1]},
            MetadataDirective="REPLACE", Metadata={SHA_META: meta["sha256"]}), stats)
        if remote_sha(st, bucket, key) != meta["sha256"]:  # the source changed since: send ours
            left.append(rel)
            continue
        stats.add(files_sent=1, files_copied=1)
    return left


def _integrity(st, data: bytes) -> dict:
    """Body checksum the server verifies: botocore adds CRC32 by default
    (request_checksum_calculation=when_supported); where that is turned off, Content-MD5."""
    if getattr(st.client.meta.config, "request_checksum_calculation", "when_supported") == "when_supported":
        return {}
    return {"ContentMD5": md5_b64(data)}


def remote_sha(st, bucket: str, key: str) -> Optional[str]:
    try:
        h = st.call("check", bucket, key, lambda: st.client.head_object(Bucket=bucket, Key=key))
    except S3Error as e:
        if e.code in ("404", "NoSuchKey"):
            return None
        raise
    return (h.get("Metadata") or {}).get(SHA_META)


def _delete_keys(st, bucket: str, keys: list[str], stats: TransferStats) -> None:
    for i in range(0, len(keys), 1000):
        batch = keys[i:i + 1000]
        st.call("delete", bucket, batch[0], lambda: st.client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}))
        stats.add(deleted=len(batch))
        log.info("s3://%s: removed %d objects not in the new manifest", bucket, len(batch))


def _upload_files(st, local: Path, bucket: str, prefix: str, files: dict, todo: list[str],
                  stats: TransferStats) -> None:
    if not todo:
        return
    cancel = threading.Event()
    chunk = st.s.chunk
    pending_mpu: dict[str, dict] = {}  # key -> {upload_id, parts: {n: etag}, left: int}
    lock = threading.Lock()
    open_uploads = None

    def put_small(rel: str) -> None:
        if cancel.is_set():
            return
        key, meta = prefix + rel, files[rel]
        data = read_range(local / rel, 0, meta["size"])

        def go():
            try:
                return st.client.put_object(Bucket=bucket, Key=key, Body=data, **_integrity(st, data),
                                              Metadata={SHA_META: meta["sha256"]})
            except Exception:
                stats.add(bytes_failed=len(data))
                raise

        st.call("upload", bucket, key, go, stats, cancel)
        stats.add(files_sent=1, bytes_sent=len(data))

    def put_part(rel: str, n: int) -> None:
        if cancel.is_set():
            return
        key, meta = prefix + rel, files[rel]
        info = pending_mpu[key]
        off = (n - 1) * chunk
        data = read_range(local / rel, off, min(chunk, meta["size"] - off))

        def go():
            try:
                return st.client.upload_part(Bucket=bucket, Key=key, UploadId=info["upload_id"],
                                               PartNumber=n, Body=data, **_integrity(st, data))
            except Exception:
                stats.add(bytes_failed=len(data))
                raise

        r = st.call(f"upload part {n} of", bucket, key, go, stats, cancel)
        stats.add(bytes_sent=len(data))
        with lock:
            info["parts"][n] = r["ETag"].strip('"')
            info["left"] -= 1
            done = info["left"] == 0
        if done:
            finish(rel)

    def finish(rel: str) -> None:
        key = prefix + rel
        info = pending_mpu[key]
        parts = [{"PartNumber": n, "ETag": f'"{e}"'} for n, e in sorted(info["parts"].items())]
        try:
            st.call("complete upload of", bucket, key, lambda: st.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=info["upload_id"], MultipartUpload={"Parts": parts}),
                stats, cancel)
        except S3Error as e:
            # a retried complete whose first answer was lost: the upload is gone because it
            # completed; the object is there with our sha256
            if e.code != "NoSuchUpload" or remote_sha(st, bucket, key) != files[rel]["sha256"]:
                raise
        stats.add(files_sent=1)

    units: list[tuple[Callable, tuple]] = []
    # big files first: their parts keep the pool busy while small files fill the gaps
    for rel in sorted(todo, key=lambda r: -files[r]["size"]):
        size = files[rel]["size"]
        if size < st.s.threshold:
            units.append((put_small, (rel,)))
            continue
        if open_uploads is None:
            open_uploads = _open_uploads(st, bucket, prefix)
        key = prefix + rel
        nparts = (size + chunk - 1) // chunk
        info = _resume_or_start(st, local / rel, bucket, key, files[rel], nparts, chunk,
                                     open_uploads.get(key, []), stats)
        pending_mpu[key] = info
        missing = [n for n in range(1, nparts + 1) if n not in info["parts"]]
        info["left"] = len(missing)
        if not missing:
            units.append((finish, (rel,)))
        for n in missing:
            units.append((put_part, (rel, n)))
    workers = max(1, int(st.s.max_concurrency))
    ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llmops-s3")
    futures: list[Future] = []
    try:
        futures = [ex.submit(fn, *args) for fn, args in units]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        errs = [f.exception() for f in futures if f.done() and f.exception() is not None]
        if errs:
            cancel.set()
            for f in futures:
                f.cancel()
            wait(futures)
            first = errs[0]
            if isinstance(first, LLMOpsError):
                raise first
            raise S3Error(f"upload to s3://{bucket}/{prefix}: {type(first).__name__}: {first}") from first
    except BaseException:
        cancel.set()
        for f in futures:
            f.cancel()
        raise
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    # uploads for these keys that we did not use are garbage now
    for key, ups in (open_uploads or {}).items():
        used = pending_mpu.get(key, {}).get("upload_id")
        for up in ups:
            if up["UploadId"] != used:
                _abort(st, bucket, key, up["UploadId"])


def _open_uploads(st, bucket: str, prefix: str) -> dict[str, list[dict]]:
    def go():
        out: dict[str, list[dict]] = {}
        pag = st.client.get_paginator("list_multipart_uploads")
        for page in pag.paginate(Bucket=bucket, Prefix=prefix):
            for u in page.get("Uploads", []) or []:
                out.setdefault(u["Key"], []).append(u)
        for ups in out.values():
            ups.sort(key=lambda u: u.get("Initiated") or 0, reverse=True)
        return out

    return st.call("list uploads", bucket, prefix, go)


def _abort(st, bucket: str, key: str, upload_id: str) -> None:
    try:
        st.call("abort upload of", bucket, key, lambda: st.client.abort_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id))
    except S3Error as e:  # harmless leftover: report and go on
        log.warning("%s", e)


def _resume_or_start(st, path: Path, bucket: str, key: str, meta: dict, nparts: int, chunk: int,
                     uploads: list[dict], stats: TransferStats) -> dict:
    """An upload to continue (parts that match the local bytes kept) or a new one."""
    for up in uploads[:1]:  # the newest
        uid = up["UploadId"]

        def go():
            out = {}
            pag = st.client.get_paginator("list_parts")
            for page in pag.paginate(Bucket=bucket, Key=key, UploadId=uid):
                for p in page.get("Parts", []) or []:
                    out[int(p["PartNumber"])] = (int(p["Size"]), str(p["ETag"]).strip('"'))
            return out

        try:
            remote = st.call("list parts of", bucket, key, go)
        except S3Error as e:
            if e.code == "NoSuchUpload":
                continue
            raise
        keep = {}
        for n, (size, etag) in remote.items():
            off = (n - 1) * chunk
            want = min(chunk, meta["size"] - off) if n <= nparts else -1
            if size == want and etag == hashlib.md5(read_range(path, off, size)).hexdigest():
                keep[n] = etag
        if keep:
            stats.add(parts_reused=len(keep))
            log.info("s3://%s/%s: resuming an interrupted upload, %d of %d parts already there",
                     bucket, key, len(keep), nparts)
            return {"upload_id": uid, "parts": keep}
    r = st.call("start upload of", bucket, key, lambda: st.client.create_multipart_upload(
        Bucket=bucket, Key=key, Metadata={SHA_META: meta["sha256"]}), stats)
    return {"upload_id": r["UploadId"], "parts": {}}
