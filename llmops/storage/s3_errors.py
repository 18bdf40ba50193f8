"""S3 errors: which are transient, what a failed request means for the user (naming bucket, key
and the config key to fix), and `call`: a request retried with exponential backoff and jitter on
transient errors (connection errors, timeouts, 5xx, throttling) up to ``max_attempts`` times."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Optional

from llmops.core.errors import LLMOpsError
from llmops.storage.s3_settings import S3Settings, TransferStats

log = logging.getLogger("llmops.storage.s3")

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


def error_code(exc: BaseException) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a botocore ClientError; ('', 0) for anything else."""
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
        code, status = error_code(exc)
        return status >= 500 or status == 429 or code in RETRYABLE_CODES
    return False


def explain(s: S3Settings, exc: BaseException, action: str, bucket: str, key: str = "") -> S3Error:
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
        src = f"profile {s.profile!r}" if s.profile else "the environment"
        return S3Error(f"{action} {where}: no S3 credentials in {src}; set AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY (or storage.profile)", code="NoCredentials")
    if isinstance(exc, SSLError):
        return S3Error(f"{action} {where}: TLS verification failed for {s.endpoint} ({exc}); "
                       "set storage.ca_bundle to the endpoint's CA certificate", code="SSLError")
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        msg = str(exc.response.get("Error", {}).get("Message", "") or "")
        if code == "NoSuchBucket" or (status == 404 and not key and action.startswith("check")):
            return S3Error(f"{action} {where}: bucket '{bucket}' does not exist at {s.endpoint}; "
                           "create it or set storage.create_bucket=true", code="NoSuchBucket")
        if code in CREDENTIAL_CODES:
            return S3Error(f"{action} {where}: {s.endpoint} rejected the credentials ({code}: "
                           f"{msg}); check {s.credential_source()}", code=code)
        if code in ("AccessDenied", "AllAccessDisabled", "Forbidden") or status == 403:
            return S3Error(f"{action} {where}: access denied ({code or status}: {msg or 'Forbidden'}); "
                           f"the credentials lack permission for bucket '{bucket}'", code="AccessDenied")
        return S3Error(f"{action} {where}: {code or status}: {msg or exc}", code=code or str(status),
                       retryable=is_transient(exc))
    if isinstance(exc, EndpointConnectionError) or is_transient(exc):
        return S3Error(f"{action} {where}: cannot reach the S3 endpoint {s.endpoint} "
                       f"(storage.endpoint_url): {exc}", code="EndpointConnectionError", retryable=True)
    return S3Error(f"{action} {where}: {type(exc).__name__}: {exc}", code=type(exc).__name__)


def call(s: S3Settings, action: str, bucket: str, key: str, fn: Callable[[], Any],
         stats: Optional[TransferStats] = None, cancel: Optional[threading.Event] = None,
         attempts: Optional[int] = None) -> Any:
    """fn() with retries and exponential backoff on transient errors; S3Error otherwise."""
    attempts = max(1, int(s.max_attempts if attempts is None else attempts))
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if isinstance(e, LLMOpsError):
                raise
            if not is_transient(e) or attempt == attempts or (cancel is not None and cancel.is_set()):
                err = explain(s, e, action, bucket, key)
                if is_transient(e) and attempt > 1:
                    err.args = (f"{err.args[0]} (gave up after {attempt} attempts)",)
                raise err from None
            delay = min(s.retry_max_s, s.retry_base_s * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.0)
            code, status = error_code(e)
            log.warning("%s s3://%s/%s: %s; retry %d/%d in %.1f s", action, bucket, key,
                        code or type(e).__name__, attempt, attempts - 1, delay)
            if stats is not None:
                stats.add(retries=1)
            if cancel is not None:
                if cancel.wait(delay):
                    raise explain(s, e, action, bucket, key) from None
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")
