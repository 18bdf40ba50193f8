"""The OCI distribution API over HTTP(S) with the standard library (``urllib``): one
`RegistryClient` per registry host, with retries, the auth handshake, blobs and manifests.

``HEAD /v2/<repo>/blobs/<digest>`` tells whether the registry has a blob; a missing one is sent
with ``POST /v2/<repo>/blobs/uploads/`` then ``PUT <location>?digest=...`` in one request;
manifests go with ``PUT /v2/<repo>/manifests/<tag>``. Auth: Basic, or the Bearer token flow
(``WWW-Authenticate: Bearer realm=...,service=...,scope=...``), with credentials from
``LLMOPS_OCI_USERNAME``/``LLMOPS_OCI_PASSWORD`` or a docker-style ``auth.json`` named by
``REGISTRY_AUTH_FILE``. Passwords and tokens go only into request headers: never into a message,
a log line or a file.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Optional, Union

from llmops.core import secrets
from llmops.storage.oci_settings import (CHUNK, DIGEST_RE, MANIFEST_ACCEPT, OCIError, OCISettings, is_loopback,
                                         sha256_file)

log = logging.getLogger("llmops.storage.oci")

ENV_USERNAME = "LLMOPS_OCI_USERNAME"
ENV_PASSWORD = "LLMOPS_OCI_PASSWORD"
ENV_AUTH_FILE = "REGISTRY_AUTH_FILE"
CRED_HINT = f"{ENV_USERNAME}/{ENV_PASSWORD} or {ENV_AUTH_FILE}"


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
