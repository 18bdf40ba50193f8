"""S3 / MinIO store (boto3): parallel, resumable, verified uploads; verified downloads.

Layout: a model lives under a prefix ending in '/', e.g. ``s3://bucket/models/<run_id>/hf/``.
The prefix is complete only when ``llmops-manifest.json`` (every file's relative path, size and
sha256) is present; it is written last and removed first when a prefix is rewritten.

Upload (`put_dir`):
  * every file is hashed (sha256) locally; an object already under the prefix with the same size
    and the same sha256 in its metadata (``x-amz-meta-llmops-sha256``) is not sent again;
  * small files go in one PUT, files at or above ``multipart_threshold_mb`` in parts of
    ``multipart_chunk_mb``; a multipart upload left behind by an interrupted run is resumed: parts
    whose size and MD5 (the part's ETag) match the local bytes are kept, the rest are sent;
  * every body carries a checksum the server verifies (botocore's CRC32, or Content-MD5 where
    AWS_REQUEST_CHECKSUM_CALCULATION=when_required turns that off), and each request is retried with
    exponential backoff and jitter on transient errors (connection errors, timeouts, 5xx,
    throttling) up to ``max_attempts`` times;
  * files and parts share one thread pool of ``max_concurrency`` threads;
  * objects under the prefix that are not in the new manifest are deleted, so that KServe (which
    downloads the whole prefix) sees exactly the model.

Download (`get_dir`): each file is streamed to a temporary name next to its target, hashed,
checked against the manifest and renamed; a full disk is an error naming the key and the path.

Credentials come from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``) or a named profile (``storage.profile``), never from the config.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from llmops.core.errors import LLMOpsError
from llmops.storage.manifest import MANIFEST, sha256_file

log = logging.getLogger("llmops.storage.s3")

SHA_META = "llmops-sha256"  # object metadata key (x-amz-meta-llmops-sha256)
MiB = 1024 * 1024
RETRYABLE_CODES = {
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "InternalError",
    "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "BadGateway",
    "GatewayTimeout", "XMinioServerNotInitialized",
}
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                    "InvalidClientTokenId", "AuthorizationHeaderMalformed"}


class S3Error(LLMOpsError):
    """An S3 request failed for good; the message names the bucket and key."""

    def __init__(self, message: str, *, code: str = "", retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.retryable = retryable


# ------------------------------------------------------------------------------------- settings
@dataclass
class S3Settings:
    bucket: Optional[str] = None
    prefix: str = "models"
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    addressing_style: str = "auto"
    verify: bool = True
    ca_bundle: Optional[str] = None
    profile: Optional[str] = None
    create_bucket: bool = False
    multipart_threshold_mb: float = 16
    multipart_chunk_mb: float = 16
    max_concurrency: int = 8
    max_attempts: int = 5
    retry_base_s: float = 0.5
    retry_max_s: float = 20.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0

    @classmethod
    def from_config(cls, storage: Any) -> "S3Settings":
        names = cls.__dataclass_fields__.keys()
        kw = {}
        for n in names:
            try:
                v = storage[n] if n in storage else None
            except Exception:
                v = None
            if v is not None:
                kw[n] = v
        return cls(**kw)

    @property
    def threshold(self) -> int:
        return max(int(self.multipart_threshold_mb * MiB), 5 * MiB)

    @property
    def chunk(self) -> int:
        return max(int(self.multipart_chunk_mb * MiB), 5 * MiB)  # S3 minimum part size


@dataclass
class TransferStats:
    files: int = 0
    files_sent: int = 0
    files_skipped: int = 0
    bytes_total: int = 0
    bytes_sent: int = 0  # bodies of requests that succeeded (uploads: sent; downloads: received)
    bytes_failed: int = 0  # bodies of attempts that failed (at most this much was sent in vain)
    parts_reused: int = 0
    retries: int = 0
    deleted: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------------ uris
def parse_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b/' -> ('bucket', 'a/b/'); the key prefix always ends in '/' (or is '')."""
    p = urlparse(str(uri))
    if p.scheme != "s3" or not p.netloc:
        raise LLMOpsError(f"{uri!r}: expected an s3://BUCKET/PREFIX/ URI")
    key = p.path.lstrip("/")
    if key and not key.endswith("/"):
        key += "/"
    return p.netloc, key


def _safe_rel(rel: str, where: str) -> str:
    pp = PurePosixPath(rel)
    if pp.is_absolute() or ".." in pp.parts or not rel:
        raise LLMOpsError(f"{where}: {MANIFEST} lists an unsafe path {rel!r}")
    return rel


# ---------------------------------------------------------------------------------------- hashes
def _hash_file(path: Path, bufsize: int = 4 * MiB) -> str:
    return sha256_file(path, bufsize)


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _read_range(path: Path, offset: int, length: int) -> bytes:
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


def build_manifest(local: Path, workers: int = 2) -> dict:
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MANIFEST
                   and not p.name.startswith(".llmops-tmp-"))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:  # hashlib releases the GIL
        shas = list(ex.map(_hash_file, files))
    return {"version": 1, "files": {p.relative_to(local).as_posix(): {"size": p.stat().st_size, "sha256": s}
                                    for p, s in zip(files, shas)}}


# ---------------------------------------------------------------------------------------- errors
def _error_code(exc: BaseException) -> tuple[str, int]:
    resp = getattr(exc, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", "") or "")
    status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectionError as BotoConnectionError,
        EndpointConnectionError,
        HTTPClientError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError,
                        BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError,
                        ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        return status >= 500 or status == 429 or code in RETRYABLE_CODES
    return False


class S3Store:
    """Objects under s3:// prefixes of one endpoint."""

    def __init__(self, settings: S3Settings, client: Any = None):
        self.s = settings
        self._client = client
        self._client_lock = threading.Lock()
        self.last_stats = TransferStats()

    @classmethod
    def from_config(cls, storage: Any) -> "S3Store":
        return cls(S3Settings.from_config(storage))

    # ---------------------------------------------------------------------------------- client
    @property
    def endpoint(self) -> str:
        return self.s.endpoint_url or "the AWS S3 endpoint"

    def session(self):
        import boto3
        from botocore.exceptions import ProfileNotFound

        try:
            return boto3.session.Session(profile_name=self.s.profile or None,
                                         region_name=self.s.region or None)
        except ProfileNotFound:
            raise LLMOpsError(f"storage.profile = {self.s.profile!r}: no such profile in the AWS "
                              "config/credentials files") from None

    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                from botocore.config import Config

                cfg = Config(
                    region_name=self.s.region or None,
                    s3={"addressing_style": self.s.addressing_style or "auto"},
                    retries={"total_max_attempts": 1},  # retries are ours (see _call)
                    max_pool_connections=max(10, int(self.s.max_concurrency) + 4),
                    connect_timeout=self.s.connect_timeout_s,
                    read_timeout=self.s.read_timeout_s,
                )
                verify: Any = self.s.verify
                if self.s.verify and self.s.ca_bundle:
                    verify = str(Path(self.s.ca_bundle).expanduser())
                if not self.s.verify:
                    import warnings

                    # said once here rather than by urllib3 on every request
                    log.warning("TLS certificates of %s are not verified (storage.verify=false)", self.endpoint)
                    warnings.filterwarnings("ignore", message="Unverified HTTPS request")
                session = self.session()
                creds = session.get_credentials()
                if creds is not None:  # scrub them from every log line and error message
                    from llmops.core import secrets

                    frozen = creds.get_frozen_credentials()
                    for v in (frozen.access_key, frozen.secret_key, frozen.token):
                        if v:
                            secrets.remember(v)
                self._client = session.client("s3", endpoint_url=self.s.endpoint_url or None,
                                              verify=verify, config=cfg)
            return self._client

    # -------------------------------------------------------------------------------- requests
    def explain(self, exc: BaseException, action: str, bucket: str, key: str = "") -> S3Error:
        """A user-facing error for a failed request, naming bucket and key."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            SSLError,
        )

        where = f"s3://{bucket}/{key}"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            src = f"profile {self.s.profile!r}" if self.s.profile else "the environment"
            return S3Error(f"{action} {where}: no S3 credentials in {src}; set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY (or storage.profile)", code="NoCredentials")
        if isinstance(exc, SSLError):
            return S3Error(f"{action} {where}: TLS verification failed for {self.endpoint} ({exc}); "
                           "set storage.ca_bundle to the endpoint's CA certificate", code="SSLError")
        if isinstance(exc, ClientError):
            code, status = _error_code(exc)
            msg = str(exc.response.get("Error", {}).get("Message", "") or "")
            if code == "NoSuchBucket" or (status == 404 and not key and action.startswith("check")):
                return S3Error(f"{action} {where}: bucket '{bucket}' does not exist at {self.endpoint}; "
                               "create it or set storage.create_bucket=true", code="NoSuchBucket")
            if code in CREDENTIAL_CODES:
                src = f"profile {self.s.profile!r}" if self.s.profile else \
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment"
                return S3Error(f"{action} {where}: {self.endpoint} rejected the credentials ({code}: "
                               f"{msg}); check {src}", code=code)
            if code in ("AccessDenied", "AllAccessDisabled", "Forbidden") or status == 403:
                return S3Error(f"{action} {where}: access denied ({code or status}: {msg or 'Forbidden'}); "
                               f"the credentials lack permission for bucket '{bucket}'", code="AccessDenied")
            return S3Error(f"{action} {where}: {code or status}: {msg or exc}", code=code or str(status),
                           retryable=is_transient(exc))
        if isinstance(exc, EndpointConnectionError) or is_transient(exc):
            return S3Error(f"{action} {where}: cannot reach the S3 endpoint {self.endpoint} "
                           f"(storage.endpoint_url): {exc}", code="EndpointConnectionError", retryable=True)
        return S3Error(f"{action} {where}: {type(exc).__name__}: {exc}", code=type(exc).__name__)

    def _call(self, action: str, bucket: str, key: str, fn: Callable[[], Any],
              stats: Optional[TransferStats] = None, cancel: Optional[threading.Event] = None) -> Any:
        """fn() with retries and exponential backoff on transient errors; S3Error otherwise."""
        attempts = max(1, int(self.s.max_attempts))
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - classified below
                if isinstance(e, LLMOpsError):
                    raise
                if not is_transient(e) or attempt == attempts or (cancel is not None and cancel.is_set()):
                    err = self.explain(e, action, bucket, key)
                    if is_transient(e) and attempt > 1:
                        err.args = (f"{err.args[0]} (gave up after {attempt} attempts)",)
                    raise err from None
                delay = min(self.s.retry_max_s, self.s.retry_base_s * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                code, status = _error_code(e)
                log.warning("%s s3://%s/%s: %s; retry %d/%d in %.1f s", action, bucket, key,
                            code or type(e).__name__, attempt, attempts - 1, delay)
                if stats is not None:
                    stats.add(retries=1)
                if cancel is not None:
                    if cancel.wait(delay):
                        raise self.explain(e, action, bucket, key) from None
                else:
                    time.sleep(delay)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------------------------- bucket
    def ensure_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call("check bucket", bucket, "", lambda: self.client.head_bucket(Bucket=bucket))
            return
        except S3Error as e:
            if e.code == "AccessDenied":
                # HEAD answers carry no error code: ask again with a GET to tell bad credentials
                # from a missing permission (a policy may also allow listing but not HEAD)
                self._call("check bucket", bucket, "", lambda: self.client.list_objects_v2(
                    Bucket=bucket, MaxKeys=1))
                return
            if e.code != "NoSuchBucket" or not self.s.create_bucket:
                raise
        kw: dict = {"Bucket": bucket}
        region = self.s.region or self.client.meta.region_name
        if region and region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kw)
            log.info("created bucket s3://%s at %s", bucket, self.endpoint)
        except ClientError as e:
            code, _ = _error_code(e)
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self.explain(e, "create bucket", bucket) from None

    def _list(self, bucket: str, prefix: str) -> dict[str, dict]:
        def go():
            out = {}
            pag = self.client.get_paginator("list_objects_v2")
            for page in pag.paginate(Bucket=bucket, Prefix=prefix):
                for o in page.get("Contents", []) or []:
                    out[o["Key"]] = {"size": int(o["Size"]), "etag": str(o.get("ETag", "")).strip('"')}
            return out

        return self._call("list", bucket, prefix, go)

    def read_manifest(self, uri: str) -> dict:
        bucket, prefix = parse_uri(uri)
        key = prefix + MANIFEST
        try:
            body = self._call("read manifest", bucket, key,
                              lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except S3Error as e:
            if e.code in ("NoSuchKey", "404"):
                raise S3Error(f"{uri}: no {MANIFEST} (s3://{bucket}/{key}); the model there is "
                              "incomplete or absent", code="Incomplete") from None
            raise
        try:
            m = json.loads(body)
            assert isinstance(m.get("files"), dict)
        except Exception:
            raise S3Error(f"s3://{bucket}/{key}: not a valid {MANIFEST}", code="BadManifest") from None
        return m

    def verify(self, uri: str) -> dict:
        """The manifest of `uri`, after checking that every file it lists is stored with its size
        Nothing is downloaded: the sha256 of each file was checked when it was uploaded."""
        manifest = self.read_manifest(uri)
        bucket, prefix = parse_uri(uri)
        listed = self._list(bucket, prefix)
        for rel, meta in manifest["files"].items():
            obj = listed.get(prefix + _safe_rel(rel, uri))
            if obj is None:
                raise S3Error(f"{uri}: file '{rel}' listed in {MANIFEST} is missing", code="Incomplete")
            if int(obj["size"]) != int(meta["size"]):
                raise S3Error(f"{uri}: file '{rel}' is {obj['size']} bytes, {MANIFEST} says "
                              f"{meta['size']}", code="Incomplete")
        return manifest

    def exists(self, uri: str) -> bool:
        bucket, prefix = parse_uri(uri)
        key = prefix + MANIFEST
        try:
            self._call("check", bucket, key, lambda: self.client.head_object(Bucket=bucket, Key=key))
            return True
        except S3Error as e:
            if e.code in ("404", "NoSuchKey", "NoSuchBucket"):
                return False
            if e.code != "AccessDenied":
                raise
        # HEAD answers carry no error code: a GET says why (or that the manifest is absent)
        try:
            self._call("check", bucket, key, lambda: self.client.get_object(
                Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].read())
            return True
        except S3Error as e:
            if e.code in ("404", "NoSuchKey", "NoSuchBucket"):
                return False
            raise

    # ---------------------------------------------------------------------------------- upload
    def put_dir(self, local: Path, uri: str) -> dict:
        """Upload folder `local` to prefix `uri`; returns the manifest (written last)."""
        t0 = time.time()
        local = Path(local)
        if not local.is_dir():
            raise LLMOpsError(f"{local}: not a folder; nothing to upload to {uri}")
        bucket, prefix = parse_uri(uri)
        if not prefix:
            raise LLMOpsError(f"{uri}: a model needs its own prefix (s3://{bucket}/PREFIX/), not the bucket "
                              "root: the upload owns its prefix and removes objects that are not part of it")
        stats = self.last_stats = TransferStats()
        manifest = build_manifest(local, workers=min(4, max(1, int(self.s.max_concurrency))))
        files = manifest["files"]
        if not files:
            raise LLMOpsError(f"{local}: no files to upload to {uri} (an empty folder is not a model)")
        stats.files = len(files)
        stats.bytes_total = sum(m["size"] for m in files.values())
        self.ensure_bucket(bucket)
        existing = self._list(bucket, prefix)
        mkey = prefix + MANIFEST

        if mkey in existing:
            try:
                old = self.read_manifest(uri)
            except S3Error:
                old = None
            if old is not None and old.get("files") == files and all(
                    existing.get(prefix + r, {}).get("size") == m["size"] for r, m in files.items()):
                stats.files_skipped = len(files)
                stats.seconds = time.time() - t0
                log.info("%s: already complete (manifest matches), nothing sent", uri)
                return json.loads(json.dumps(old))
            # from here on the prefix is incomplete until the new manifest lands
            self._call("delete", bucket, mkey, lambda: self.client.delete_object(Bucket=bucket, Key=mkey))

        # objects already there with the right size: is their content ours? (sha256 in metadata)
        same_size = [r for r, m in files.items() if existing.get(prefix + r, {}).get("size") == m["size"]]
        with ThreadPoolExecutor(max_workers=max(1, int(self.s.max_concurrency))) as ex:
            remote = dict(zip(same_size, ex.map(lambda r: self._remote_sha(bucket, prefix + r), same_size)))
        todo = []
        for rel, meta in files.items():
            if remote.get(rel) == meta["sha256"]:
                stats.add(files_skipped=1)
                continue
            todo.append(rel)
        stale = [k for k in existing if k != mkey and k[len(prefix):] not in files]
        self._delete_keys(bucket, stale, stats)
        log.info("%s: %d files (%.1f MB), %d to send, %d already there", uri, len(files),
                 stats.bytes_total / 1e6, len(todo), stats.files_skipped)

        self._upload_files(local, bucket, prefix, files, todo, stats)

        # every file is there with its size; then, and only then, the manifest
        after = self._list(bucket, prefix)
        for rel, meta in files.items():
            got = after.get(prefix + rel)
            if got is None or got["size"] != meta["size"]:
                raise S3Error(f"s3://{bucket}/{prefix}{rel}: missing or wrong size after upload "
                              f"(expected {meta['size']} bytes); the prefix stays incomplete", code="Verify")
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        self._call("write manifest", bucket, mkey, lambda: self.client.put_object(
            Bucket=bucket, Key=mkey, Body=body, ContentMD5=_md5_b64(body), ContentType="application/json"),
            stats)
        stats.seconds = time.time() - t0
        log.info("%s: complete; sent %d files, %.1f MB in %.1f s (%d retries)", uri, stats.files_sent,
                 stats.bytes_sent / 1e6, stats.seconds, stats.retries)
        return manifest

    def _integrity(self, data: bytes) -> dict:
        """Body checksum the server verifies: botocore adds CRC32 by default
        (request_checksum_calculation=when_supported); where that is turned off, Content-MD5."""
        if getattr(self.client.meta.config, "request_checksum_calculation", "when_supported") == "when_supported":
            return {}
        return {"ContentMD5": _md5_b64(data)}

    def _remote_sha(self, bucket: str, key: str) -> Optional[str]:
        try:
            h = self._call("check", bucket, key, lambda: self.client.head_object(Bucket=bucket, Key=key))
        except S3Error as e:
            if e.code in ("404", "NoSuchKey"):
                return None
            raise
        return (h.get("Metadata") or {}).get(SHA_META)

    def _delete_keys(self, bucket: str, keys: list[str], stats: TransferStats) -> None:
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            self._call("delete", bucket, batch[0], lambda: self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}))
            stats.add(deleted=len(batch))
            log.info("s3://%s: removed %d objects not in the new manifest", bucket, len(batch))

    def _upload_files(self, local: Path, bucket: str, prefix: str, files: dict, todo: list[str],
                      stats: TransferStats) -> None:
        if not todo:
            return
        cancel = threading.Event()
        chunk = self.s.chunk
        pending_mpu: dict[str, dict] = {}  # key -> {upload_id, parts: {n: etag}, left: int}
        lock = threading.Lock()
        open_uploads = None

        def put_small(rel: str) -> None:
            if cancel.is_set():
                return
            key, meta = prefix + rel, files[rel]
            data = _read_range(local / rel, 0, meta["size"])

            def go():
                try:
                    return self.client.put_object(Bucket=bucket, Key=key, Body=data, **self._integrity(data),
                                                  Metadata={SHA_META: meta["sha256"]})
                except Exception:
                    stats.add(bytes_failed=len(data))
                    raise

            self._call("upload", bucket, key, go, stats, cancel)
            stats.add(files_sent=1, bytes_sent=len(data))

        def put_part(rel: str, n: int) -> None:
            if cancel.is_set():
                return
            key, meta = prefix + rel, files[rel]
            info = pending_mpu[key]
            off = (n - 1) * chunk
            data = _read_range(local / rel, off, min(chunk, meta["size"] - off))

            def go():
                try:
                    return self.client.upload_part(Bucket=bucket, Key=key, UploadId=info["upload_id"],
                                                   PartNumber=n, Body=data, **self._integrity(data))
                except Exception:
                    stats.add(bytes_failed=len(data))
                    raise

            r = self._call(f"upload part {n} of", bucket, key, go, stats, cancel)
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
                self._call("complete upload of", bucket, key, lambda: self.client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=info["upload_id"], MultipartUpload={"Parts": parts}),
                    stats, cancel)
            except S3Error as e:
                # a retried complete whose first answer was lost: the upload is gone because it
                # completed; the object is there with our sha256
                if e.code != "NoSuchUpload" or self._remote_sha(bucket, key) != files[rel]["sha256"]:
                    raise
            stats.add(files_sent=1)

        units: list[tuple[Callable, tuple]] = []
        # big files first: their parts keep the pool busy while small files fill the gaps
        for rel in sorted(todo, key=lambda r: -files[r]["size"]):
            size = files[rel]["size"]
            if size < self.s.threshold:
                units.append((put_small, (rel,)))
                continue
            if open_uploads is None:
                open_uploads = self._open_uploads(bucket, prefix)
            key = prefix + rel
            nparts = (size + chunk - 1) // chunk
            info = self._resume_or_start(local / rel, bucket, key, files[rel], nparts, chunk,
                                         open_uploads.get(key, []), stats)
            pending_mpu[key] = info
            missing = [n for n in range(1, nparts + 1) if n not in info["parts"]]
            info["left"] = len(missing)
            if not missing:
                units.append((finish, (rel,)))
            for n in missing:
                units.append((put_part, (rel, n)))
        workers = max(1, int(self.s.max_concurrency))
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
                    self._abort(bucket, key, up["UploadId"])

    def _open_uploads(self, bucket: str, prefix: str) -> dict[str, list[dict]]:
        def go():
            out: dict[str, list[dict]] = {}
            pag = self.client.get_paginator("list_multipart_uploads")
            for page in pag.paginate(Bucket=bucket, Prefix=prefix):
                for u in page.get("Uploads", []) or []:
                    out.setdefault(u["Key"], []).append(u)
            for ups in out.values():
                ups.sort(key=lambda u: u.get("Initiated") or 0, reverse=True)
            return out

        return self._call("list uploads", bucket, prefix, go)

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self._call("abort upload of", bucket, key, lambda: self.client.abort_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id))
        except S3Error as e:  # harmless leftover: report and go on
            log.warning("%s", e)

    def _resume_or_start(self, path: Path, bucket: str, key: str, meta: dict, nparts: int, chunk: int,
                         uploads: list[dict], stats: TransferStats) -> dict:
        """An upload to continue (parts that match the local bytes kept) or a new one."""
        for up in uploads[:1]:  # the newest
            uid = up["UploadId"]

            def go():
                out = {}
                pag = self.client.get_paginator("list_parts")
                for page in pag.paginate(Bucket=bucket, Key=key, UploadId=uid):
                    for p in page.get("Parts", []) or []:
                        out[int(p["PartNumber"])] = (int(p["Size"]), str(p["ETag"]).strip('"'))
                return out

            try:
                remote = self._call("list parts of", bucket, key, go)
            except S3Error as e:
                if e.code == "NoSuchUpload":
                    continue
                raise
            keep = {}
            for n, (size, etag) in remote.items():
                off = (n - 1) * chunk
                want = min(chunk, meta["size"] - off) if n <= nparts else -1
                if size == want and etag == hashlib.md5(_read_range(path, off, size)).hexdigest():
                    keep[n] = etag
            if keep:
                stats.add(parts_reused=len(keep))
                log.info("s3://%s/%s: resuming an interrupted upload, %d of %d parts already there",
                         bucket, key, len(keep), nparts)
                return {"upload_id": uid, "parts": keep}
        r = self._call("start upload of", bucket, key, lambda: self.client.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata={SHA_META: meta["sha256"]}), stats)
        return {"upload_id": r["UploadId"], "parts": {}}

    # -------------------------------------------------------------------------------- download
    def get_dir(self, uri: str, local: Path) -> Path:
        """Download the model at `uri` into `local`, every file checked against the manifest."""
        t0 = time.time()
        bucket, prefix = parse_uri(uri)
        manifest = self.read_manifest(uri)
        local = Path(local)
        stats = self.last_stats = TransferStats(files=len(manifest["files"]))
        try:
            local.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LLMOpsError(f"{local}: cannot create the download folder for {uri}: {e.strerror}") from None
        todo = []
        for rel, meta in manifest["files"].items():
            _safe_rel(rel, uri)
            stats.bytes_total += int(meta["size"])
            p = local / rel
            if p.is_file() and p.stat().st_size == meta["size"] and _hash_file(p) == meta["sha256"]:
                stats.files_skipped += 1
                continue
            todo.append(rel)
        cancel = threading.Event()
        with ThreadPoolExecutor(max_workers=max(1, int(self.s.max_concurrency)),
                                thread_name_prefix="llmops-s3-get") as ex:
            futures = [ex.submit(self._get_file, bucket, prefix + rel, local / rel, manifest["files"][rel],
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

    def _get_file(self, bucket: str, key: str, target: Path, meta: dict, stats: TransferStats,
                  cancel: threading.Event) -> None:
        if cancel.is_set():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".llmops-tmp-{target.name}.{os.getpid()}.{threading.get_ident()}"

        def go():
            h = hashlib.sha256()
            n = 0
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
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
                _unlink(tmp)
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise LLMOpsError(f"no space left on the device for {target} while downloading "
                                      f"s3://{bucket}/{key} ({meta['size']} bytes); free space or "
                                      "choose another folder") from None
                raise LLMOpsError(f"{target}: cannot write s3://{bucket}/{key}: {e.strerror or e}") from None
            stats.add(bytes_sent=n)
            return n, h.hexdigest()

        try:
            n, sha = self._call("download", bucket, key, go, stats, cancel)
        except BaseException:
            _unlink(tmp)
            raise
        if n != meta["size"] or sha != meta["sha256"]:
            _unlink(tmp)
            raise S3Error(f"s3://{bucket}/{key}: downloaded {n} bytes with sha256 {sha[:12]}..., but "
                          f"{MANIFEST} says {meta['size']} bytes, sha256 {meta['sha256'][:12]}...; "
                          "the stored object is corrupt or was changed after upload", code="Verify")
        os.replace(tmp, target)


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def pyarrow_filesystem(s: S3Settings):
    """A pyarrow S3FileSystem for the same endpoint and credentials (Ray Train checkpoints)."""
    import pyarrow.fs as pafs

    if not s.verify:
        raise LLMOpsError("storage.verify=false: pyarrow's S3 filesystem (Ray Train checkpoints) cannot "
                          "skip TLS verification; set storage.ca_bundle to the endpoint's CA instead")
    store = S3Store(s)
    creds = store.session().get_credentials()
    if creds is None:
        raise S3Error(f"Ray Train checkpoints in s3://{s.bucket}/: no S3 credentials; set "
                      "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or storage.profile)", code="NoCredentials")
    creds = creds.get_frozen_credentials()
    kw: dict = {"access_key": creds.access_key, "secret_key": creds.secret_key,
                "region": s.region or store.session().region_name or "us-east-1",
                "connect_timeout": float(s.connect_timeout_s), "request_timeout": float(s.read_timeout_s),
                "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max(1, int(s.max_attempts)))}
    if creds.token:
        kw["session_token"] = creds.token
    if s.endpoint_url:
        u = urlparse(s.endpoint_url)
        kw["scheme"] = u.scheme or "https"
        kw["endpoint_override"] = u.netloc + (u.path.rstrip("/") if u.path not in ("", "/") else "")
    if s.addressing_style == "virtual":
        kw["force_virtual_addressing"] = True
    if s.ca_bundle:
        kw["tls_ca_file_path"] = str(Path(s.ca_bundle).expanduser())
    return pafs.S3FileSystem(**kw)
