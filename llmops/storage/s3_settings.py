"""S3 settings (the `storage` keys storage=s3 reads), s3:// URIs, and the boto3 client built from
them: endpoint, addressing style, TLS (verify, ca_bundle), timeouts, and credentials from the
environment or ``storage.profile`` (remembered by ``llmops.core.secrets``: no log line shows them).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional
from urllib.parse import urlparse

from llmops.core.errors import LLMOpsError
from llmops.storage.settings import section_values
from llmops.storage.manifest import MANIFEST

log = logging.getLogger("llmops.storage.s3")

MiB = 1024 * 1024


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
        return cls(**section_values(cls, storage))

    @property
    def threshold(self) -> int:
        return max(int(self.multipart_threshold_mb * MiB), 5 * MiB)

    @property
    def chunk(self) -> int:
        return max(int(self.multipart_chunk_mb * MiB), 5 * MiB)  # S3 minimum part size

    @property
    def endpoint(self) -> str:
        return self.endpoint_url or "the AWS S3 endpoint"

    def credential_source(self) -> str:
        """Where the credentials come from, for messages (never their values)."""
        return f"profile {self.profile!r} (storage.profile)" if self.profile else \
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the environment"


@dataclass
class TransferStats:
    files: int = 0
    files_sent: int = 0
    files_skipped: int = 0
    bytes_total: int = 0
    bytes_sent: int = 0  # bodies of requests that succeeded (uploads: sent; downloads: received)
    bytes_failed: int = 0  # bodies of attempts that failed (at most this much was sent in vain)
    parts_reused: int = 0
    files_copied: int = 0  # copied by the server from an object this store put before (CopyObject)
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


def safe_rel(rel: str, where: str) -> str:
    """`rel` (a path a manifest lists) when it stays inside its folder; LLMOpsError otherwise."""
    pp = PurePosixPath(rel)
    if pp.is_absolute() or ".." in pp.parts or not rel:
        raise LLMOpsError(f"{where}: {MANIFEST} lists an unsafe path {rel!r}")
    return rel


# ---------------------------------------------------------------------------------------- client
def make_session(s: S3Settings):
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.session.Session(profile_name=s.profile or None, region_name=s.region or None)
    except ProfileNotFound:
        raise LLMOpsError(f"storage.profile = {s.profile!r}: no such profile in the AWS "
                          "config/credentials files") from None


def make_client(s: S3Settings):
    """A boto3 S3 client for `s`; its credentials are remembered as secrets (scrubbed from logs)."""
    from botocore.config import Config

    cfg = Config(
        region_name=s.region or None,
        s3={"addressing_style": s.addressing_style or "auto"},
        retries={"total_max_attempts": 1},  # retries are ours (see s3_errors.call)
        max_pool_connections=max(10, int(s.max_concurrency) + 4),
        connect_timeout=s.connect_timeout_s,
        read_timeout=s.read_timeout_s,
    )
    verify: Any = s.verify
    if s.verify and s.ca_bundle:
        verify = str(Path(s.ca_bundle).expanduser())
    if not s.verify:
        import warnings

        # said once here rather than by urllib3 on every request
        log.warning("TLS certificates of %s are not verified (storage.verify=false)", s.endpoint)
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    session = make_session(s)
    creds = session.get_credentials()
    if creds is not None:  # scrub them from every log line and error message
        from llmops.core import secrets

        frozen = creds.get_frozen_credentials()
        for v in (frozen.access_key, frozen.secret_key, frozen.token):
            if v:
                secrets.remember(v)
    return session.client("s3", endpoint_url=s.endpoint_url or None, verify=verify, config=cfg)
