"""OCI names and settings: media types, the reference grammar (REGISTRY/REPO, tags, digests),
``OCISettings`` (the ``storage`` keys ``storage=oci`` reads) and ``OCIError``.

Nothing here speaks to a registry (``oci_registry``) or writes an image (``oci_image``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from llmops.core import secrets
from llmops.core.errors import LLMOpsError
from llmops.storage.settings import section_values

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
# a Docker base image's layers are the same bytes as OCI layers: only the descriptor's name changes
TO_OCI_LAYER = {DOCKER_LAYER_GZIP: MEDIA_LAYER_GZIP, DOCKER_LAYER_TAR: MEDIA_LAYER_TAR,
                MEDIA_LAYER_GZIP: MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR: MEDIA_LAYER_TAR}
MANIFEST_ACCEPT = ", ".join([MEDIA_MANIFEST, MEDIA_INDEX, DOCKER_MANIFEST, DOCKER_LIST])

DEFAULT_BUSYBOX = "/bin/busybox"
CHUNK = 1024 * 1024

# distribution's grammar (reference/regexp.go), without the optional host part
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$")


class OCIError(LLMOpsError):
    """A registry operation failed for good; the message names the config key or variable."""

    def __init__(self, message: str, *, status: int = 0, code: str = ""):
        super().__init__(secrets.scrub(message))
        self.status = status
        self.code = code


# ------------------------------------------------------------------------------------- settings
@dataclass
class OCISettings:
    """The ``storage`` keys ``storage=oci`` reads (see docs/storage.md)."""

    repository: str = ""  # REGISTRY/REPO, e.g. 127.0.0.1:5000/models/quickstart
    plain_http: bool = False  # http:// instead of https:// (a registry on loopback)
    base_image: Optional[str] = None  # REGISTRY/REPO:TAG or @sha256:...; None = busybox layer
    verify: bool = True  # check the registry's TLS certificate
    ca_bundle: Optional[str] = None  # PEM file of the registry's CA
    busybox: str = DEFAULT_BUSYBOX  # a static busybox for the shell layer
    max_attempts: int = 3  # per request, on connection errors, 429 and 5xx
    retry_base_s: float = 0.5
    connect_timeout_s: float = 10.0  # the first request (GET /v2/)
    read_timeout_s: float = 120.0  # every other request (socket timeout)

    @classmethod
    def from_config(cls, storage: Any) -> "OCISettings":
        return cls(**section_values(cls, storage))

    def where(self) -> str:
        return f"storage.repository={self.repository!r}"


def parse_repository(repository: str) -> tuple[str, str]:
    """'127.0.0.1:5000/models/quickstart' (an oci:// prefix is allowed) -> (registry, repo)."""
    s = str(repository or "").strip()
    if s.startswith("oci://"):
        s = s[len("oci://"):]
    expected = "expected REGISTRY/REPO, e.g. 127.0.0.1:5000/models/quickstart (no tag: the run id is the tag)"
    host, _, repo = s.partition("/")
    if not host or not repo or not HOST_RE.match(host):
        raise OCIError(f"storage.repository={repository!r}: {expected}")
    if "@" in repo or ":" in repo:
        raise OCIError(f"storage.repository={repository!r}: no tag or digest here; {expected}")
    if not REPO_RE.match(repo) or len(repo) > 255:
        raise OCIError(f"storage.repository={repository!r}: {repo!r} is not a repository name "
                       "(lower-case letters, digits, '.', '_', '-', separated by '/'); " + expected)
    return host, repo


def parse_reference(ref: str, key: str = "storage.base_image") -> tuple[str, str, str]:
    """'REGISTRY/REPO:TAG' or 'REGISTRY/REPO@sha256:...' (oci:// allowed) -> (registry, repo, tag|digest)."""
    s = str(ref or "").strip()
    if s.startswith("oci://"):
        s = s[len("oci://"):]
    if "@" in s:
        name, _, reference = s.partition("@")
        if not DIGEST_RE.match(reference):
            raise OCIError(f"{key}={ref!r}: {reference!r} is not a sha256 digest (sha256:<64 hex>)")
    else:
        head, _, last = s.rpartition("/")
        name, reference = s, "latest"
        if ":" in last:
            last, _, reference = last.partition(":")
            name = f"{head}/{last}"
        if not TAG_RE.match(reference):
            raise OCIError(f"{key}={ref!r}: {reference!r} is not a tag")
    try:
        registry, repo = parse_repository(name)
    except OCIError:
        raise OCIError(f"{key}={ref!r}: expected REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...") from None
    return registry, repo, reference


def check_tag(tag: str) -> str:
    if not TAG_RE.match(str(tag)):
        raise OCIError(f"{tag!r} cannot be an image tag (run_id): expected 1-128 characters "
                       "[A-Za-z0-9_.-], not starting with '.' or '-'")
    return str(tag)


def is_loopback(host: str) -> bool:
    h = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.index("]")]
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False

def image_uri(settings: OCISettings, tag: str) -> str:
    registry, repo = parse_repository(settings.repository)
    return f"oci://{registry}/{repo}:{check_tag(tag)}"



def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(CHUNK), b""):
            h.update(b)
    return "sha256:" + h.hexdigest()
