"""Local-disk store: file:// URIs, copy with verification, manifest written last."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from llmops.core.errors import LLMOpsError
from llmops.storage.manifest import MANIFEST, build_manifest, sha256_file, verify_dir


def local_prefix(root: str, run_id: str) -> str:
    base = Path(str(root)).expanduser().resolve() / run_id
    return base.as_uri() + "/"


def to_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    return Path(uri)


def to_pvc_uri(uri: str, mount_path: str, pvc_name: str) -> str:
    p = to_path(uri)
    rel = p.relative_to(Path(str(mount_path)).expanduser().resolve())
    return f"pvc://{pvc_name}/{rel.as_posix()}/"


class LocalStore:
    """A folder on this machine (or a mounted PVC)."""

    def put_dir(self, local: Path, uri: str) -> dict:
        src, dst = Path(local), to_path(uri)
        if not src.is_dir():
            raise LLMOpsError(f"{src}: not a folder; nothing to copy to {uri}")
        if src.resolve() != dst.resolve() and dst.resolve() in src.resolve().parents:
            raise LLMOpsError(f"{src}: lies inside the destination {uri}; export to another folder")
        manifest = build_manifest(src)
        if not manifest["files"]:
            raise LLMOpsError(f"{src}: no files to copy to {uri} (an empty folder is not a model)")
        try:
            dst.mkdir(parents=True, exist_ok=True)
            old = dst / MANIFEST
            if old.exists():
                old.unlink()  # incomplete until the new manifest lands
            for rel, meta in manifest["files"].items():
                target = dst / rel
                if target.is_file() and target.stat().st_size == meta["size"] and \
                        sha256_file(target) == meta["sha256"]:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.part")
                try:
                    shutil.copyfile(src / rel, tmp)
                    os.replace(tmp, target)
                except OSError as e:
                    tmp.unlink(missing_ok=True)
                    raise LLMOpsError(f"copying {src / rel} to {target}: {e.strerror or e}"
                                      + (" (no space left on the device)" if e.errno == errno.ENOSPC else "")) \
                        from None
            # files of an earlier model in this folder would be served with this one: remove them
            for p in sorted(dst.rglob("*"), reverse=True):
                rel = p.relative_to(dst).as_posix()
                if p.is_file() and rel not in manifest["files"] and p.name != MANIFEST:
                    p.unlink()
                elif p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
            verify_dir(dst, manifest, str(dst))
            (dst / f".{MANIFEST}.part").write_text(json.dumps(manifest, indent=1))
            os.replace(dst / f".{MANIFEST}.part", dst / MANIFEST)
        except OSError as e:
            raise LLMOpsError(f"{dst}: cannot write the model there: {e.strerror or e}") from None
        return manifest

    def get_dir(self, uri: str, local: Path) -> Path:
        src = to_path(uri)
        manifest = self.read_manifest(uri)
        verify_dir(src, manifest, uri)
        return src  # already local: no copy needed

    def verify(self, uri: str) -> dict:
        """The manifest of `uri`, after checking every file it lists against its size and sha256."""
        manifest = self.read_manifest(uri)
        verify_dir(to_path(uri), manifest, uri)
        return manifest

    def exists(self, uri: str) -> bool:
        return (to_path(uri) / MANIFEST).is_file()

    def read_manifest(self, uri: str) -> dict:
        p = to_path(uri) / MANIFEST
        if not p.is_file():
            raise LLMOpsError(f"{uri}: no {MANIFEST}; the model there is incomplete or absent")
        return json.loads(p.read_text())
