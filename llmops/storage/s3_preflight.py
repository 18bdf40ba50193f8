"""storage=s3 preflight, before any cluster work: the endpoint answers, the credentials are
accepted, the bucket is there (or created with ``storage.create_bucket``), a probe object can be
written and removed under the run's prefix, and pyarrow's S3 filesystem (Ray Train's checkpoint
storage) can create, list and write the checkpoint prefix. Each failure names the key to fix."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from llmops.storage.s3_errors import CREDENTIAL_CODES, S3Error
from llmops.storage.s3_settings import S3Settings, parse_uri

log = logging.getLogger("llmops.storage.s3")

ATTEMPTS = 2  # a preflight fails in seconds: one retry, not storage.max_attempts


def _hint(e: S3Error, s: S3Settings) -> str:
    if e.code == "NoSuchBucket":
        return f"storage.bucket={s.bucket!r}"
    if e.code in CREDENTIAL_CODES or e.code in ("NoCredentials", "AccessDenied"):
        return s.credential_source()
    if e.code in ("EndpointConnectionError", "SSLError"):
        return f"storage.endpoint_url={s.endpoint_url!r}"
    return f"storage.endpoint_url={s.endpoint_url!r}, storage.bucket={s.bucket!r}"


def preflight(storage: Any, run_prefix: str, checkpoint_path: str) -> None:
    """Raises S3Error("storage preflight (...): ...") on the first check that fails."""
    from llmops.storage.s3 import S3Store
    from llmops.storage.s3_arrow import check_checkpoint_path

    t0 = time.monotonic()
    s = S3Settings.from_config(storage)
    st = S3Store(s)
    bucket, prefix = parse_uri(run_prefix)
    probe = f"{prefix}.llmops-preflight-{uuid.uuid4().hex[:8]}"
    try:
        st.ensure_bucket(bucket, attempts=ATTEMPTS)  # reachable, credentials, bucket (or created)
        st.call("write a probe to", bucket, probe, lambda: st.client.put_object(
            Bucket=bucket, Key=probe, Body=b"llmops preflight\n"), attempts=ATTEMPTS)
        st.call("remove the probe", bucket, probe, lambda: st.client.delete_object(
            Bucket=bucket, Key=probe), attempts=ATTEMPTS)
        check_checkpoint_path(s, checkpoint_path)
    except S3Error as e:
        raise S3Error(f"storage preflight ({_hint(e, s)}): {e}", code=e.code) from None
    log.info("storage preflight: s3://%s at %s reachable and writable (%.2f s)", bucket, s.endpoint,
             time.monotonic() - t0)
