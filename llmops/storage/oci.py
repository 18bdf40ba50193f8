"""OCI model images ("modelcars"): an exported model folder as an image in a registry, no Docker.

KServe serves ``storageUri: oci://REGISTRY/REPO@sha256:...`` by running the image as a sidecar
with ``sh -c 'ln -sf /proc/$$/root/models /mnt/models && sleep infinity'``: the image needs a
shell and the model under ``/models``: a busybox layer, or the layers of ``storage.base_image``
(mounted from its repository when it is on the same registry, otherwise copied blob by blob),
then the model layer. Push sends only the blobs the registry lacks, the manifest last.

`OCIStore`, `push_dir` and `pull_image` are the facade; the work lives by concern in
  * ``oci_settings``: OCISettings, media types, references (REGISTRY/REPO, tags, digests), OCIError;
  * ``oci_registry``: RegistryClient (HTTP, retries, Basic and Bearer auth, credentials, errors);
  * ``oci_image``: deterministic layers, config and manifest in an OCI image layout; unpack.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from llmops.storage.oci_image import (LABEL_FILES, MODELS_DIR, BaseImage, Blob, Image, build_image, host_architecture,
                                      unpack, write_index)
from llmops.storage.oci_registry import RegistryClient
from llmops.storage.oci_settings import (DIGEST_RE, DOCKER_LIST, DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_MANIFEST,
                                         TO_OCI_LAYER, OCIError, OCISettings, check_tag, parse_reference,
                                         parse_repository, sha256_file)

log = logging.getLogger("llmops.storage.oci")


# ----------------------------------------------------------------------------------- base image
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
    write_index(layout, {"mediaType": mt, "digest": digest, "size": len(body)})
    return Image(layout, body, digest, got[0], got[1:])


# ---------------------------------------------------------------------------------------- store
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
