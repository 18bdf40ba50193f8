"""One object per storage kind: everything that differs between local, pvc, s3 and oci lives in
its class here, so that a kind is added in one place (a class and a line in `KINDS`).

    store()                       the Store (put_dir, get_dir, verify, exists, serving_uri)
    run_prefix(run_id)            where a run's models go
    model_uris(run_id)            {"hf", "caikit", "adapter"}: one URI per layout
    same_place(recorded, planned) whether a URI a stage recorded is this run's layout here
    serving_uri(uri)              what KServe's storageUri gets (pure: asks no server)
    ray_storage(run_dir, run_id)  (storage_path, pyarrow filesystem or None) for Ray Train
    worker_env()                  environment a remote worker needs to reach the store
    preflight(run_dir, run_id)    reachable, allowed, writable: before any cluster work

Heavy clients (boto3, pyarrow) are imported inside the methods that need them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("llmops.storage")


class StorageKind:
    """Defaults shared by the kinds; `storage` is the config's `storage` section."""

    name = ""
    schemes: tuple[str, ...] = ()  # URI schemes whose URIs this kind's store reads

    def __init__(self, storage: Any):
        self.storage = storage

    def store(self):
        from llmops.storage.local import LocalStore

        return LocalStore()

    def run_prefix(self, run_id: str) -> str:
        raise NotImplementedError

    def model_uris(self, run_id: str) -> dict:
        base = self.run_prefix(run_id)
        return {"hf": base + "hf/", "caikit": base + "caikit/", "adapter": base + "adapter/"}

    def same_place(self, recorded: str, planned: str) -> bool:
        return recorded == planned

    def serving_uri(self, uri: str) -> str:
        return uri

    def ray_storage(self, run_dir, run_id: str) -> tuple:
        return str(Path(run_dir) / "checkpoints"), None

    def worker_env(self) -> dict:
        return {}

    def preflight(self, run_dir, run_id: str) -> None:
        from llmops.storage.local import to_path

        writable_folder(to_path(self.run_prefix(run_id)), self.folder_key)

    folder_key = ""


def writable_folder(folder: Path, key: str) -> None:
    """The nearest existing parent of `folder` is a folder this process may write in."""
    from llmops.core.errors import LLMOpsError

    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise LLMOpsError(f"{key}: {folder} cannot be written ({p} is not a writable folder); "
                          "expected a folder this user may write in")


class LocalKind(StorageKind):
    """A folder on this machine: <root>/<run_id>/{hf,caikit,adapter}/."""

    name, schemes, folder_key = "local", ("file://",), "storage.root"

    def run_prefix(self, run_id: str) -> str:
        from llmops.storage.local import local_prefix

        return local_prefix(self.storage.root, run_id)


class PvcKind(StorageKind):
    """A PersistentVolumeClaim mounted at mount_path here and on every worker; KServe reads pvc://."""

    name, folder_key = "pvc", "storage.mount_path"  # its URIs are file:// paths under the mount

    def run_prefix(self, run_id: str) -> str:
        from llmops.storage.local import local_prefix

        return local_prefix(self.storage.mount_path, run_id)

    def serving_uri(self, uri: str) -> str:
        from llmops.storage.local import to_pvc_uri

        return to_pvc_uri(uri, self.storage.mount_path, self.storage.pvc_name)

    def ray_storage(self, run_dir, run_id: str) -> tuple:
        from llmops.storage.local import to_path

        return str(to_path(self.run_prefix(run_id)) / "checkpoints"), None


class S3Kind(StorageKind):
    """s3://<bucket>/<prefix>/<run_id>/...; Ray Train checkpoints through pyarrow's S3 filesystem."""

    name, schemes = "s3", ("s3://",)

    def store(self):
        from llmops.storage.s3 import S3Store

        return S3Store.from_config(self.storage)

    def _key(self, run_id: str) -> str:
        prefix = str(self.storage.prefix or "").strip("/")
        return f"{prefix}/{run_id}" if prefix else run_id

    def run_prefix(self, run_id: str) -> str:
        return f"s3://{self.storage.bucket}/{self._key(run_id)}/"

    def checkpoint_path(self, run_id: str) -> str:
        return f"{self.storage.bucket}/{self._key(run_id)}/checkpoints"

    def ray_storage(self, run_dir, run_id: str) -> tuple:
        from llmops.storage.s3 import S3Settings, pyarrow_filesystem

        return self.checkpoint_path(run_id), pyarrow_filesystem(S3Settings.from_config(self.storage))

    def worker_env(self) -> dict:
        """The credentials this process uses (environment or ``storage.profile``) as
        AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), and AWS_DEFAULT_REGION
        when set; the values are remembered by ``llmops.core.secrets`` so no log line carries them."""
        from llmops.core import secrets
        from llmops.storage.s3 import S3Error, S3Settings, S3Store

        s = S3Settings.from_config(self.storage)
        session = S3Store(s).session()
        creds = session.get_credentials()
        if creds is None:
            raise S3Error(f"s3://{s.bucket}/: no S3 credentials to hand to the workers; set AWS_ACCESS_KEY_ID "
                          "and AWS_SECRET_ACCESS_KEY (or storage.profile)", code="NoCredentials")
        f = creds.get_frozen_credentials()
        env = {"AWS_ACCESS_KEY_ID": f.access_key, "AWS_SECRET_ACCESS_KEY": f.secret_key}
        if f.token:
            env["AWS_SESSION_TOKEN"] = f.token
        for v in env.values():
            secrets.remember(v)
        region = s.region or session.region_name
        if region:
            env["AWS_DEFAULT_REGION"] = region
        return env

    def preflight(self, run_dir, run_id: str) -> None:
        from llmops.storage.s3_preflight import preflight

        preflight(self.storage, self.run_prefix(run_id), self.checkpoint_path(run_id))


class OCIKind(StorageKind):
    """A modelcar image per layout in an OCI registry: REGISTRY/REPO:<run_id>[-caikit|-adapter],
    served pinned by digest (oci://REGISTRY/REPO@sha256:...). Checkpoints stay in the run folder."""

    name, schemes = "oci", ("oci://",)
    TAG_SUFFIX = {"hf": "", "caikit": "-caikit", "adapter": "-adapter"}

    def _settings(self):
        from llmops.storage.oci_settings import OCISettings

        return OCISettings.from_config(self.storage)

    def store(self):
        from llmops.storage.oci import OCIStore

        return OCIStore(self._settings())

    def run_prefix(self, run_id: str) -> str:
        from llmops.storage.oci_settings import image_uri

        return image_uri(self._settings(), run_id)

    def model_uris(self, run_id: str) -> dict:
        from llmops.storage.oci_settings import image_uri

        s = self._settings()
        return {layout: image_uri(s, run_id + suffix) for layout, suffix in self.TAG_SUFFIX.items()}

    def same_place(self, recorded: str, planned: str) -> bool:
        """The planned tag, or any digest in the same repository (digests name content)."""
        from llmops.storage.oci_settings import DIGEST_RE, OCIError, parse_reference

        try:
            r_reg, r_repo, r_ref = parse_reference(recorded, key="uri")
            p_reg, p_repo, p_ref = parse_reference(planned, key="uri")
        except OCIError:
            return False
        return (r_reg, r_repo) == (p_reg, p_repo) and (r_ref == p_ref or bool(DIGEST_RE.match(r_ref)))

    def worker_env(self) -> dict:
        """The registry credentials this process has (LLMOPS_OCI_USERNAME/LLMOPS_OCI_PASSWORD,
        REGISTRY_AUTH_FILE), for the rank-0 worker that pushes the image."""
        from llmops.core import secrets
        from llmops.storage.oci_registry import ENV_AUTH_FILE, ENV_PASSWORD, ENV_USERNAME

        env = {k: os.environ[k] for k in (ENV_USERNAME, ENV_PASSWORD, ENV_AUTH_FILE) if os.environ.get(k)}
        if env.get(ENV_PASSWORD):
            secrets.remember(env[ENV_PASSWORD])
        return env

    def preflight(self, run_dir, run_id: str) -> None:
        from llmops.storage.oci import check_registry
        from llmops.storage.oci_settings import OCIError, check_tag

        s = self._settings()
        for suffix in self.TAG_SUFFIX.values():
            check_tag(run_id + suffix)
        check_registry(s)  # reachable, credentials accepted for push
        if not s.base_image and not Path(s.busybox).is_file():
            raise OCIError(f"storage.busybox={s.busybox!r}: no such file; install Debian's busybox-static "
                           "(apt-get install busybox-static) or set storage.base_image to an image with a shell")
        writable_folder(Path(run_dir) / "checkpoints", "the run directory (Ray Train checkpoints)")


KINDS: dict[str, type[StorageKind]] = {k.name: k for k in (LocalKind, PvcKind, S3Kind, OCIKind)}


def kind_of(storage: Any) -> StorageKind:
    """The kind object for a `storage` config section."""
    name = str(getattr(storage.kind, "value", storage.kind))
    try:
        return KINDS[name](storage)
    except KeyError:
        raise ValueError(f"storage.kind: unknown kind {name!r}; expected one of {', '.join(KINDS)}") from None


def kind_for_uri(storage: Any, uri: str) -> StorageKind:
    """The kind whose store reads `uri` (a plain path: local), configured from `storage`."""
    for cls in KINDS.values():
        if any(str(uri).startswith(s) for s in cls.schemes):
            return cls(storage)
    return LocalKind(storage)
