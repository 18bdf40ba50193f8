"""pyarrow's S3 filesystem for the same endpoint and credentials as `S3Store`: Ray Train writes its
checkpoints through it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from llmops.core.errors import LLMOpsError
from llmops.storage.s3_errors import S3Error
from llmops.storage.s3_settings import S3Settings, make_session


def pyarrow_filesystem(s: S3Settings):
    """A pyarrow S3FileSystem for the same endpoint and credentials (Ray Train checkpoints)."""
    import pyarrow.fs as pafs

    if not s.verify:
        raise LLMOpsError("storage.verify=false: pyarrow's S3 filesystem (Ray Train checkpoints) cannot "
                          "skip TLS verification; set storage.ca_bundle to the endpoint's CA instead")
    session = make_session(s)
    creds = session.get_credentials()
    if creds is None:
        raise S3Error(f"Ray Train checkpoints in s3://{s.bucket}/: no S3 credentials; set "
                      "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or storage.profile)", code="NoCredentials")
    creds = creds.get_frozen_credentials()
    kw: dict = {"access_key": creds.access_key, "secret_key": creds.secret_key,
                "region": s.region or session.region_name or "us-east-1",
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


def check_checkpoint_path(s: S3Settings, path: str) -> None:
    """Preflight: pyarrow (Ray Train's checkpoint filesystem) can create and list `path`
    (BUCKET/KEY...) and write there; the probe it writes is removed."""
    import uuid

    import pyarrow.fs as pafs

    fs = pyarrow_filesystem(s)
    probe = f"{path.rstrip('/')}/.llmops-preflight-{uuid.uuid4().hex[:8]}"
    try:
        fs.create_dir(path, recursive=True)
        fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        with fs.open_output_stream(probe) as f:
            f.write(b"llmops preflight\n")
        fs.delete_file(probe)
    except OSError as e:
        raise S3Error(f"Ray Train checkpoints in s3://{path}/ (storage.bucket, storage.prefix): pyarrow's "
                      f"S3 filesystem cannot write there at {s.endpoint} (storage.endpoint_url): {e}",
                      code="Checkpoints") from None
