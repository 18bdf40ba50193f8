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
    if kind == "pvc":
        name = c.get("storage.pvc_name")
        p = dns1123_problem(name, 253) if name else "the PersistentVolumeClaim's name for storage=pvc"
        if p:
            c.add("storage.pvc_name", p)
        mp = c.get("storage.mount_path")
        if not mp or not str(mp).startswith("/"):
            c.add("storage.mount_path", "the absolute path where the claim is mounted, e.g. /mnt/models")
