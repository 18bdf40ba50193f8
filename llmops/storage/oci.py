"""OCI model images ("modelcars"): an exported model folder as an image in a registry, no Docker.

KServe serves ``storageUri: oci://REGISTRY/REPO@sha256:...`` by running the image as a sidecar
with ``sh -c 'ln -sf /proc/$$/root/models /mnt/models && sleep infinity'``: the image needs a
shell and the model under ``/models``. The image built here has two layers:

  1. a shell: ``bin/busybox`` (Debian's ``busybox-static``) and ``bin/sh``, ``bin/ln``,
     ``bin/sleep`` as symlinks to it, plus an empty ``mnt/`` - or, with ``base_image``, the
     layers of that image (mounted from its repository when it is on the same registry,
     otherwise copied blob by blob);
  2. the model folder under ``models/``.

Layers are deterministic (entries sorted by path, mtime 0, uid/gid 0, no user names, mode 0755
for folders and executables and 0644 for other files, gzip with mtime 0 and no file name), and
the config and manifest are canonical JSON (sorted keys, no timestamps, no tag): the same folder
gives the same manifest digest, whatever the run id or the time.

Push speaks the OCI distribution API over HTTP(S) with the standard library (``urllib``):
``HEAD /v2/<repo>/blobs/<digest>`` skips blobs the registry has; a missing one is sent with
``POST /v2/<repo>/blobs/uploads/`` then ``PUT <location>?digest=...`` in one request; the manifest
goes last with ``PUT /v2/<repo>/manifests/<tag>``. Auth: Basic, or the Bearer token flow
(``WWW-Authenticate: Bearer realm=...,service=...,scope=...``), with credentials from
``LLMOPS_OCI_USERNAME``/``LLMOPS_OCI_PASSWORD`` or a docker-style ``auth.json`` named by
``REGISTRY_AUTH_FILE``. Passwords and tokens go only into request headers: never into a message,
a log line or a file.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import platform
import re
import shutil
import ssl
import struct
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Mapping, Optional, Union

from llmops.core import secrets
from llmops.core.errors import LLMOpsError
from llmops.storage.settings import section_values
from llmops.storage.manifest import model_files

log = logging.getLogger("llmops.storage.oci")

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

ENV_USERNAME = "LLMOPS_OCI_USERNAME"
ENV_PASSWORD = "LLMOPS_OCI_PASSWORD"
ENV_AUTH_FILE = "REGISTRY_AUTH_FILE"
CRED_HINT = f"{ENV_USERNAME}/{ENV_PASSWORD} or {ENV_AUTH_FILE}"

DEFAULT_BUSYBOX = "/bin/busybox"
# image config label: the model files (relative path -> size, sha256), what `verify` returns
LABEL_FILES = "io.llmops.files"
SHELL_APPLETS = ("ln", "sh", "sleep")  # what KServe's modelcar sidecar runs
MODELS_DIR = "models"  # the model lies under /models in the image
DEFAULT_CMD = ["sh", "-c", "sleep infinity"]
GZIP_LEVEL = 6  # part of the digest: changing it changes every model layer's digest
CHUNK = 1024 * 1024

# distribution's grammar (reference/regexp.go), without the optional host part
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$")
ELF_MACHINES = {62: "amd64", 183: "arm64", 40: "arm", 3: "386", 21: "ppc64le", 22: "s390x", 243: "riscv64"}
MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


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


# ---------------------------------------------------------------------------------- credentials
@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""  # where they came from, for messages (never the values)

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def _auth_key(key: str) -> str:
    k = key.strip()
    if "://" in k:
        k = k.split("://", 1)[1]
    return k.rstrip("/").removesuffix("/v1").removesuffix("/v2")


def credentials_for(registry: str, repo: str = "", environ: Optional[Mapping[str, str]] = None
                    ) -> Optional[Credentials]:
    """Credentials for `registry`: LLMOPS_OCI_USERNAME/LLMOPS_OCI_PASSWORD, else the entry for the
    registry (or its longest matching REGISTRY/NAMESPACE key) in the auth.json REGISTRY_AUTH_FILE
    names; None when neither is set."""
    env = os.environ if environ is None else environ
    user, pw = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    if user or pw:
        if not (user and pw):
            missing = ENV_PASSWORD if user else ENV_USERNAME
            raise OCIError(f"{missing} is not set: set both {ENV_USERNAME} and {ENV_PASSWORD} "
                           f"(or neither, and use {ENV_AUTH_FILE})")
        secrets.remember(pw)
        return Credentials(user, pw, f"{ENV_USERNAME}/{ENV_PASSWORD}")
    path = env.get(ENV_AUTH_FILE)
    if not path:
        return None
    where = f"{ENV_AUTH_FILE}={path}"
    try:
        data = json.loads(Path(path).read_text())
        auths = data.get("auths") or {}
        if not isinstance(auths, dict):
            raise ValueError("'auths' is not an object")
    except FileNotFoundError:
        raise OCIError(f"{where}: no such file; expected a docker-style auth.json") from None
    except (OSError, ValueError, AttributeError) as e:
        raise OCIError(f"{where}: cannot read it as a docker-style auth.json "
                       f'({{"auths": {{"host:port": {{"auth": "<base64 user:password>"}}}}}}): '
                       f"{type(e).__name__}") from None
    full = f"{registry}/{repo}" if repo else registry
    best, best_key = None, ""
    for key, entry in auths.items():
        k = _auth_key(str(key))
        if (k == registry or full == k or full.startswith(k + "/")) and len(k) > len(best_key):
            best, best_key = entry, k
    if best is None:
        return None
    src = f"{where} (entry {best_key!r})"
    if not isinstance(best, dict):
        raise OCIError(f"{src}: expected an object with 'auth' or 'username'/'password'")
    if best.get("auth"):
        try:
            user, sep, pw = base64.b64decode(str(best["auth"])).decode().partition(":")
        except ValueError:
            raise OCIError(f"{src}: 'auth' is not base64 of 'user:password'") from None
        if not sep:
            raise OCIError(f"{src}: 'auth' is not base64 of 'user:password'")
    else:
        user, pw = best.get("username"), best.get("password")
    if not user or not pw:
        what = "identity tokens are not supported; " if best.get("identitytoken") else ""
        raise OCIError(f"{src}: {what}expected 'auth' (base64 user:password) or 'username'/'password'")
    secrets.remember(pw)
    return Credentials(str(user), str(pw), src)


# --------------------------------------------------------------------------------------- client
def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = (header or "").strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in re.finditer(r'([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))', rest)}
    return scheme.lower(), params


def _error_detail(body: bytes) -> tuple[str, str]:
    """(first error code, 'CODE: message; ...') from a registry's JSON error body."""
    try:
        errs = json.loads(body.decode("utf-8", "replace")).get("errors") or []
        codes = [str(e.get("code", "")) for e in errs]
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs)
        return (codes[0] if codes else ""), text[:300]
    except Exception:
        txt = body[:200].decode("utf-8", "replace").strip()
        return "", txt


@dataclass
class Response:
    status: int
    headers: Any
    body: bytes = b""
    url: str = ""

    def header(self, name: str) -> str:
        return str(self.headers.get(name) or "") if self.headers is not None else ""


class RegistryClient:
    """One registry host: requests with retries, the auth handshake, blobs and manifests."""

    def __init__(self, registry: str, settings: OCISettings, *, environ: Optional[Mapping[str, str]] = None,
                 key: str = "storage.repository"):
        """`key` names the setting that chose this registry in messages, e.g. "storage.repository='h/r'"."""
        self.registry = registry
        self.settings = settings
        self.key = key  # the config key that named this registry, for messages
        self.base = f"{'http' if settings.plain_http else 'https'}://{registry}"
        self.environ = os.environ if environ is None else environ
        self._creds: Optional[Credentials] = None
        self._creds_loaded = False
        self._auth: Optional[str] = None  # Authorization header value (secret)
        self._auth_kind = ""  # "", "basic", "bearer"
        self._challenge: tuple[str, dict] = ("", {})
        self._scopes: set[str] = set()
        handlers: list[Any] = []
        if not settings.plain_http:
            ctx = ssl.create_default_context(cafile=settings.ca_bundle or None)
            if not settings.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=ctx))
        if is_loopback(registry):
            handlers.append(urllib.request.ProxyHandler({}))
        elif settings.plain_http:
            log.warning("OCI registry %s: plain HTTP to a host that is not loopback (storage.plain_http=true); "
                        "credentials will not be sent", registry)
        self.opener = urllib.request.build_opener(*handlers)

    # -- credentials
    @property
    def credentials(self) -> Optional[Credentials]:
        if not self._creds_loaded:
            self._creds = credentials_for(self.registry, environ=self.environ)
            self._creds_loaded = True
        return self._creds

    def _where(self) -> str:
        return f"{self.key} (registry {self.base})"

    def _unreachable(self, url: str, exc: BaseException, attempts: int) -> OCIError:
        reason = getattr(exc, "reason", exc)
        text = f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
        hint = ""
        if isinstance(reason, ssl.SSLError) or "SSL" in text or "CERTIFICATE" in text:
            if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
                hint = "; the registry seems to speak plain HTTP: set storage.plain_http=true"
            elif "CERTIFICATE_VERIFY_FAILED" in text:
                hint = "; its TLS certificate is not trusted: set storage.ca_bundle to its CA's PEM file"
            else:
                hint = "; check storage.plain_http and storage.ca_bundle"
        elif isinstance(reason, (http.client.BadStatusLine, http.client.RemoteDisconnected,
                                 ConnectionResetError)) and self.settings.plain_http:
            hint = "; does it speak HTTPS? then set storage.plain_http=false"
        return OCIError(f"cannot reach the OCI registry for {self._where()} at {url.split('?')[0]} "
                        f"({text}; gave up after {attempts} attempt{'s' if attempts != 1 else ''}); "
                        f"expected a registry answering GET {self.base}/v2/ "
                        f"(storage.plain_http={str(self.settings.plain_http).lower()}){hint}",
                        code="Unreachable")

    # -- one request
    def _send(self, method: str, url: str, headers: dict, body: Union[None, bytes, Path],
              timeout: float, sink: Optional[BinaryIO], use_auth: bool = True) -> Response:
        data: Any = None
        fh = None
        hdrs = dict(headers)
        if isinstance(body, Path):
            fh = open(body, "rb")
            data = fh
            hdrs["Content-Length"] = str(body.stat().st_size)
        elif body is not None:
            data = body
            hdrs["Content-Length"] = str(len(body))
        elif method in ("PUT", "POST", "PATCH"):
            data = b""
            hdrs["Content-Length"] = "0"
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        if use_auth and self._auth and urllib.parse.urlsplit(url).netloc == self.registry:
            req.add_unredirected_header("Authorization", self._auth)  # not forwarded on redirects
        try:
            with self.opener.open(req, timeout=timeout) as r:  # follows redirects of GET/HEAD
                if sink is not None:
                    shutil.copyfileobj(r, sink, CHUNK)
                    return Response(r.status, r.headers, b"", r.geturl())
                return Response(r.status, r.headers, r.read() if method != "HEAD" else b"", r.geturl())
        except urllib.error.HTTPError as e:  # any status but 2xx: the caller decides
            with e:
                return Response(e.code, e.headers, e.read() if method != "HEAD" else b"", url)
        finally:
            if fh is not None:
                fh.close()

    def request(self, method: str, path_or_url: str, *, headers: Optional[dict] = None,
                body: Union[None, bytes, Path] = None, scope: str = "", sink: Optional[BinaryIO] = None,
                timeout: Optional[float] = None) -> Response:
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        s = self.settings
        attempts = max(1, int(s.max_attempts))
        timeout = s.read_timeout_s if timeout is None else timeout
        authed = False
        attempt = 0
        while True:
            attempt += 1
            if sink is not None:
                sink.seek(0)
                sink.truncate()
            try:
                resp = self._send(method, url, headers or {}, body, timeout, sink)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                if attempt >= attempts or isinstance(reason, ssl.SSLError):  # TLS errors do not pass
                    raise self._unreachable(url, e, attempt) from None
                log.warning("OCI registry %s: %s %s failed (%s); retrying", self.registry, method,
                            url.split("?")[0], type(getattr(e, "reason", e)).__name__)
                time.sleep(min(s.retry_base_s * 2 ** (attempt - 1), 10.0))
                continue
            if resp.status == 401 and not authed:
                authed = True
                if self.authenticate(resp.header("WWW-Authenticate"), scope):
                    attempt -= 1  # the handshake is not a failed attempt
                    continue
                return resp
            if (resp.status == 429 or resp.status >= 500) and attempt < attempts:
                log.warning("OCI registry %s: %s %s answered HTTP %d; retrying", self.registry, method,
                            url.split("?")[0], resp.status)
                time.sleep(min(s.retry_base_s * 2 ** (attempt - 1), 10.0))
                continue
            return resp

    # -- auth
    def _may_send_secret(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" and not is_loopback(parts.netloc):
            raise OCIError(f"{self._where()}: refusing to send credentials over plain HTTP to "
                           f"{parts.netloc}; use HTTPS (storage.plain_http=false) or a registry on loopback")

    def authenticate(self, challenge: str, scope: str = "") -> bool:
        """Answer a 401: Basic with the credentials, or a Bearer token for the scopes asked.
        False when there is nothing to try (no credentials for Basic)."""
        kind, params = _parse_challenge(challenge)
        creds = self.credentials
        if kind == "basic":
            if creds is None:
                return False  # the caller turns the 401 into "asks for credentials"
            self._may_send_secret(self.base)
            self._auth, self._auth_kind = creds.basic(), "basic"
            return True
        if kind != "bearer" or not params.get("realm"):
            raise OCIError(f"{self._where()} asks for an authentication scheme llmops does not speak "
                           f"({challenge.split(' ')[0] or 'none'!r}); expected Basic or Bearer", status=401)
        for sc in (scope, params.get("scope", "")):
            if sc:
                self._scopes.update(sc.split(" "))
        self._challenge = (kind, params)
        self._fetch_token(params)
        return True

    def _fetch_token(self, params: dict) -> None:
        realm = params["realm"]
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", sc) for sc in sorted(self._scopes)]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        hdrs = {"Accept": "application/json"}
        creds = self.credentials
        if creds is not None:
            self._may_send_secret(realm)
        req = urllib.request.Request(url, headers=hdrs)
        if creds is not None:
            req.add_unredirected_header("Authorization", creds.basic())
        realm_host = urllib.parse.urlsplit(realm).netloc
        try:
            with self.opener.open(req, timeout=self.settings.read_timeout_s) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            with e:
                status, body = e.code, b""
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise OCIError(f"{self._where()}: cannot reach its token service {realm_host} "
                           f"({getattr(e, 'reason', e)})", code="Unreachable") from None
        if status in (401, 403):
            raise self._auth_error(status, f"the token service {realm_host} refused them")
        if status != 200:
            raise OCIError(f"{self._where()}: its token service {realm_host} answered HTTP {status}; "
                           "expected 200 with a token", status=status)
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
        except Exception:
            token = None
        if not token:
            raise OCIError(f"{self._where()}: its token service {realm_host} sent no token")
        secrets.remember(token)
        self._auth, self._auth_kind = f"Bearer {token}", "bearer"

    def _auth_error(self, status: int, detail: str = "", op: str = "") -> OCIError:
        creds = self.credentials
        if status == 403 or creds is not None:
            if status == 403:
                what = (f"denied {op or 'access'} ({detail or 'HTTP 403'}): the credentials from "
                        f"{creds.source if creds else 'nowhere (anonymous)'} lack the permission")
            else:
                what = (f"refused the credentials from {creds.source if creds else CRED_HINT} "
                        f"({detail or 'HTTP 401'})")
            return OCIError(f"the OCI registry for {self._where()} {what}; expected a user allowed to "
                            f"push and pull there, given in {ENV_USERNAME}/{ENV_PASSWORD} or "
                            f"{ENV_AUTH_FILE}", status=status, code="Denied" if status == 403 else "Unauthorized")
        return OCIError(f"the OCI registry for {self._where()} asks for credentials; set {ENV_USERNAME} "
                        f"and {ENV_PASSWORD}, or {ENV_AUTH_FILE} (a docker-style auth.json)",
                        status=status, code="Unauthorized")

    def fail(self, resp: Response, what: str, *, repo: str = "", key: str = "") -> OCIError:
        """The error for an unexpected answer to `what` (e.g. 'PUT manifest 127.0.0.1:5000/m:tag')."""
        code, detail = _error_detail(resp.body)
        key = key or self.key
        if resp.status in (401, 403):
            return self._auth_error(resp.status, detail, what)
        if resp.status == 404 and code in ("MANIFEST_UNKNOWN", "BLOB_UNKNOWN"):
            return OCIError(f"{what}: not in the registry ({detail}); expected an image pushed to "
                            f"{key} before", status=404, code=code)
        if resp.status == 404 or code in ("NAME_UNKNOWN",):
            return OCIError(f"{what}: the registry {self.registry} does not know repository {repo!r} "
                            f"({detail or 'HTTP 404'}); expected an existing repository (or a registry "
                            f"that creates one on push) at {key}", status=resp.status, code=code)
        if resp.status == 400 and b"HTTPS" in resp.body and self.settings.plain_http:
            return OCIError(f"{what}: the registry speaks HTTPS; set storage.plain_http=false", status=400)
        return OCIError(f"{what}: unexpected answer HTTP {resp.status} from the registry at {self._where()}"
                        f"{': ' + detail if detail else ''}", status=resp.status, code=code)

    # -- endpoints
    def ping(self, repo: str, actions: str = "pull,push") -> None:
        """GET /v2/: reachable, speaks the distribution API, and accepts our credentials."""
        scope = f"repository:{repo}:{actions}"
        resp = self.request("GET", "/v2/", scope=scope, timeout=self.settings.connect_timeout_s)
        if resp.status == 200:
            return
        if resp.status == 404:
            raise OCIError(f"{self.base}/v2/ answered HTTP 404: not an OCI registry; expected a "
                           f"distribution API at {self._where()}", status=404)
        raise self.fail(resp, f"GET {self.base}/v2/", repo=repo)

    def blob_exists(self, repo: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull,push")
        if resp.status == 200:
            return True
        if resp.status == 404:
            return False
        raise self.fail(resp, f"HEAD blob {self.registry}/{repo}@{digest}", repo=repo)

    def _start_upload(self, repo: str, query: str = "") -> Response:
        return self.request("POST", f"/v2/{repo}/blobs/uploads/{query}", scope=f"repository:{repo}:pull,push")

    def _location(self, resp: Response, repo: str) -> str:
        loc = resp.header("Location")
        if not loc:
            raise self.fail(resp, f"POST blob upload {self.registry}/{repo} (no Location header)", repo=repo)
        return urllib.parse.urljoin(resp.url or self.base + "/", loc)

    def upload_blob(self, repo: str, digest: str, body: Union[bytes, Path]) -> None:
        """POST an upload, then PUT the whole blob with ?digest= (the registry checks it)."""
        resp = self._start_upload(repo)
        if resp.status != 202:
            raise self.fail(resp, f"POST blob upload {self.registry}/{repo}", repo=repo)
        loc = self._location(resp, repo)
        url = loc + ("&" if "?" in loc else "?") + urllib.parse.urlencode({"digest": digest})
        resp = self.request("PUT", url, body=body, headers={"Content-Type": "application/octet-stream"},
                            scope=f"repository:{repo}:pull,push")
        if resp.status not in (201, 204):
            raise self.fail(resp, f"PUT blob {self.registry}/{repo}@{digest}", repo=repo)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount (same registry); False when the registry would rather have an upload."""
        q = "?" + urllib.parse.urlencode({"mount": digest, "from": from_repo})
        self._scopes.add(f"repository:{from_repo}:pull")
        resp = self._start_upload(repo, q)
        if resp.status == 201:
            return True
        if resp.status == 202:  # mount refused: an upload session was opened instead; leave it
            return False
        raise self.fail(resp, f"mount blob {digest} from {from_repo} into {self.registry}/{repo}", repo=repo)

    def get_blob(self, repo: str, digest: str, dest: Path) -> None:
        """Stream a blob to `dest`, checking its digest."""
        with open(dest, "w+b") as f:
            resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", sink=f, scope=f"repository:{repo}:pull")
            if resp.status != 200:
                raise self.fail(resp, f"GET blob {self.registry}/{repo}@{digest}", repo=repo)
        got = sha256_file(dest)
        if got != digest:
            raise OCIError(f"GET blob {self.registry}/{repo}@{digest}: the registry sent a blob with "
                           f"digest {got}", code="DigestMismatch")

    def put_manifest(self, repo: str, reference: str, manifest: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", body=manifest,
                            headers={"Content-Type": media_type}, scope=f"repository:{repo}:pull,push")
        if resp.status not in (200, 201):
            raise self.fail(resp, f"PUT manifest {self.registry}/{repo}:{reference}", repo=repo)
        return resp.header("Docker-Content-Digest")

    def get_manifest(self, repo: str, reference: str, *, key: str = "") -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest; the digest is checked when `reference` is one."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT},
                            scope=f"repository:{repo}:pull")
        if resp.status != 200:
            raise self.fail(resp, f"GET manifest {self.registry}/{repo}:{reference}", repo=repo, key=key)
        digest = "sha256:" + hashlib.sha256(resp.body).hexdigest()
        if DIGEST_RE.match(reference) and digest != reference:
            raise OCIError(f"GET manifest {self.registry}/{repo}@{reference}: got a manifest with digest "
                           f"{digest}", code="DigestMismatch")
        mt = resp.header("Content-Type").split(";")[0].strip()
        try:
            mt = json.loads(resp.body).get("mediaType") or mt
        except Exception:
            raise OCIError(f"GET manifest {self.registry}/{repo}:{reference}: not JSON") from None
        return resp.body, mt, digest

    def manifest_digest(self, repo: str, reference: str) -> Optional[str]:
        """The digest `reference` names, or None when it does not exist."""
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT},
                            scope=f"repository:{repo}:pull")
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self.fail(resp, f"HEAD manifest {self.registry}/{repo}:{reference}", repo=repo)
        d = resp.header("Docker-Content-Digest")
        if DIGEST_RE.match(d):
            return d
        return self.get_manifest(repo, reference)[2]


# ---------------------------------------------------------------------------------------- build
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(CHUNK), b""):
            h.update(b)
    return "sha256:" + h.hexdigest()


class _HashWriter:
    def __init__(self, f: Any):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        self.f.write(b)
        return len(b)

    def flush(self) -> None:
        pass


class _HashReader:
    def __init__(self, f: BinaryIO):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.h.update(b)
        self.n += len(b)
        return b


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str
    path: Optional[Path] = None  # None: a base image's blob that lives only in the registry
    diff_id: Optional[str] = None

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class BaseImage:
    """A base image on some registry: its config (parsed) and layer descriptors."""

    registry: str
    repo: str
    reference: str
    config: dict
    layers: tuple[Blob, ...]


@dataclass
class Image:
    """A built image in an OCI image layout folder (``oci-layout``, ``index.json``, ``blobs/``)."""

    layout: Path
    manifest: bytes
    digest: str
    config: Blob
    layers: list[Blob]
    files: dict = field(default_factory=dict)  # model files: rel path -> {"size", "sha256"}
    base: Optional[BaseImage] = None

    @property
    def blobs(self) -> list[Blob]:
        return [self.config] + self.layers


@dataclass(frozen=True)
class _Entry:
    name: str  # path inside the layer
    kind: str  # "dir" | "file" | "symlink"
    mode: int
    source: Optional[Path] = None
    target: str = ""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _elf_info(path: Path) -> tuple[str, bool]:
    """(architecture, statically linked) of an ELF executable."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            raise OCIError(f"{path}: not an ELF executable; expected a static busybox (storage.busybox)")
        is64, little = head[4] == 2, head[5] == 1
        end = "<" if little else ">"
        machine = struct.unpack(end + "H", head[18:20])[0]
        if is64:
            phoff, = struct.unpack(end + "Q", head[32:40])
            phentsize, phnum = struct.unpack(end + "HH", head[54:58])
        else:
            phoff, = struct.unpack(end + "I", head[28:32])
            phentsize, phnum = struct.unpack(end + "HH", head[42:46])
        static = True
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            ptype, = struct.unpack(end + "I", f.read(4))
            if ptype == 3:  # PT_INTERP: needs a dynamic loader the image does not have
                static = False
    return ELF_MACHINES.get(machine, f"elf-{machine}"), static


def _model_entries(folder: Path) -> list[_Entry]:
    """The model folder as layer entries under models/, sorted. No link is followed out of the
    folder (see `llmops.storage.manifest.model_files`); a link to a file inside becomes a regular
    file with that file's content, as in every other store."""
    files = model_files(folder)
    dirs = {PurePosixPath(rel).parents[i].as_posix() for rel in files
            for i in range(len(PurePosixPath(rel).parents) - 1)}
    entries = [_Entry(MODELS_DIR, "dir", 0o755)]
    for rel in sorted(dirs | set(files)):
        name = f"{MODELS_DIR}/{rel}"
        if rel in dirs:
            entries.append(_Entry(name, "dir", 0o755))
        else:
            p = files[rel]
            entries.append(_Entry(name, "file", 0o755 if os.stat(p).st_mode & 0o111 else 0o644, source=p))
    return entries


def _shell_entries(busybox: Path) -> list[_Entry]:
    out = [_Entry("bin", "dir", 0o755), _Entry("bin/busybox", "file", 0o755, source=busybox)]
    out += [_Entry(f"bin/{a}", "symlink", 0o777, target="busybox") for a in SHELL_APPLETS]
    out.append(_Entry("mnt", "dir", 0o755))
    return out


def _write_layer(entries: list[_Entry], blobs: Path, files: Optional[dict] = None) -> Blob:
    """A gzip'd tar of `entries`, as deterministic as the entries: mtime 0, uid/gid 0, no names."""
    fd, tmp_name = tempfile.mkstemp(prefix=".layer-", dir=blobs)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            outer = _HashWriter(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=outer, mtime=0, compresslevel=GZIP_LEVEL) as gz:
                inner = _HashWriter(gz)
                with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for e in entries:
                        ti = tarfile.TarInfo(e.name)
                        ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname, ti.mode = 0, 0, 0, "", "", e.mode
                        if e.kind == "dir":
                            ti.type = tarfile.DIRTYPE
                            tar.addfile(ti)
                        elif e.kind == "symlink":
                            ti.type, ti.linkname = tarfile.SYMTYPE, e.target
                            tar.addfile(ti)
                        else:
                            assert e.source is not None
                            with open(e.source, "rb") as f:
                                ti.size = os.fstat(f.fileno()).st_size
                                reader = _HashReader(f)
                                tar.addfile(ti, reader)
                            if reader.n != ti.size:
                                raise OCIError(f"{e.source}: changed while it was packed")
                            if files is not None:
                                files[e.name[len(MODELS_DIR) + 1:]] = {"size": ti.size,
                                                                      "sha256": reader.h.hexdigest()}
        digest = "sha256:" + outer.h.hexdigest()
        final = blobs / digest.split(":", 1)[1]
        os.replace(tmp, final)
        return Blob(digest, outer.n, MEDIA_LAYER_GZIP, final, "sha256:" + inner.h.hexdigest())
    finally:
        tmp.unlink(missing_ok=True)


def _write_blob(blobs: Path, data: bytes, media_type: str) -> Blob:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    p = blobs / digest.split(":", 1)[1]
    p.write_bytes(data)
    return Blob(digest, len(data), media_type, p)


def host_architecture() -> str:
    m = platform.machine().lower()
    return MACHINE_ARCH.get(m, m)


def build_image(folder: Union[str, Path], layout: Union[str, Path], *, busybox: Union[str, Path] = DEFAULT_BUSYBOX,
                base: Optional[BaseImage] = None, tag: Optional[str] = None) -> Image:
    """Write the modelcar image of `folder` into the OCI image layout `layout` (created).

    Without `base`: layer 1 is the busybox shell, layer 2 the model under models/. With `base`
    (see `resolve_base`): that image's layers, then the model layer; its config is kept
    (env, entrypoint, cmd) with the model layer's diff_id appended. The manifest digest depends
    only on the folder's content (and the busybox binary or the base image)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OCIError(f"{folder}: not a folder; expected the exported model folder")
    layout = Path(layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    model_entries = _model_entries(folder)  # refuses links outside before any work
    layers: list[Blob] = []
    history: list[dict] = []
    if base is None:
        bb = Path(busybox)
        if not bb.is_file():
            raise OCIError(f"no static busybox at {bb} (storage.busybox): install Debian's busybox-static "
                           "(apt-get install busybox-static) or set storage.base_image to an image with a shell")
        arch, static = _elf_info(bb)
        if not static:
            raise OCIError(f"{bb} (storage.busybox) is dynamically linked; the image has no libc: "
                           "expected a static busybox (Debian's busybox-static)")
        layers.append(_write_layer(_shell_entries(bb), blobs))
        history.append({"created_by": "llmops: busybox static (sh, ln, sleep)"})
        cfg: dict = {"architecture": arch, "os": "linux",
                     "config": {"Cmd": list(DEFAULT_CMD), "Env": ["PATH=/bin"], "WorkingDir": "/"},
                     "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    else:
        cfg = json.loads(json.dumps(base.config))
        cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        cfg.setdefault("history", [])
        layers.extend(base.layers)
    files: dict = {}
    model_layer = _write_layer(model_entries, blobs, files)
    layers.append(model_layer)
    history.append({"created_by": "llmops: model files under /models"})
    inner = cfg.setdefault("config", {})
    inner["Labels"] = {**(inner.get("Labels") or {}), LABEL_FILES: _canonical(files).decode()}
    if base is None:
        cfg["rootfs"]["diff_ids"] = [b.diff_id for b in layers]
    else:
        cfg["rootfs"]["diff_ids"] = list(cfg["rootfs"].get("diff_ids") or []) + [model_layer.diff_id]
    cfg["history"] = list(cfg.get("history") or []) + history
    config_blob = _write_blob(blobs, _canonical(cfg), MEDIA_CONFIG)
    manifest = _canonical({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                           "config": config_blob.descriptor(),
                           "layers": [b.descriptor() for b in layers]})
    mblob = _write_blob(blobs, manifest, MEDIA_MANIFEST)
    desc = mblob.descriptor()
    if tag:
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                                                   "manifests": [desc]}, indent=1))
    return Image(layout, manifest, mblob.digest, config_blob, layers, files, base)


def resolve_base(ref: str, settings: OCISettings, *, environ: Optional[Mapping[str, str]] = None) -> BaseImage:
    """Fetch a base image's manifest and config (not its layers); an index picks linux/<this arch>."""
    registry, repo, reference = parse_reference(ref)
    # the same transport settings (plain_http, verify, ca_bundle) as storage.repository
    client = RegistryClient(registry, settings, environ=environ, key=f"storage.base_image={ref!r}")
    client.ping(repo, "pull")
    body, mt, _ = client.get_manifest(repo, reference, key="storage.base_image")
    doc = json.loads(body)
    if mt in (MEDIA_INDEX, DOCKER_LIST):
        arch = host_architecture()
        pick = [m for m in doc.get("manifests", [])
                if m.get("platform", {}).get("os") == "linux" and m.get("platform", {}).get("architecture") == arch]
        if not pick:
            raise OCIError(f"storage.base_image={ref!r}: no linux/{arch} image in its index")
        body, mt, _ = client.get_manifest(repo, pick[0]["digest"], key="storage.base_image")
        doc = json.loads(body)
    if mt not in (MEDIA_MANIFEST, DOCKER_MANIFEST):
        raise OCIError(f"storage.base_image={ref!r}: manifest type {mt!r}; expected an OCI or Docker v2 image")
    layers = []
    for d in doc.get("layers", []):
        if d.get("mediaType") not in TO_OCI_LAYER:
            raise OCIError(f"storage.base_image={ref!r}: layer type {d.get('mediaType')!r}; "
                           "expected a tar(+gzip) layer")
        layers.append(Blob(d["digest"], int(d["size"]), TO_OCI_LAYER[d["mediaType"]]))
    with tempfile.TemporaryDirectory(prefix="llmops-base-") as td:
        cpath = Path(td) / "config.json"
        client.get_blob(repo, doc["config"]["digest"], cpath)
        config = json.loads(cpath.read_text())
    return BaseImage(registry, repo, reference, config, tuple(layers))


# ----------------------------------------------------------------------------------------- push
@dataclass
class PushResult:
    repository: str  # REGISTRY/REPO
    tag: str
    digest: str  # the manifest's digest
    blobs_uploaded: int = 0
    blobs_skipped: int = 0  # already in the registry
    blobs_mounted: int = 0  # mounted from the base image's repository
    bytes_uploaded: int = 0
    seconds: float = 0.0
    files: dict = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """What KServe's storageUri gets: pinned by digest."""
        return f"oci://{self.repository}@{self.digest}"


def push_image(image: Image, settings: OCISettings, tag: str, *,
               environ: Optional[Mapping[str, str]] = None) -> PushResult:
    """Send `image` to settings.repository under `tag`; blobs the registry has are not sent."""
    t0 = time.monotonic()
    check_tag(tag)
    registry, repo = parse_repository(settings.repository)
    client = RegistryClient(registry, settings, environ=environ, key=settings.where())
    client.ping(repo)
    res = PushResult(f"{registry}/{repo}", tag, image.digest, files=image.files)
    base_client = None
    for blob in image.layers + [image.config]:
        if client.blob_exists(repo, blob.digest):
            res.blobs_skipped += 1
            continue
        if blob.path is None:  # a base image's layer
            assert image.base is not None
            b = image.base
            if b.registry == registry and client.mount_blob(repo, blob.digest, b.repo):
                res.blobs_mounted += 1
                continue
            if base_client is None:
                base_client = client if b.registry == registry else RegistryClient(
                    b.registry, settings, environ=environ, key=f"storage.base_image={settings.base_image!r}")
            with tempfile.TemporaryDirectory(prefix="llmops-base-") as td:
                p = Path(td) / "blob"
                base_client.get_blob(b.repo, blob.digest, p)
                client.upload_blob(repo, blob.digest, p)
        else:
            client.upload_blob(repo, blob.digest, blob.path)
        res.blobs_uploaded += 1
        res.bytes_uploaded += blob.size
        log.info("pushed blob %s (%d bytes) to %s/%s", blob.digest[:19], blob.size, registry, repo)
    got = client.put_manifest(repo, tag, image.manifest, MEDIA_MANIFEST)
    if got and got != image.digest:
        raise OCIError(f"PUT manifest {registry}/{repo}:{tag}: the registry stored digest {got}, "
                       f"expected {image.digest}", code="DigestMismatch")
    res.seconds = time.monotonic() - t0
    log.info("pushed %s (%d blobs sent, %d present, %d mounted, %d bytes) in %.1fs", res.uri,
             res.blobs_uploaded, res.blobs_skipped, res.blobs_mounted, res.bytes_uploaded, res.seconds)
    return res


def push_dir(folder: Union[str, Path], settings: OCISettings, tag: str, *,
             environ: Optional[Mapping[str, str]] = None, workdir: Optional[Union[str, Path]] = None) -> PushResult:
    """Build the modelcar image of `folder` (in a temporary layout, removed after) and push it.

    The registry is asked first (reachable, credentials accepted) so that a bad setting fails
    before the model is packed."""
    check_tag(tag)
    registry, repo = parse_repository(settings.repository)
    RegistryClient(registry, settings, environ=environ, key=settings.where()).ping(repo)
    base = resolve_base(settings.base_image, settings, environ=environ) if settings.base_image else None
    with tempfile.TemporaryDirectory(prefix="llmops-oci-", dir=workdir) as td:
        image = build_image(folder, Path(td), busybox=settings.busybox, base=base, tag=tag)
        return push_image(image, settings, tag, environ=environ)


def check_registry(settings: OCISettings, *, environ: Optional[Mapping[str, str]] = None) -> None:
    """Preflight: the registry answers and accepts the credentials for push (raises OCIError)."""
    registry, repo = parse_repository(settings.repository)
    RegistryClient(registry, settings, environ=environ, key=settings.where()).ping(repo)


# ----------------------------------------------------------------------------------------- pull
def pull_image(settings: OCISettings, reference: str, layout: Union[str, Path], *,
               environ: Optional[Mapping[str, str]] = None) -> Image:
    """Fetch settings.repository:`reference` (a tag or sha256 digest) into an OCI image layout,
    checking every digest."""
    registry, repo = parse_repository(settings.repository)
    client = RegistryClient(registry, settings, environ=environ, key=settings.where())
    client.ping(repo, "pull")
    body, mt, digest = client.get_manifest(repo, reference)
    if mt not in (MEDIA_MANIFEST, DOCKER_MANIFEST):
        raise OCIError(f"{registry}/{repo}:{reference}: manifest type {mt!r}; expected an image manifest")
    doc = json.loads(body)
    layout = Path(layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    got: list[Blob] = []
    for d in [doc["config"]] + list(doc.get("layers", [])):
        if not DIGEST_RE.match(str(d.get("digest", ""))):
            raise OCIError(f"{registry}/{repo}@{digest}: a descriptor with digest {d.get('digest')!r}")
        p = blobs / d["digest"].split(":", 1)[1]
        if not (p.is_file() and sha256_file(p) == d["digest"]):
            client.get_blob(repo, d["digest"], p)
        got.append(Blob(d["digest"], int(d["size"]), d["mediaType"], p))
    (blobs / digest.split(":", 1)[1]).write_bytes(body)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [
        {"mediaType": mt, "digest": digest, "size": len(body)}]}, indent=1))
    return Image(layout, body, digest, got[0], got[1:])


def _layout_layers(layout: Path) -> list[tuple[Path, str]]:
    index = json.loads((layout / "index.json").read_text())
    mdesc = index["manifests"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / mdesc["digest"].split(":", 1)[1]).read_bytes())
    return [(layout / "blobs" / "sha256" / d["digest"].split(":", 1)[1], d["mediaType"])
            for d in manifest["layers"]]


def unpack(layout: Union[str, Path], dest: Union[str, Path], *, subdir: Optional[str] = None) -> Path:
    """Apply the image's layers in order into `dest` (tarfile's 'data' filter: nothing outside
    `dest`, no devices); with `subdir` (e.g. 'models'), only what lies under it, with the prefix
    removed. Whiteout files (.wh.NAME) remove NAME."""
    layout, dest = Path(layout), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    prefix = subdir.strip("/") + "/" if subdir else ""
    for path, mt in _layout_layers(layout):
        mode = "r:gz" if mt.endswith("gzip") else "r:"
        with tarfile.open(path, mode) as tar:
            members = []
            for m in tar.getmembers():
                name = m.name
                while name.startswith("./"):
                    name = name[2:]
                name = "" if name == "." else name
                if prefix:
                    if not name.startswith(prefix):
                        continue
                    name = name[len(prefix):]
                if not name:
                    continue
                base = PurePosixPath(name)
                if base.name.startswith(".wh."):
                    if base.name != ".wh..wh..opq":
                        victim = dest / base.parent / base.name[len(".wh."):]
                        if victim.is_dir() and not victim.is_symlink():
                            shutil.rmtree(victim)
                        else:
                            victim.unlink(missing_ok=True)
                    continue
                kw: dict = {"name": name}
                if m.islnk() and prefix:
                    if not m.linkname.startswith(prefix):
                        continue
                    kw["linkname"] = m.linkname[len(prefix):]
                members.append(m.replace(**kw, deep=False))
            tar.extractall(dest, members=members, filter="data")
    return dest


# ---------------------------------------------------------------------------------------- store
def image_uri(settings: OCISettings, tag: str) -> str:
    registry, repo = parse_repository(settings.repository)
    return f"oci://{registry}/{repo}:{check_tag(tag)}"


class OCIStore:
    """`Store` for ``storage=oci``: ``oci://REGISTRY/REPO:TAG`` URIs, served pinned by digest."""

    def __init__(self, settings: OCISettings, *, environ: Optional[Mapping[str, str]] = None):
        self.settings = settings
        self.environ = environ
        self.last_push: Optional[PushResult] = None

    @classmethod
    def from_config(cls, storage: Any) -> "OCIStore":
        return cls(OCISettings.from_config(storage))

    def _split(self, uri: str) -> tuple[OCISettings, str]:
        registry, repo, ref = parse_reference(uri, key="uri")
        return OCISettings(**{**self.settings.__dict__, "repository": f"{registry}/{repo}"}), ref

    def put_dir(self, local: Union[str, Path], uri: str) -> dict:
        s, tag = self._split(uri)
        res = push_dir(local, s, tag, environ=self.environ)
        self.last_push = res
        return {"version": 1, "files": res.files, "uri": res.uri,
                "oci": {"repository": res.repository, "tag": tag, "digest": res.digest, "uri": res.uri}}

    def get_dir(self, uri: str, local: Union[str, Path]) -> Path:
        s, ref = self._split(uri)
        with tempfile.TemporaryDirectory(prefix="llmops-oci-") as td:
            pull_image(s, ref, td, environ=self.environ)
            return unpack(td, local, subdir=MODELS_DIR)

    def verify(self, uri: str) -> dict:
        """The manifest (files, and `uri` pinned by digest) of the image at `uri`, after checking
        that its manifest and every blob it names are in the registry. Nothing large is
        downloaded: the registry checked each blob's digest when it was pushed."""
        s, ref = self._split(uri)
        registry, repo = parse_repository(s.repository)
        client = RegistryClient(registry, s, environ=self.environ, key=s.where())
        client.ping(repo, "pull")
        body, mt, digest = client.get_manifest(repo, ref)
        if mt not in (MEDIA_MANIFEST, DOCKER_MANIFEST):
            raise OCIError(f"{uri}: manifest type {mt!r}; expected an image manifest")
        doc = json.loads(body)
        for d in [doc["config"]] + list(doc.get("layers", [])):
            if not client.blob_exists(repo, d["digest"]):
                raise OCIError(f"{uri}: blob {d['digest']} named by the manifest is missing from the "
                               "registry; push the model again", status=404, code="BLOB_UNKNOWN")
        with tempfile.TemporaryDirectory(prefix="llmops-oci-") as td:
            cpath = Path(td) / "config.json"
            client.get_blob(repo, doc["config"]["digest"], cpath)
            labels = (json.loads(cpath.read_text()).get("config") or {}).get("Labels") or {}
        if LABEL_FILES not in labels:
            raise OCIError(f"{uri}: not a model image built by llmops (no {LABEL_FILES} label in its config)")
        pinned = f"oci://{s.repository}@{digest}"
        return {"version": 1, "files": json.loads(labels[LABEL_FILES]), "uri": pinned,
                "oci": {"repository": s.repository, "digest": digest, "uri": pinned}}

    def exists(self, uri: str) -> bool:
        s, ref = self._split(uri)
        registry, repo = parse_repository(s.repository)
        return RegistryClient(registry, s, environ=self.environ, key=s.where()).manifest_digest(repo, ref) is not None

    def serving_uri(self, uri: str) -> str:
        """oci://REGISTRY/REPO@sha256:... for `uri` (a tag is resolved to the digest it names)."""
        s, ref = self._split(uri)
        if DIGEST_RE.match(ref):
            return f"oci://{s.repository}@{ref}"
        lp = self.last_push
        if lp is not None and lp.repository == s.repository and lp.tag == ref:
            return lp.uri
        registry, repo = parse_repository(s.repository)
        d = RegistryClient(registry, s, environ=self.environ, key=s.where()).manifest_digest(repo, ref)
        if d is None:
            raise OCIError(f"{uri}: no such image in the registry (storage.repository)", status=404)
        return f"oci://{s.repository}@{d}"
