"""S3 / MinIO store (boto3): parallel, resumable, verified uploads; verified downloads.

Layout: a model lives under a prefix ending in '/', e.g. ``s3://bucket/models/<run_id>/hf/``.
The prefix is complete only when ``llmops-manifest.json`` (every file's relative path, size and
sha256) is present; it is written last and removed first when a prefix is rewritten.

`S3Store` is the facade; the work lives by concern in
  * ``s3_settings``: S3Settings, s3:// URIs, the boto3 client (endpoint, TLS, credentials);
  * ``s3_errors``: error codes, what is transient, user-facing errors, retries with backoff;
  * ``s3_upload``: ``put_dir`` (multipart, resumable parts, manifest last);
  * ``s3_download``: ``get_dir`` (verified, atomic per file);
  * ``s3_arrow``: pyarrow's S3 filesystem for Ray Train checkpoints.

Credentials come from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``) or a named profile (``storage.profile``), never from the config.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from llmops.storage import s3_download, s3_upload
from llmops.storage.manifest import MANIFEST, build_manifest
from llmops.storage.s3_arrow import pyarrow_filesystem
from llmops.storage.s3_errors import S3Error, call, error_code, explain, is_transient
from llmops.storage.s3_settings import (MiB, S3Settings, TransferStats, make_client, make_session,
                                        parse_uri, safe_rel)
from llmops.storage.s3_upload import SHA_META

__all__ = ["MiB", "SHA_META", "S3Error", "S3Settings", "S3Store", "TransferStats", "build_manifest",
           "is_transient", "parse_uri", "pyarrow_filesystem"]

log = logging.getLogger("llmops.storage.s3")


class S3Store:
    """Objects under s3:// prefixes of one endpoint."""

    def __init__(self, settings: S3Settings, client: Any = None):
        self.s = settings
        self._client = client
        self._client_lock = threading.Lock()
        self.last_stats = TransferStats()
        self.known: dict[str, tuple[str, str, int]] = {}  # sha256 -> (bucket, key, size) put by this store

    @classmethod
    def from_config(cls, storage: Any) -> "S3Store":
        return cls(S3Settings.from_config(storage))

    # ---------------------------------------------------------------------------------- client
    @property
    def endpoint(self) -> str:
        return self.s.endpoint

    def session(self):
        return make_session(self.s)

    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self.s)
            return self._client

    # -------------------------------------------------------------------------------- requests
    def explain(self, exc: BaseException, action: str, bucket: str, key: str = "") -> S3Error:
        """A user-facing error for a failed request, naming bucket and key."""
        return explain(self.s, exc, action, bucket, key)

    def call(self, action: str, bucket: str, key: str, fn: Callable[[], Any],
             stats: Optional[TransferStats] = None, cancel: Optional[threading.Event] = None,
             attempts: Optional[int] = None) -> Any:
        """fn() with retries and exponential backoff on transient errors; S3Error otherwise."""
        return call(self.s, action, bucket, key, fn, stats, cancel, attempts)

    # ---------------------------------------------------------------------------------- bucket
    def ensure_bucket(self, bucket: str, attempts: Optional[int] = None) -> None:
        """The bucket exists (created when storage.create_bucket); S3Error otherwise."""
        from botocore.exceptions import ClientError

        try:
            self.call("check bucket", bucket, "", lambda: self.client.head_bucket(Bucket=bucket),
                      attempts=attempts)
            return
        except S3Error as e:
            if e.code == "AccessDenied":
                # HEAD answers carry no error code: ask again with a GET to tell bad credentials
                # from a missing permission (a policy may also allow listing but not HEAD)
                self.call("check bucket", bucket, "", lambda: self.client.list_objects_v2(
                    Bucket=bucket, MaxKeys=1), attempts=attempts)
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
            code, _ = error_code(e)
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self.explain(e, "create bucket", bucket) from None

    def list(self, bucket: str, prefix: str) -> dict[str, dict]:
        def go():
            out = {}
            pag = self.client.get_paginator("list_objects_v2")
            for page in pag.paginate(Bucket=bucket, Prefix=prefix):
                for o in page.get("Contents", []) or []:
                    out[o["Key"]] = {"size": int(o["Size"]), "etag": str(o.get("ETag", "")).strip('"')}
            return out

        return self.call("list", bucket, prefix, go)

    def read_manifest(self, uri: str) -> dict:
        bucket, prefix = parse_uri(uri)
        key = prefix + MANIFEST
        try:
            body = self.call("read manifest", bucket, key,
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
        listed = self.list(bucket, prefix)
        for rel, meta in manifest["files"].items():
            obj = listed.get(prefix + safe_rel(rel, uri))
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
            self.call("check", bucket, key, lambda: self.client.head_object(Bucket=bucket, Key=key))
            return True
        except S3Error as e:
            if e.code in ("404", "NoSuchKey", "NoSuchBucket"):
                return False
            if e.code != "AccessDenied":
                raise
        # HEAD answers carry no error code: a GET says why (or that the manifest is absent)
        try:
            self.call("check", bucket, key, lambda: self.client.get_object(
                Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].read())
            return True
        except S3Error as e:
            if e.code in ("404", "NoSuchKey", "NoSuchBucket"):
                return False
            raise

    # --------------------------------------------------------------------------- put / get
    def put_dir(self, local: Path, uri: str) -> dict:
        """Upload folder `local` to prefix `uri`; returns the manifest (written last)."""
        return s3_upload.put_dir(self, local, uri)

    def get_dir(self, uri: str, local: Path) -> Path:
        """Download the model at `uri` into `local`, every file checked against the manifest."""
        return s3_download.get_dir(self, uri, local)

    def serving_uri(self, uri: str) -> str:
        return uri
