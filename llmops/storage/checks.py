"""Checks of the `storage` config section, and no literal S3 credential anywhere in the config."""

from __future__ import annotations

import re
from pathlib import Path
from llmops.config.validate import Checker
from llmops.core.names import dns1123_problem
from llmops.core.tree import raw_items

S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# environment variable names whose value is an S3 credential: allowed only as ${oc.env:...}
CREDENTIAL_ENV_NAMES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_SECURITY_TOKEN"}




def check(c: Checker) -> None:
    """storage.* checks, and no literal S3 credential anywhere in the config."""
    from llmops.core.secrets import is_secret_key, remember, scrub

    for key, raw in raw_items(c.cfg):
        last = key.split(".")[-1]
        if not isinstance(raw, str) or not raw or "${" in raw:
            continue
        if last.upper() in CREDENTIAL_ENV_NAMES or (key.startswith("storage.") and is_secret_key(last)):
            remember(raw)  # never echo it, not even in the override that set it
            origin = scrub(c.source.origin(key)) if c.source is not None else "config"
            c.problems.append(
                f"{key} (from {origin}): holds a "
                f"literal credential; credentials come from the environment: use "
                f"'${{oc.env:{last.upper()}}}' or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                "(or set storage.profile)")
    kind = str(c.value("storage.kind"))
    if kind == "local":
        c.check("storage.root", lambda v: bool(str(v).strip()), "a folder for the models")
    if kind == "s3":
        bucket = c.get("storage.bucket")
        if not bucket:
            c.add("storage.bucket", "a bucket name for storage=s3")
        elif not S3_BUCKET.match(str(bucket)) or ".." in str(bucket):
            c.add("storage.bucket", "an S3 bucket name: 3-63 characters, lower-case letters, digits, "
                  "'.' and '-', starting and ending with a letter or digit")
        prefix = str(c.get("storage.prefix") or "")
        if "//" in prefix or any(part in (".", "..") for part in prefix.strip("/").split("/") if prefix):
            c.add("storage.prefix", "a key prefix like 'models' or 'team/models' (no '//', '.' or '..')")
        ep = c.get("storage.endpoint_url")
        if ep is not None:
            from urllib.parse import urlparse

            u = urlparse(str(ep))
            if u.scheme not in ("http", "https") or not u.hostname:
                c.add("storage.endpoint_url", "an http:// or https:// URL of the S3 endpoint, e.g. "
                      "http://minio.minio.svc:9000")
            elif u.username or u.password:
                c.add("storage.endpoint_url", "a URL without user:password (credentials come from the "
                      "environment)")
        c.check("storage.addressing_style", lambda v: v in ("auto", "path", "virtual"),
                "'auto', 'path' (MinIO) or 'virtual'")
        c.check("storage.multipart_chunk_mb", lambda v: isinstance(v, int) and 5 <= v <= 5120,
                "a part size in MB between 5 (the S3 minimum) and 5120")
        c.check("storage.multipart_threshold_mb", lambda v: isinstance(v, int) and v >= 5,
                "a size in MB >= 5")
        c.check("storage.max_concurrency", lambda v: isinstance(v, int) and 1 <= v <= 256,
                "a number of parallel requests between 1 and 256")
        check_transport(c)
    if kind == "oci":
        check_oci(c)
    if kind == "pvc":
        name = c.get("storage.pvc_name")
        p = dns1123_problem(name, 253) if name else "the PersistentVolumeClaim's name for storage=pvc"
        if p:
            c.add("storage.pvc_name", p)
        mp = c.get("storage.mount_path")
        if not mp or not str(mp).startswith("/"):
            c.add("storage.mount_path", "the absolute path where the claim is mounted, e.g. /mnt/models")


def check_transport(c: Checker) -> None:
    """Retries, timeouts and TLS of the endpoint (S3) or registry (OCI)."""
    c.check("storage.max_attempts", lambda v: isinstance(v, int) and 1 <= v <= 100,
            "a number of tries between 1 and 100")
    c.check("storage.retry_base_s", lambda v: v >= 0, "a delay in seconds >= 0")
    c.check("storage.connect_timeout_s", lambda v: v > 0, "a timeout in seconds > 0")
    c.check("storage.read_timeout_s", lambda v: v > 0, "a timeout in seconds > 0")
    ca = c.get("storage.ca_bundle")
    if ca is not None:
        if not Path(str(ca)).expanduser().is_file():
            c.add("storage.ca_bundle", "an existing PEM file with the endpoint's CA certificate")
        if c.get("storage.verify") is False:
            c.add("storage.ca_bundle", "unset when storage.verify=false (nothing is verified)")


def check_oci(c: Checker) -> None:
    """storage=oci: repository REGISTRY/REPO (no tag, no credentials), base_image a reference."""
    from llmops.core.secrets import remember, scrub
    from llmops.storage.oci_settings import OCIError, parse_reference, parse_repository

    expected = "REGISTRY/REPO, e.g. 127.0.0.1:5000/models/quickstart or quay.io/team/models"
    repo = c.get("storage.repository")
    if not repo:
        c.add("storage.repository", f"{expected} for storage=oci")
    elif "@" in str(repo).removeprefix("oci://").split("/", 1)[0]:
        userinfo = str(repo).removeprefix("oci://").split("/", 1)[0].rsplit("@", 1)[0]
        for secret in (userinfo, userinfo.partition(":")[2]):
            if secret:
                remember(secret)  # never echoed: the problem does not show the value
        origin = scrub(c.source.origin("storage.repository")) if c.source is not None else "config"
        c.problems.append(f"storage.repository (from {origin}): holds credentials (USER:PASSWORD@); "
                          f"expected {expected}; credentials come from LLMOPS_OCI_USERNAME/"
                          "LLMOPS_OCI_PASSWORD or REGISTRY_AUTH_FILE in the environment")
    else:
        try:
            parse_repository(str(repo))
        except OCIError:
            c.add("storage.repository", f"{expected}: a registry host[:port], then a repository path of "
                  "lower-case letters, digits, '.', '_', '-'; no tag or digest (the run id is the tag)")
    base = c.get("storage.base_image")
    if base:
        try:
            parse_reference(str(base))
        except OCIError:
            c.add("storage.base_image", "REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:<64 hex> of an image "
                  "with sh, ln and sleep")
    if c.get("storage.plain_http") and c.get("storage.ca_bundle") is not None:
        c.add("storage.ca_bundle", "unset when storage.plain_http=true (no TLS)")
    check_transport(c)
