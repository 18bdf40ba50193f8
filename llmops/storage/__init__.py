"""Stores: where models and checkpoints go. One `Store` per storage kind.

    class Store(Protocol):
        def put_dir(self, local: Path, uri: str) -> dict: ...  # manifest; verified, resumable
        def get_dir(self, uri: str, local: Path) -> Path: ...
        def verify(self, uri: str) -> dict: ...               # manifest, every file checked in place
        def exists(self, uri: str) -> bool: ...
        def serving_uri(self, uri: str) -> str: ...           # what KServe's storageUri gets

A model prefix is complete only when its manifest (`llmops-manifest.json`: every file's
relative path, size and sha256) is present: it is written last. A store's manifest may carry
`uri`: the reference that pins what was stored (an OCI image's digest).

What differs between kinds (local, pvc, s3, oci) lives in one class per kind in
`llmops.storage.kinds`; the functions here pick the kind from ``cfg.storage.kind``.
"""

from __future__ import annotations

from typing import Protocol

from omegaconf import DictConfig

from llmops.storage.kinds import kind_for_uri, kind_of
from llmops.storage.manifest import MANIFEST  # noqa: F401  (re-exported: every store writes it)


class Store(Protocol):
    def put_dir(self, local, uri: str) -> dict: ...

    def get_dir(self, uri: str, local): ...

    def verify(self, uri: str) -> dict: ...

    def exists(self, uri: str) -> bool: ...

    def serving_uri(self, uri: str) -> str: ...


def get_store(cfg: DictConfig) -> Store:
    return kind_of(cfg.storage).store()


def run_prefix(cfg: DictConfig, run_id: str) -> str:
    """The run's unique prefix, ending in '/' (KServe downloads by prefix); for oci the image
    reference REGISTRY/REPO:<run_id>."""
    return kind_of(cfg.storage).run_prefix(run_id)


def model_uris(cfg: DictConfig, run_id: str) -> dict:
    """URIs of a run's exports: `hf` (plain HF folder), `caikit` (config.yml + artifacts/), `adapter`."""
    return kind_of(cfg.storage).model_uris(run_id)


def same_place(cfg: DictConfig, recorded: str, planned: str) -> bool:
    """Whether `recorded` (a URI a stage stored) is the layout planned at `planned` in this storage
    (for oci: that tag, or a digest in the same repository)."""
    return kind_of(cfg.storage).same_place(str(recorded), str(planned))


def pinned_uri(manifest: dict, uri: str) -> str:
    """The reference that pins what a store wrote or verified (an OCI digest), else `uri`."""
    return str(manifest.get("uri") or uri)


def serving_uri(cfg: DictConfig, uri: str) -> str:
    """The URI KServe reads for a stored URI (pvc:// for a mounted PVC). Asks no server."""
    return kind_of(cfg.storage).serving_uri(uri)


def ray_storage(cfg: DictConfig, run_dir, run_id: str) -> tuple:
    """(storage_path, storage_filesystem) for Ray Train's RunConfig checkpoints.

    local and oci: ``<run_dir>/checkpoints`` on this machine; pvc: ``<mount_path>/<run_id>/checkpoints``
    (the claim must be mounted on every worker); s3: ``<bucket>/<prefix>/<run_id>/checkpoints``
    with a ``pyarrow.fs.S3FileSystem`` pointed at ``storage.endpoint_url``, its credentials taken
    from the environment (or ``storage.profile``) when this is called.
    """
    return kind_of(cfg.storage).ray_storage(run_dir, run_id)


def store_for_uri(cfg: DictConfig, uri: str) -> Store:
    """The store that can read `uri` (file:// or a plain path: local; s3://: S3; oci://: OCI)."""
    return kind_for_uri(cfg.storage, uri).store()


def worker_env(cfg: DictConfig) -> dict:
    """Environment variables a remote worker needs to reach the store (for a job's runtime env).

    s3: the credentials this process uses (environment or ``storage.profile``), as
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``), and
    ``AWS_DEFAULT_REGION`` when set; oci: ``LLMOPS_OCI_USERNAME``/``LLMOPS_OCI_PASSWORD`` or
    ``REGISTRY_AUTH_FILE`` when set. The values are remembered by ``llmops.core.secrets`` so no
    log line carries them; whoever shows or saves the runtime env must still mask it. local/pvc: {}.
    """
    return kind_of(cfg.storage).worker_env()


def preflight(cfg: DictConfig, run_dir=None, run_id: str = "preflight") -> None:
    """Before any cluster work: the configured storage is reachable, the credentials are valid, the
    bucket (or registry repository, or folder) is there or created (``storage.create_bucket``),
    a probe object can be written and removed, and Ray Train's checkpoint storage is usable.
    Raises LLMOpsError naming the key to fix (storage.endpoint_url, storage.bucket, the
    credential variables, ...). Writes nothing that stays."""
    kind_of(cfg.storage).preflight(run_dir or ".", run_id)
