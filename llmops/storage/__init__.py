"""Stores: where models and checkpoints go. One `Store` per storage kind.

    class Store(Protocol):
        def put_dir(self, local: Path, uri: str) -> dict: ...  # manifest; verified, resumable
        def get_dir(self, uri: str, local: Path) -> Path: ...
        def verify(self, uri: str) -> dict: ...               # manifest, every file checked in place
        def exists(self, uri: str) -> bool: ...

A model prefix is complete only when its manifest (`llmops-manifest.json`: every file's
relative path, size and sha256) is present: it is written last.
"""

from __future__ import annotations

from typing import Protocol

from omegaconf import DictConfig

from llmops.storage.manifest import MANIFEST  # noqa: E402  (re-exported: every store writes it)


class Store(Protocol):
    def put_dir(self, local, uri: str) -> dict: ...

    def get_dir(self, uri: str, local): ...

    def verify(self, uri: str) -> dict: ...

    def exists(self, uri: str) -> bool: ...


def get_store(cfg: DictConfig) -> Store:
    kind = cfg.storage.kind.value
    if kind == "local":
        from llmops.storage.local import LocalStore

        return LocalStore()
    if kind == "pvc":
        from llmops.storage.local import LocalStore

        return LocalStore()
    if kind == "s3":
        from llmops.storage.s3 import S3Store

        return S3Store.from_config(cfg.storage)
    raise ValueError(f"storage.kind: unknown kind {kind!r}")


def run_prefix(cfg: DictConfig, run_id: str) -> str:
    """The run's unique prefix, ending in '/' (KServe downloads by prefix)."""
    from llmops.storage import local

    kind = cfg.storage.kind.value
    if kind == "local":
        return local.local_prefix(cfg.storage.root, run_id)
    if kind == "pvc":
        return local.local_prefix(cfg.storage.mount_path, run_id)
    if kind == "s3":
        prefix = str(cfg.storage.prefix or "").strip("/")
        key = f"{prefix}/{run_id}/" if prefix else f"{run_id}/"
        return f"s3://{cfg.storage.bucket}/{key}"
    raise ValueError(f"storage.kind: unknown kind {kind!r}")


def model_uris(cfg: DictConfig, run_id: str) -> dict:
    """URIs of a run's exports: `hf` (plain HF folder) and `caikit` (config.yml + artifacts/)."""
    base = run_prefix(cfg, run_id)
    return {"hf": base + "hf/", "caikit": base + "caikit/", "adapter": base + "adapter/"}


def serving_uri(cfg: DictConfig, uri: str) -> str:
    """The URI KServe reads for a stored URI (pvc:// for a mounted PVC)."""
    if cfg.storage.kind.value == "pvc":
        from llmops.storage.local import to_pvc_uri

        return to_pvc_uri(uri, cfg.storage.mount_path, cfg.storage.pvc_name)
    return uri


def ray_storage(cfg: DictConfig, run_dir, run_id: str) -> tuple:
    """(storage_path, storage_filesystem) for Ray Train's RunConfig checkpoints.

    local: ``<run_dir>/checkpoints`` on this machine; pvc: ``<mount_path>/<run_id>/checkpoints``
    (the claim must be mounted on every worker); s3: ``<bucket>/<prefix>/<run_id>/checkpoints``
    with a ``pyarrow.fs.S3FileSystem`` pointed at ``storage.endpoint_url``, its credentials taken
    from the environment (or ``storage.profile``) when this is called.
    """
    from pathlib import Path

    kind = cfg.storage.kind.value
    if kind == "local":
        return str(Path(run_dir) / "checkpoints"), None
    if kind == "pvc":
        from llmops.storage.local import to_path

        return str(to_path(run_prefix(cfg, run_id)) / "checkpoints"), None
    if kind == "s3":
        from llmops.storage.s3 import S3Settings, pyarrow_filesystem

        prefix = str(cfg.storage.prefix or "").strip("/")
        parts = [str(cfg.storage.bucket)] + ([prefix] if prefix else []) + [run_id, "checkpoints"]
        return "/".join(parts), pyarrow_filesystem(S3Settings.from_config(cfg.storage))
    raise ValueError(f"storage.kind: unknown kind {kind!r}")


def store_for_uri(cfg: DictConfig, uri: str) -> Store:
    """The store that can read `uri` (file:// or a plain path: local; s3://: S3)."""
    if uri.startswith("s3://"):
        from llmops.storage.s3 import S3Store

        return S3Store.from_config(cfg.storage)
    from llmops.storage.local import LocalStore

    return LocalStore()


def worker_env(cfg: DictConfig) -> dict:
    """Environment variables a remote worker needs to reach the store (for a job's runtime env).

    s3: the credentials this process uses (environment or ``storage.profile``), as
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``), and
    ``AWS_DEFAULT_REGION`` when set. The values are remembered by ``llmops.core.secrets`` so no
    log line carries them; whoever shows or saves the runtime env must still mask it. local/pvc: {}.
    """
    if cfg.storage.kind.value != "s3":
        return {}
    from llmops.core import secrets
    from llmops.storage.s3 import S3Error, S3Settings, S3Store

    s = S3Settings.from_config(cfg.storage)
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
